"""Never lose work: real training subprocesses killed with SIGTERM and SIGKILL, then resumed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
# About 30 steps per epoch: long enough to be killed mid-epoch, short enough for the suite.
RUN = [
    "--dataset",
    "SYNTH",
    "--d-model",
    "32",
    "--n-heads",
    "4",
    "--e-layers",
    "1",
    "--d-ff",
    "64",
    "--win-size",
    "50",
    "--train-stride",
    "2",
    "--batch-size",
    "64",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]


def start(output: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *RUN, "--output-dir", str(output), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_during_second_epoch(process: subprocess.Popen, signal_number: int) -> str:
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 1/2"):
            break
    time.sleep(0.5)
    process.send_signal(signal_number)
    seen.append(process.stdout.read())
    process.wait(timeout=120)
    return "".join(seen)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model_state"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted")
    process = start(output)
    assert process.wait(timeout=300) == 0, process.stdout.read()
    return output / "SYNTH_checkpoint.pth"


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "extra"), [(signal.SIGTERM, ()), (signal.SIGKILL, ("--save-every", "7"))])
def test_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(tmp_path, uninterrupted, signal_number, extra):
    output = tmp_path / "run"
    process = start(output, *extra)
    log = kill_during_second_epoch(process, signal_number)
    assert process.returncode == (128 + signal.SIGTERM if signal_number == signal.SIGTERM else -signal.SIGKILL), log
    if signal_number == signal.SIGTERM:
        assert "stopped by SIGTERM at epoch 2, step" in log and "resume with: python train.py --resume" in log
    state = torch.load(output / "SYNTH_last.pth", weights_only=True)
    assert state["epoch"] == 2 and not state["finished"]
    if signal_number == signal.SIGTERM:
        assert state["step"] > 0  # stopped inside the epoch, after a finished step
    assert not (output / "SYNTH_checkpoint.pth").exists()

    resumed = subprocess.run(
        [sys.executable, "train.py", "--resume", "--dataset", "SYNTH", "--output-dir", str(output), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming at epoch 2, step {state['step']}" in resumed.stdout
    reference, result = weights(uninterrupted), weights(output / "SYNTH_checkpoint.pth")
    for name, tensor in reference.items():
        assert torch.equal(tensor, result[name]), name
    history = torch.load(output / "SYNTH_checkpoint.pth", weights_only=True)["history"]
    expected = torch.load(uninterrupted, weights_only=True)["history"]
    strip = [{key: value for key, value in record.items() if key != "seconds"} for record in history]
    assert strip == [{key: value for key, value in record.items() if key != "seconds"} for record in expected]


def test_resume_of_a_finished_or_missing_run_is_a_clear_error(tmp_path, capsys, uninterrupted):
    code = train.main(["--resume", "--dataset", "SYNTH", "--output-dir", str(tmp_path)])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err
    code = train.main(["--resume", "--dataset", "SYNTH", "--output-dir", str(uninterrupted.parent)])
    assert code == 2 and "already finished" in capsys.readouterr().err


TINY = ["--dataset", "SYNTH", *TINY_TRAIN_FLAGS]


def test_a_non_finite_loss_stops_with_epoch_and_step_and_keeps_old_checkpoints(tmp_path, capsys):
    precious = tmp_path / "SYNTH_checkpoint.pth"
    precious.write_bytes(b"last good checkpoint")
    code = train.main([*TINY, "--lr", "1e30", "--epochs", "2", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite at epoch" in err and ", step " in err
    assert precious.read_bytes() == b"last good checkpoint"


def test_cuda_out_of_memory_gives_the_readme_advice(tmp_path, capsys, monkeypatch):
    import model.solver

    def out_of_memory(*_args, **_kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model.solver, "minimax_losses", out_of_memory)
    code = train.main([*TINY, "--batch-size", "64", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "Traceback" not in err
    assert "try --batch-size 32, --d-model 8 or --win-size 10" in err


def test_a_full_disk_fails_before_training(tmp_path, capsys, monkeypatch):
    import commands.training

    monkeypatch.setattr(commands.training.shutil, "disk_usage", lambda _path: type("Usage", (), {"free": 1024})())
    code = train.main([*TINY, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "MiB free but the checkpoints need about" in err
    assert list(tmp_path.iterdir()) == []
