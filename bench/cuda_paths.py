"""The user-facing CUDA paths, checked against the CPU on one machine with a GPU (prints a checklist).

    python bench/cuda_paths.py                  # needs CUDA; about a minute on one GPU
    python bench/cuda_paths.py --device cpu     # a dry run of the script itself, no GPU needed
    python bench/cuda_paths.py --checks resume  # one group: scores, determinism, amp, resume
    python bench/cuda_paths.py --checks determinism resume --deterministic   # train.py --deterministic

On SYNTH with a small model (d_model 64, 2 layers, 1 epoch, a window every 5 steps):

1. train.py on the device, float32; evaluate.py's scoring (evaluate_checkpoint) of that checkpoint
   on the device and on the CPU: how far apart the scores are.
2. detect.py on the device, streamed in uneven chunks: equal to evaluate.py's device scores?
3. evaluate.py --explain 2 --top-sensors 3 on the device: exit status and files.
4. The same training twice on the device: are the weights identical (determinism)?
5. train.py --amp on the device; its checkpoint scored on the CPU (a GPU checkpoint on a CPU host).
6. Never lose work on the device: a 2-epoch run stopped with SIGTERM in its second epoch, then
   --resume, against the uninterrupted run (largest weight difference).

Differences are reported, not asserted: GPU kernels need not match the CPU bit for bit. A step
that raises is reported as FAILED and the script exits 1.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import detect  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402
from data_factory.registry import load_synth  # noqa: E402
from evaluation.report import evaluate_checkpoint  # noqa: E402

SMALL = ["--dataset", "SYNTH", "--d-model", "64", "--n-heads", "4", "--e-layers", "2", "--d-ff", "128"]
SMALL += ["--epochs", "1", "--train-stride", "5", "--no-progress"]
RESUMABLE = [*SMALL[: SMALL.index("--epochs")], "--epochs", "2", "--train-stride", "2", "--batch-size", "64"]
RESUMABLE += ["--no-progress"]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state"]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[name].float() - b[name].float()).abs().max()) for name in a)


def relative_gap(a: np.ndarray, b: np.ndarray) -> str:
    gap = np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(b), 1e-12)
    return f"max relative difference {gap.max():.2e}, median {np.median(gap):.2e}"


def check_scores_and_detect(folder: Path, device: str) -> list[str]:
    assert train.main([*SMALL, "--device", device, "--output-dir", str(folder)]) == 0
    checkpoint = folder / "SYNTH_checkpoint.pth"
    on_device = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device=device).model.scores
    on_cpu = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device="cpu").model.scores
    lines = [f"1. scores of the {device}-trained model, {device} against cpu: {relative_gap(on_device, on_cpu)}"]

    data = load_synth()
    np.save(folder / "test.npy", data.test)
    output = folder / "detect" / "detections.csv"
    output.parent.mkdir()
    args = ["--checkpoint", str(checkpoint), "--input", str(folder / "test.npy"), "--output", str(output)]
    assert detect.main([*args, "--chunk-rows", "997", "--device", device]) == 0
    streamed = pd.read_csv(output, keep_default_na=False)["score"].to_numpy(np.float32)
    same = np.array_equal(streamed, on_device)
    lines.append(
        f"2. detect.py on {device}, chunks of 997 rows, against evaluate's {device} scores: "
        + ("identical" if same else relative_gap(streamed, on_device))
    )

    explain = ["--dataset", "SYNTH", "--output-dir", str(folder), "--device", device, "--baselines", "none"]
    code = evaluate.main([*explain, "--explain", "2", "--top-sensors", "3"])
    assert code == 0, f"evaluate.py --explain exited {code}"
    expected = {f"SYNTH_{name}" for name in ("associations.npz", "associations.png", "attribution.csv", "metrics.json")}
    missing = expected - {path.name for path in folder.iterdir()}
    assert not missing, f"evaluate.py --explain did not write {', '.join(sorted(missing))}"
    lines.append(f"3. evaluate.py --explain 2 on {device}: exit 0; wrote {', '.join(sorted(expected))}")
    return lines


def check_determinism(folder: Path, device: str, flags: list[str]) -> str:
    runs = []
    for name in ("first", "second"):
        assert train.main([*SMALL, *flags, "--device", device, "--output-dir", str(folder / name)]) == 0
        runs.append(weights(folder / name / "SYNTH_checkpoint.pth"))
    gap = largest_difference(*runs)
    return f"4. two {device} trainings, same seed: " + ("identical weights" if gap == 0 else f"largest gap {gap:.2e}")


def check_amp_checkpoint_on_cpu(folder: Path, device: str) -> str:
    assert train.main([*SMALL, "--device", device, "--amp", "--output-dir", str(folder)]) == 0
    checkpoint = folder / "SYNTH_checkpoint.pth"
    cpu = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device="cpu").model
    back = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device=device).model.scores
    roc = cpu.metrics["roc_auc"]
    return (
        f"5. --amp checkpoint from {device}, scored on cpu: ROC-AUC {roc:.3f}; "
        f"cpu (float32) against {device} (float32): {relative_gap(cpu.scores, back)}"
    )


def train_process(folder: Path, device: str, flags: list[str], *extra: str) -> subprocess.Popen:
    command = [sys.executable, "train.py", *RESUMABLE, *flags, "--device", device, "--output-dir", str(folder), *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_resume(folder: Path, device: str, flags: list[str]) -> str:
    for name in ("whole", "again"):  # twice: how far two uninterrupted runs drift apart on this device
        whole = train_process(folder / name, device, flags)
        whole.communicate()
        assert whole.returncode == 0
    stopped = train_process(folder / "stopped", device, flags)
    for line in stopped.stdout:
        if line.startswith("epoch 1/2"):
            break
    time.sleep(0.3)
    stopped.send_signal(signal.SIGTERM)
    stop_log, _ = stopped.communicate()
    # The check means something only if the run really stopped inside its second epoch.
    assert stopped.returncode == 128 + signal.SIGTERM, stop_log
    assert "SIGTERM at epoch 2" in stop_log, stop_log
    resumed = train_process(folder / "stopped", device, flags, "--resume")
    log, _ = resumed.communicate()
    assert resumed.returncode == 0, log
    whole = weights(folder / "whole" / "SYNTH_checkpoint.pth")
    gap = largest_difference(whole, weights(folder / "stopped" / "SYNTH_checkpoint.pth"))
    drift = largest_difference(whole, weights(folder / "again" / "SYNTH_checkpoint.pth"))
    return (
        f"6. SIGTERM in epoch 2 on {device} (exit {stopped.returncode}), then --resume: final weights against "
        f"the uninterrupted run: {'identical' if gap == 0 else f'largest gap {gap:.2e}'}; "
        f"two uninterrupted runs: {'identical' if drift == 0 else f'largest gap {drift:.2e}'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    groups = ("scores", "determinism", "amp", "resume")  # checks 1-3, 4, 5 and 6
    parser.add_argument("--checks", nargs="+", choices=groups, default=list(groups), help="which checks to run")
    parser.add_argument("--deterministic", action="store_true", help="checks 4 and 6 train with --deterministic")
    args = parser.parse_args()
    device = args.device
    flags = ["--deterministic"] if args.deterministic else []  # for checks 4 and 6
    if device == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here; run with --device cpu for a dry run", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    mode = ", training with --deterministic" if flags else ""
    print(f"device {name}, torch {torch.__version__}{mode}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        steps = {
            "scores": lambda: check_scores_and_detect(root / "scores", device),
            "determinism": lambda: [check_determinism(root / "determinism", device, flags)],
            "amp": lambda: [check_amp_checkpoint_on_cpu(root / "amp", device)],
            "resume": lambda: [check_resume(root / "resume", device, flags)],
        }
        for group in args.checks:
            step = steps[group]
            started = time.perf_counter()
            try:
                lines = step()
            except Exception:  # report and go on: one broken path should not hide the others
                failed = True
                lines = [f"{group} FAILED:\n{traceback.format_exc()}"]
            for line in lines:
                print(line, flush=True)
            print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
