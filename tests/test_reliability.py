"""Faults and bad input end in a correct result or a clean stop: one `error:` line, exit 2 (1 for a
non-finite loss), and no existing file changed, lost or left half-written. Real files, real child
processes and real signals, a real loopback server, a real full disk (a small tmpfs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import detect
import evaluate
import train
from data_factory import __main__ as prepare_cli
from data_factory.atomic import atomic_path
from data_factory.download import DownloadFailed, RetryPolicy, fetch
from data_factory.errors import UserInputError
from data_factory.registry import load_synth
from data_factory.telemanom import ARRAY_FILES, INDEX_COLUMNS, INDEX_FILE, write_cache
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
    from data_factory.errors import error_line

    assert error_line(UserInputError("first\n  second\n")) == "error: first; second"
