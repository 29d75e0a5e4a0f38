"""Training and scoring throughput and peak memory of the Anomaly Transformer.

    python bench/train_speed.py                 # README defaults and the paper preset, on the best device
    python bench/train_speed.py --steps 10 --device cpu

Each configuration runs in a fresh subprocess so that its peak RSS is its own. Training is the
full minimax step (forward, both losses, one backward, Adam step); scoring is the paper score
under no_grad. Data are random windows with SMAP's 25 channels: speed does not depend on values.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.discrepancy import anomaly_score, minimax_losses  # noqa: E402
from model.scoring import autocast_context, resolve_device  # noqa: E402
from model.transformer import AnomalyTransformer, ModelConfig  # noqa: E402

CONFIGS = {
    "defaults": {"d_model": 256, "n_heads": 8, "e_layers": 3, "d_ff": 512, "win_size": 100, "batch_size": 128},
    "paper": {"d_model": 512, "n_heads": 8, "e_layers": 3, "d_ff": 512, "win_size": 100, "batch_size": 256},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, steps: int, device_name: str, amp: bool, channels: int) -> dict:
    settings = dict(CONFIGS[name])
    batch_size = settings.pop("batch_size")
    device = resolve_device(device_name)
    torch.manual_seed(0)
    model = AnomalyTransformer(ModelConfig(n_channels=channels, **settings)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = torch.randn(batch_size, settings["win_size"], channels, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, amp):
            losses = minimax_losses(batch, *model(batch), k=3.0)
        losses.total.backward()
        optimizer.step()

    def score_step() -> None:
        with torch.no_grad(), autocast_context(device, amp):
            anomaly_score(batch, *model(batch))

    timings = {}
    for label, step in (("train", train_step), ("score", score_step)):
        model.train(label == "train")
        for _ in range(2):  # warm-up: allocator, kernels, caches
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        timings[label] = steps * batch_size / (time.perf_counter() - started)
    result = {
        "config": name,
        "device": str(device),
        "amp": amp and device.type == "cuda",
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_windows_per_s": round(timings["train"], 1),
        "score_windows_per_s": round(timings["score"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default: 5)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--channels", type=int, default=25, help="input channels (default: 25, as SMAP)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.device, args.amp, args.channels)))
        return

    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, python {platform.python_version()}"
    )
    print(f"{'config':<10}{'device':<8}{'batch':>6}{'params':>11}", end="")
    print(f"{'train win/s':>13}{'score win/s':>13}{'peak RSS MiB':>14}")
    for name in args.configs:
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--channels",
            str(args.channels),
        ] + (["--amp"] if args.amp else [])
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        line = (
            f"{row['config']:<10}{row['device']:<8}{row['batch_size']:>6}{row['parameters']:>11,}"
            f"{row['train_windows_per_s']:>13.1f}{row['score_windows_per_s']:>13.1f}{row['peak_rss_mib']:>14.1f}"
        )
        if "peak_cuda_mib" in row:
            line += f"  peak CUDA {row['peak_cuda_mib']:.0f} MiB"
        print(line)


if __name__ == "__main__":
    main()
