"""Faults and bad input end in a correct result or a clean stop: one `error:` line, exit 2 (1 for a
non-finite loss), and no existing file changed, lost or left half-written. Real files, real child
processes and real signals, a real loopback server, a real full disk (a small tmpfs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import detect
import evaluate
import inspect_checkpoint
import train
from data_factory import __main__ as prepare_cli
from data_factory.download import DownloadFailed, RetryPolicy, fetch
from data_factory.registry import load_synth
from data_factory.telemanom import ARRAY_FILES, INDEX_COLUMNS, INDEX_FILE, write_cache
from runtime.atomic import LOCK_FILE, atomic_path, folder_lock
from runtime.errors import UserInputError
from tests.local_http import LocalServer, refused_url
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_error_line(err: str) -> str:
    """The stderr of a clean stop: one line starting `error:`, the last (progress lines may come before it)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny SYNTH model, trained once for the tests below."""
    out = tmp_path_factory.mktemp("synth")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    return out


def custom_folder(folder: Path, train_rows: int = 2000, test_rows: int = 600, spike: float | None = None) -> Path:
    """A CUSTOM data folder of two sine channels with labels; `spike`: one TEST value set to it."""
    folder.mkdir(parents=True, exist_ok=True)
    time_steps = np.arange(train_rows + test_rows)
    values = np.stack([np.sin(time_steps / 15), np.cos(time_steps / 40)], axis=1).astype(np.float32)
    test = values[train_rows:].copy()
    labels = np.zeros(test_rows, dtype=np.uint8)
    labels[300:320] = 1
    test[300:320, 0] += 3
    if spike is not None:
        test[450, 1] = spike
    np.save(folder / "train_data.npy", values[:train_rows])
    np.save(folder / "test_data.npy", test)
    np.save(folder / "test_labels.npy", labels)
    return folder


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """A CUSTOM folder whose TEST holds a finite float32 value of 1e38, and a tiny model trained on it."""
    root = tmp_path_factory.mktemp("custom")
    data = custom_folder(root / "data", spike=1e38)
    out = root / "out"
    args = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *TINY_TRAIN_FLAGS]
    assert train.main(args) == 0
    return {"data": data, "out": out, "checkpoint": out / "CUSTOM_checkpoint.pth"}


# ---- 1. no run lost at the end ----------------------------------------------------------------------------

# A long TRAIN, trained on a few windows (stride 40000) but scored whole at the end: the final TRAIN
# scoring takes seconds, so a signal sent when the epoch line appears lands inside it.
LONG_RUN = ["--d-model", "8", "--n-heads", "1", "--e-layers", "1", "--d-ff", "8", "--win-size", "20",
            "--epochs", "1", "--train-stride", "40000", "--val-ratio", "0", "--batch-size", "256",
            "--no-progress", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def long_train(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    np.save(folder / "train_data.npy", rng.normal(size=(2_000_000, 1)).astype(np.float32))
    np.save(folder / "test_data.npy", rng.normal(size=(200, 1)).astype(np.float32))
    return folder


def start_long_run(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "train.py", "--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out)]
    return subprocess.Popen([*command, *LONG_RUN, *extra], cwd=ROOT, env=CHILD_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def signal_after_last_epoch(process: subprocess.Popen, signals: int) -> str:
    """Wait for the last epoch's line, then send SIGTERM `signals` times (0.3 s apart); return the whole log."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 1/1"):
            break
    for number in range(signals):
        time.sleep(0.3 if number else 0.05)
        process.send_signal(signal.SIGTERM)
    seen.append(process.stdout.read())
    process.wait(timeout=300)
    return "".join(seen)


@pytest.mark.slow
def test_a_sigterm_during_the_final_train_scoring_finishes_the_scoring_and_saves_the_checkpoint(long_train, tmp_path):
    out = tmp_path / "run"
    process = start_long_run(long_train, out)
    log = signal_after_last_epoch(process, signals=1)
    assert process.returncode == 0, log
    assert "SIGTERM arrived after the last epoch: finished the final TRAIN scoring first and saved" in log, log
    assert (out / "CUSTOM_checkpoint.pth").is_file() and not (out / LOCK_FILE).exists()
    assert inspect_checkpoint.main([str(out / "CUSTOM_checkpoint.pth")]) == 0


@pytest.mark.slow
def test_a_second_sigterm_in_the_final_scoring_leaves_a_state_that_resume_finishes(long_train, tmp_path):
    out = tmp_path / "run"
    process = start_long_run(long_train, out)
    log = signal_after_last_epoch(process, signals=2)
    assert process.returncode == 128 + signal.SIGTERM, log
    assert "stopped by SIGTERM after the last epoch, before the checkpoint was written" in log, log
    assert "resume with: python train.py --resume" in log
    assert not (out / "CUSTOM_checkpoint.pth").exists() and not (out / LOCK_FILE).exists()
    assert not list(out.glob(".*.tmp"))
    assert torch.load(out / "CUSTOM_last.pth", weights_only=True)["finished"] is True

    resumed = subprocess.run(
        [sys.executable, "train.py", "--resume", "--dataset", "CUSTOM", "--data-dir", str(long_train),
         "--output-dir", str(out), "--no-progress"],
        cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "the run finished its epochs; keeping epoch 1 and scoring TRAIN again" in resumed.stdout
    assert (out / "CUSTOM_checkpoint.pth").is_file()


def test_resume_of_a_finished_run_whose_checkpoint_is_missing_writes_the_same_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    best = out / "SYNTH_checkpoint.pth"
    original = torch.load(best, weights_only=True)
    best.unlink()  # as if the process had been killed during the final scoring
    assert train.main(["--resume", "--dataset", "SYNTH", "--output-dir", str(out), "--no-progress"]) == 0
    again = torch.load(best, weights_only=True)
    for name, tensor in original["model_state"].items():
        assert torch.equal(tensor, again["model_state"][name]), name
    assert again["train_scores"] == original["train_scores"]
    assert train.main(["--resume", "--dataset", "SYNTH", "--output-dir", str(out)]) == 2
    assert "already finished" in one_error_line(capsys.readouterr().err)


# ---- 2. NaN scores are never silently normal ---------------------------------------------------------------


def test_detect_flags_and_counts_points_whose_score_is_not_finite(custom, tmp_path, capsys):
    source = tmp_path / "day.csv"
    test = np.load(custom["data"] / "test_data.npy")
    pd.DataFrame(test, columns=["ch0", "ch1"]).to_csv(source, index=False, float_format="%.9g")
    output = tmp_path / "day_detections.csv"
    code = detect.main(["--checkpoint", str(custom["checkpoint"]), "--input", str(source), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 0, err
    result = pd.read_csv(output)
    non_finite = ~np.isfinite(result["score"].to_numpy())
    assert non_finite[450]  # the spike itself
    assert (result["flag"][non_finite] == 1).all()
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["non_finite_scores"] == int(non_finite.sum()) > 0
    assert f"warning: {int(non_finite.sum())} points have a non-finite score" in err


def test_evaluate_ranks_non_finite_test_scores_as_most_anomalous_and_says_how_many(custom, tmp_path, capsys):
    out = tmp_path / "eval"
    code = evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(custom["data"]), "--checkpoint",
                          str(custom["checkpoint"]), "--output-dir", str(out), "--device", "cpu"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    metrics = json.loads((out / "CUSTOM_metrics.json").read_text())["results"]["model"]
    assert metrics["non_finite_scores"] > 0 and metrics["roc_auc"] is not None
    assert f"model: {metrics['non_finite_scores']} TEST points have a non-finite score" in printed.out
    arrays = np.load(out / "CUSTOM_evaluation.npz")
    assert np.isfinite(arrays["scores"]).all() and arrays["predictions"][450] == 1


def test_a_temperature_that_makes_train_scores_non_finite_stops_training_with_exit_1(tmp_path, capsys):
    args = ["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY_TRAIN_FLAGS, "--score", "paper"]
    assert train.main([*args, "--temperature", "1e38"]) == 1
    assert "TRAIN points a non-finite score" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "SYNTH_checkpoint.pth").exists()


# ---- 3. one run per output folder -------------------------------------------------------------------------


def hold_lock_in_child(folder: Path) -> subprocess.Popen:
    """A real process holding the folder's lock until it is signalled (SIGTERM raises, so it cleans up)."""
    script = (
        "import sys, time\n"
        "from runtime.atomic import folder_lock, signals_raise, Interrupted\n"
        "with signals_raise():\n"
        "    try:\n"
        f"        with folder_lock({str(folder)!r}):\n"
        "            print('held', flush=True)\n"
        "            time.sleep(120)\n"
        "    except Interrupted:\n"
        "        sys.exit(143)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_into_a_folder_in_use_stops_naming_the_pid_and_the_lock_goes_on_sigterm(synth, tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    holder = hold_lock_in_child(out)
    try:
        assert f"pid {holder.pid}" in (out / LOCK_FILE).read_text()
        assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"is in use by another run (pid {holder.pid}: python" in line and "choose another --output-dir" in line
        checkpoint = str(synth / "SYNTH_checkpoint.pth")
        assert evaluate.main(["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(out)]) == 2
        assert f"pid {holder.pid}" in one_error_line(capsys.readouterr().err)
        assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=30) == 143
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_sigterm_to_evaluate_removes_its_lock_and_keeps_the_earlier_results(synth, tmp_path):
    out = tmp_path / "eval"
    args = [sys.executable, "evaluate.py", "--dataset", "SYNTH", "--checkpoint", str(synth / "SYNTH_checkpoint.pth"),
            "--output-dir", str(out), "--device", "cpu"]  # fmt: skip
    assert subprocess.run(args, cwd=ROOT, env=CHILD_ENV, capture_output=True, timeout=300).returncode == 0
    before = files_in(out)
    process = subprocess.Popen(args, cwd=ROOT, env=CHILD_ENV, stderr=subprocess.PIPE, text=True)
    while not (out / LOCK_FILE).exists() and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # into the scoring
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM; no result was written" in one_error_line(err)
    assert files_in(out) == before  # no lock, no temp file, every earlier artifact as it was


def test_a_lock_left_by_a_dead_process_is_taken_over_and_removed_at_the_end(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"pid {dead.stdout.strip()}\ncommand python train.py (killed)\n")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    assert (out / "SYNTH_checkpoint.pth").is_file() and not (out / LOCK_FILE).exists()


def test_the_lock_is_removed_after_an_error(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # a folder that was there stays (one the failed run created would go with the lock)
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(tmp_path / "none"), "--output-dir", str(out),
                       *TINY_TRAIN_FLAGS]) == 2  # fmt: skip
    one_error_line(capsys.readouterr().err)
    assert not (out / LOCK_FILE).exists()
    with folder_lock(out):  # free again
        assert (out / LOCK_FILE).exists()


# ---- 4. downloads: a deadline and a minimum rate ---------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    local = LocalServer()
    yield local
    local.close()


@pytest.mark.slow
def test_a_server_dripping_one_byte_every_5_s_fails_in_bounded_time_and_leaves_nothing(server, tmp_path):
    url = server.serve("/drip.bin", b"x" * 4096, drip_every_s=5.0)
    policy = RetryPolicy(attempts=2, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=30, min_rate_bytes_s=100,
                         rate_window_s=4, deadline_s=120)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match=r"under the minimum of 100 bytes/s.*\(after 2 attempts\)"):
        fetch(url, tmp_path / "drip.bin", max_bytes=1 << 20, policy=policy)
    assert time.monotonic() - started < 30  # two attempts of about 5 s each, not for ever
    assert server.hits["/drip.bin"] == 2 and list(tmp_path.iterdir()) == []


def test_a_download_past_its_overall_deadline_is_given_up_without_a_retry(server, tmp_path):
    url = server.serve("/slow.bin", b"x" * 4096, drip_every_s=0.2)
    policy = RetryPolicy(attempts=3, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=10, min_rate_bytes_s=0,
                         deadline_s=1.5)  # fmt: skip
    with pytest.raises(DownloadFailed, match=r"did not finish within the 1.5 s deadline"):
        fetch(url, tmp_path / "slow.bin", max_bytes=1 << 20, policy=policy)
    assert server.hits["/slow.bin"] == 1 and list(tmp_path.iterdir()) == []


# ---- 5. a full disk: the artifacts of a run are replaced together or not at all -------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (we run as root in CI); skipped, with the reason, where mount is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'}); the full-disk "
                    "tests need one")  # fmt: skip
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fill the disk holding `folder` until about `leave_bytes` are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))


def test_evaluate_on_a_full_disk_keeps_the_earlier_results_whole(synth, small_disk, capsys):
    args = ["--dataset", "SYNTH", "--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--output-dir",
            str(small_disk), "--device", "cpu", "--top-sensors", "2"]  # fmt: skip
    assert evaluate.main(args) == 0
    capsys.readouterr()
    before = files_in(small_disk)
    fill(small_disk, 60_000)
    assert evaluate.main([*args[:-1], "3"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device [ENOSPC]" in line and "unchanged" in line
    after = files_in(small_disk)
    after.pop("filler")
    assert after == before  # every earlier artifact, byte for byte; no temp file beside them


def test_detect_on_a_full_disk_keeps_the_earlier_output_and_report(synth, small_disk, capsys):
    np.save(small_disk / "day.npy", load_synth().test[:3000])
    output = small_disk / "detections.csv"
    args = ["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input", str(small_disk / "day.npy"),
            "--output", str(output), "--device", "cpu"]  # fmt: skip
    assert detect.main(args) == 0
    capsys.readouterr()
    before = files_in(small_disk)
    fill(small_disk, 20_000)
    assert detect.main([*args, "--top-sensors", "1"]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    after = files_in(small_disk)
    after.pop("filler")
    assert after == before


@pytest.mark.parametrize("tool", ["train", "evaluate"])
def test_a_full_disk_when_taking_the_output_folders_lock_is_one_error_line(synth, small_disk, capsys, tool):
    (small_disk / "SYNTH_metrics.json").write_text("{}\n")  # an earlier result that must survive
    fill(small_disk, 0)  # the lock file can be created (an inode) but not written (a page)
    before = files_in(small_disk)
    if tool == "train":
        code = train.main(["--dataset", "SYNTH", "--output-dir", str(small_disk), *TINY_TRAIN_FLAGS])
    else:
        code = evaluate.main(["--dataset", "SYNTH", "--checkpoint", str(synth / "SYNTH_checkpoint.pth"),
                              "--output-dir", str(small_disk), "--device", "cpu"])  # fmt: skip
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert LOCK_FILE in line and "No space left on device [ENOSPC]" in line and "free some space" in line
    assert files_in(small_disk) == before and not (small_disk / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_save_every_save_on_a_full_disk_is_one_error_and_the_last_state_stays_loadable(small_disk):
    out = small_disk / "out"
    process = subprocess.Popen(
        [sys.executable, "train.py", "--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS,
         "--train-stride", "1", "--batch-size", "8", "--save-every", "20"],
        cwd=ROOT, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    process.stdout.readline()  # the line printed once the free-space check passed, before training
    while not (out / "SYNTH_last.pth").exists() and process.poll() is None:
        time.sleep(0.01)  # the first --save-every save
    fill(small_disk, 30_000)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stdout + stderr
    assert "could not write" in one_error_line(stderr) and "No space left on device" in stderr
    state = torch.load(out / "SYNTH_last.pth", weights_only=True)  # the earlier save, whole
    assert state["kind"] == "last" and not list(out.glob(".*.tmp")) and not (out / LOCK_FILE).exists()


# ---- 6. output over input --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "report"])
def test_detect_refuses_to_write_over_its_input_before_anything_is_written(synth, tmp_path, capsys, monkeypatch, how):
    source = tmp_path / "day.csv"
    pd.DataFrame(load_synth().test[:500]).to_csv(source, index=False, header=[f"sensor_{i:02d}" for i in range(12)])
    original = source.read_bytes()
    output = {"same path": str(source), "relative path": "sub/../day.csv", "symlink": str(tmp_path / "link.csv"),
              "report": str(tmp_path / "out.csv")}[how]  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    extra = ["--report", str(source)] if how == "report" else []
    code = detect.main(["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input", str(source),
                        "--output", output, *extra])  # fmt: skip
    assert code == 2
    assert "is the same file as --input" in one_error_line(capsys.readouterr().err)
    assert source.read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["day.csv", "link.csv", "sub"]


def test_detect_refuses_an_output_that_is_a_folder_before_scoring(synth, tmp_path, capsys):
    np.save(tmp_path / "day.npy", load_synth().test[:500])
    code = detect.main(["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input", str(tmp_path / "day.npy"),
                        "--output", str(tmp_path)])  # fmt: skip
    assert code == 2 and "is a folder; give a file name" in one_error_line(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["day.npy"]


# ---- 8. flags checked before any work ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["--num-workers", "-1"], "--num-workers must be 0"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--temperature", "-1"], "--temperature must be positive"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--k", "-1"], "--k must be 0 or positive"),
        (["--k", "inf"], "--k must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--win-size", "100000"], "fewer than the window of 100000"),
    ],
)
def test_bad_train_flags_stop_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS, *flags]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists() or sorted(out.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("tool", ["train", "evaluate", "detect"])
def test_device_cuda_without_a_gpu_is_a_clear_error(synth, tmp_path, capsys, tool):
    np.save(tmp_path / "day.npy", load_synth().test[:100])
    args = {
        "train": (train, ["--dataset", "SYNTH", "--output-dir", str(tmp_path / "o"), *TINY_TRAIN_FLAGS[:-2]]),
        "evaluate": (evaluate, ["--dataset", "SYNTH", "--checkpoint", str(synth / "SYNTH_checkpoint.pth"),
                                "--output-dir", str(tmp_path / "o")]),
        "detect": (detect, ["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input",
                            str(tmp_path / "day.npy"), "--output", str(tmp_path / "o" / "d.csv")]),
    }  # fmt: skip
    module, given = args[tool]
    assert module.main([*given, "--device", "cuda"]) == 2
    assert "sees no CUDA GPU; use --device cpu or auto" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--threshold", "fixed"], "--threshold fixed needs --threshold-value"),
        (["--threshold", "fixed", "--threshold-value", "nan"], "--threshold fixed needs --threshold-value"),
        (["--pot-risk", "nan", "--threshold", "pot"], "--pot-risk must be in"),
        (["--protocol", "paper", "--anomaly-ratio", "nan"], "--anomaly-ratio must be in (0, 100)"),
        (["--threshold-percentile", "nan"], "--threshold-percentile must be between 0 and 100"),
    ],
)
def test_bad_evaluate_flags_stop_before_any_work(synth, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    checkpoint = str(synth / "SYNTH_checkpoint.pth")
    assert evaluate.main(["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(out), *flags]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


# ---- 9. small ones -----------------------------------------------------------------------------------------


def custom_args(data: Path, out: Path) -> list[str]:
    return ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *TINY_TRAIN_FLAGS]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "train_data.npy is empty (0 bytes)"),
        ("text", "train_data.npy is not a .npy file"),
        ("loop", "train_data.npy is a symbolic link loop"),
        ("float64", "has 1 values beyond the float32 range (|x| > 3.4e38), the first 1e+39 at row 5, column 1"),
    ],
)
def test_damaged_custom_files_are_named_for_what_they_are(tmp_path, capsys, damage, message):
    data = custom_folder(tmp_path / "data")
    train_file = data / "train_data.npy"
    if damage == "empty":
        train_file.write_bytes(b"")
    elif damage == "text":
        train_file.write_text("1,2\n3,4\n")
    elif damage == "loop":
        train_file.unlink()
        train_file.symlink_to(train_file)
    else:
        values = np.load(train_file).astype(np.float64)
        values[5, 1] = 1e39
        np.save(train_file, values)
    assert train.main(custom_args(data, tmp_path / "out")) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_an_empty_reference_array_is_named(tmp_path, capsys):
    for part in ("train", "test", "test_label"):
        np.save(tmp_path / f"SMAP_{part}.npy", np.zeros((50, 25) if part != "test_label" else 50, dtype=np.float32))
    (tmp_path / "SMAP_test.npy").write_bytes(b"")
    assert prepare_cli.main(["prepare", "--dataset", "SMAP", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "SMAP_test.npy is empty (0 bytes); replace it or remove the SMAP_*.npy set" in line


def test_a_symlink_loop_as_detect_input_is_called_a_loop(synth, tmp_path, capsys):
    (tmp_path / "day.csv").symlink_to(tmp_path / "day.csv")
    code = detect.main(["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input", str(tmp_path / "day.csv"),
                        "--output", str(tmp_path / "out.csv")])  # fmt: skip
    assert code == 2 and "is a symbolic link loop" in one_error_line(capsys.readouterr().err)


def test_a_detect_csv_value_beyond_float32_is_called_so(synth, tmp_path, capsys):
    values = load_synth().test[:200].astype(np.float64)
    values[7, 2] = -5e40
    pd.DataFrame(values, columns=[f"sensor_{i:02d}" for i in range(12)]).to_csv(tmp_path / "day.csv", index=False)
    code = detect.main(["--checkpoint", str(synth / "SYNTH_checkpoint.pth"), "--input", str(tmp_path / "day.csv"),
                        "--output", str(tmp_path / "out.csv")])  # fmt: skip
    assert code == 2 and "beyond the float32 range" in one_error_line(capsys.readouterr().err)


def test_detect_and_inspect_end_quietly_when_the_reader_of_their_output_stops_early(synth, tmp_path):
    np.save(tmp_path / "day.npy", load_synth().test[:4000])  # far more CSV than a pipe buffer holds
    root = Path(__file__).resolve().parents[1]
    checkpoint = str(synth / "SYNTH_checkpoint.pth")
    for command in (["detect.py", "--checkpoint", checkpoint, "--input", str(tmp_path / "day.npy"), "--output", "-"],
                    ["inspect_checkpoint.py", checkpoint, "--json"]):  # fmt: skip
        reader = subprocess.Popen([sys.executable, *command], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        reader.stdout.close()  # as `| head -1` does once it has its line; here before any, so every write fails
        stderr = reader.stderr.read().decode()
        reader.wait(timeout=120)
        assert "Traceback" not in stderr and "error" not in stderr, stderr
        assert not (tmp_path / "day_incidents.csv").exists()


def test_temp_files_of_dead_writers_are_removed_before_the_next_write_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "SYNTH_checkpoint.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".{target.name}.{dead.stdout.strip()}.k2j4h1.tmp"  # a writer killed mid-save
    older = tmp_path / f".{target.name}.x8w2a9qz.tmp"  # named as earlier versions named them
    alive = tmp_path / f".{target.name}.{os.getppid()}.a1b2c3.tmp"  # a writer still at work
    other = tmp_path / ".SYNTH_last.pth.x8w2a9qz.tmp"  # another target's: not ours to judge now
    for temp in (killed, older, alive, other):
        temp.write_bytes(b"half a checkpoint")
    with atomic_path(target) as temp:
        temp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([target.name, alive.name, other.name])


def test_the_offline_download_message_is_one_line(tmp_path, capsys, monkeypatch):
    from data_factory import download

    monkeypatch.setattr(download, "DEFAULT_POLICY", RetryPolicy(attempts=1, connect_timeout_s=5))
    assert prepare_cli.main(["prepare", "--dataset", "PSM", "--data-dir", str(tmp_path),
                             "--psm-base-url", refused_url("/psm")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0])
    assert "Connection refused" in errors[0] and "curl -LO" in errors[0] and "PSM_BASE_URL=" in errors[0]


def test_a_truncated_cache_file_is_named_instead_of_downloading_again(tmp_path, capsys):
    cache = tmp_path / "SMAP"
    arrays = {"train.npy": np.zeros((40, 25), np.float32), "test.npy": np.zeros((60, 25), np.float32),
              "test_label.npy": np.zeros(60, np.uint8)}  # fmt: skip
    row = {"chan_id": "A-1", "train_start": 0, "train_len": 40, "test_start": 0, "test_len": 60,
           "test_anomaly_points": 0}  # fmt: skip
    assert list(row) == list(INDEX_COLUMNS) and set(arrays) == set(ARRAY_FILES)
    write_cache(cache, arrays, [row])
    (cache / "train.npy").write_bytes((cache / "train.npy").read_bytes()[:500])
    offline = ["--telemanom-data-url", refused_url("/d.zip"), "--telemanom-labels-url", refused_url("/l.csv")]
    assert prepare_cli.main(["prepare", "--dataset", "SMAP", "--data-dir", str(tmp_path), *offline]) == 2
    err = capsys.readouterr().err
    line = one_error_line(err)  # no "downloading ..." line before it
    assert f"the SMAP cache file {cache / 'train.npy'} is truncated" in line and f"delete the folder {cache}" in line
    assert (cache / INDEX_FILE).exists()


def test_user_input_errors_are_printed_on_one_line():
    from runtime.errors import error_line

    assert error_line(UserInputError("first\n  second\n")) == "error: first; second"


def test_new_folders_stay_when_the_failed_block_left_something_in_them(tmp_path):
    from runtime.atomic import new_folders_kept_only_on_success

    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), new_folders_kept_only_on_success([target]):
        target.mkdir(parents=True)
        (target / "SYNTH_last.pth").write_bytes(b"state")  # a resumable state the user must not lose
        raise RuntimeError("stopped")
    assert (target / "SYNTH_last.pth").read_bytes() == b"state"
    with pytest.raises(RuntimeError), new_folders_kept_only_on_success([tmp_path / "c" / "d"]):
        (tmp_path / "c" / "d").mkdir(parents=True)
        raise RuntimeError("refused")
    assert not (tmp_path / "c").exists()
    with new_folders_kept_only_on_success([tmp_path / "e"]):  # success: the new folder stays, empty or not
        (tmp_path / "e").mkdir()
    assert (tmp_path / "e").is_dir()


def test_a_stop_raised_while_a_checkpoint_is_read_is_not_taken_for_a_bad_file(tmp_path, monkeypatch):
    """A second signal after the last epoch stops the run while the checkpoint beside it is read (to keep a model of
    other data): that stop must go on, not become 'not a checkpoint', or the other model would be overwritten."""
    import signal

    from model import checkpoint
    from model.solver import TrainingInterrupted

    def stopped(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGINT, epoch=2, step=0, after_training=True)

    monkeypatch.setattr(checkpoint.torch, "load", stopped)
    (tmp_path / "SYNTH_checkpoint.pth").write_bytes(b"a model of other data")
    with pytest.raises(TrainingInterrupted):
        checkpoint.load_checkpoint(tmp_path / "SYNTH_checkpoint.pth")
