"""Training and scoring throughput, MFU and peak memory, beside DeepOD's AnomalyTransformer.

    python bench/speed.py --data-dir ../shared/data             # both configs, batch 32 and 256, with DeepOD
    python bench/speed.py --configs paper --batch-sizes 32 --steps 3 --no-peer

What is timed, for each config (`defaults`: the original README's d_model 256, 3 layers, d_ff 512;
`paper`: d_model 512) and batch size, all at window 100, 8 heads, on the same windows of the real
MSL training series (55 channels, z-scored on TRAIN; seeded noise of that shape when the data
folder is absent):

- ours, training: the solver's step (model.solver) on `AnomalyTransformer(DetectorConfig(...).model_config(C))`:
  a DataLoader batch of WindowDataset views, forward, `minimax_losses(...).total.backward()` (one
  backward of loss1 + loss2), one Adam step.
- ours, scoring: what the Detector's scoring does per batch: a no_grad forward and the paper score,
  `SCORES["paper"].compute(WindowOutputs(...), channels=None, temperature)`.
- DeepOD, training: its own `AnomalyTransformer.training(dataloader)`, the loop that its `fit`
  runs per epoch (forward, loss1.backward(retain_graph=True), loss2.backward(), one AdamW step),
  on a DataLoader over `get_sub_seqs` windows as `fit` builds it. `fit` itself is not timed: it
  fixes d_model 512 and would also score the whole input; the network is built by hand with
  DeepOD's `AnomalyTransformerModel` at the config's width, exactly as `fit` builds it otherwise.
- DeepOD, scoring: its own `inference(dataloader)`, the call inside `decision_function`. It runs
  without torch.no_grad (DeepOD does not disable autograd there), which is part of its cost.

Each (implementation, config, batch) runs in a fresh process, so its peak RSS (ru_maxrss) is its
own; it covers the data, the model, the training steps and the scoring steps (plus CUDA peak
memory on a GPU). One untimed warm-up step precedes each timing. Both sides use the same torch
build and thread count, and run one after the other for each config and batch. Throughput is
windows per second; MFU divides the FLOPs done per second (forward FLOPs counted from the model's
shapes, a training step counted as one forward and one backward = 3x forward) by the best float32
matmul rate measured during the run (each process measures it for 1 s before its timings; the
rate of that moment is printed beside each row, so a row slowed by other jobs shows it). With --amp
on CUDA, ours measures a bfloat16 8192^3 product instead, the yardstick of a bfloat16 run.

DeepOD lives in a virtual environment of its own (.bench-venvs/deepod, git-ignored), never in
the project's requirements. The script creates it with `python3 -m venv`, installs torch==2.13.0
(the project's CPU build), then `deepod==0.4.1` with --no-deps and DeepOD's other declared
requirements (numpy, scipy, scikit-learn, pandas, tqdm). --no-deps is needed because deepod 0.4.1
declares torch<1.13.1: a plain `pip install deepod` would replace torch 2.13.0 with torch 1.13.0
(an 890 MB CUDA build). The script checks that torch is still 2.13.0 afterwards. If DeepOD
cannot be installed or run, it says why and still prints our figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
PEER_VENV = ROOT / ".bench-venvs" / "deepod"
PEER_PACKAGE = "deepod==0.4.1"
PEER_TORCH = "2.13.0"
# deepod 0.4.1's declared requirements other than torch (its METADATA), installed next to --no-deps deepod.
PEER_REQUIREMENTS = ("numpy>=1.19", "scipy>=1.5.1", "scikit-learn>=0.20.0", "pandas>=1.0.0", "tqdm>=4.62.3")
WIN_SIZE = 100
K = 3.0
CONFIGS = {
    "defaults": {"d_model": 256, "n_heads": 8, "e_layers": 3, "d_ff": 512},
    "paper": {"d_model": 512, "n_heads": 8, "e_layers": 3, "d_ff": 512},
}
CONFIG_LABELS = {"defaults": "README defaults (d_model 256)", "paper": "paper (d_model 512)"}


def forward_flops(channels: int, win: int, d_model: int, n_heads: int, e_layers: int, d_ff: int) -> float:
    """Multiply-adds x 2 of one window's forward pass; element-wise work (softmax, prior, KL) is left out."""
    embedding = 2 * win * channels * 3 * d_model  # kernel-3 conv over channels
    projections = 2 * win * d_model * (4 * d_model + n_heads)  # q, k, v, out, sigma
    attention = 2 * 2 * win * win * d_model  # Q K^T and S V over all heads
    feed_forward = 2 * 2 * win * d_model * d_ff
    head = 2 * win * d_model * channels
    return embedding + e_layers * (projections + attention + feed_forward) + head


def matmul_peak(seconds: float, size: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """Sustained matmul rate in `dtype`, FLOP/s: the reference for MFU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.matmul(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.matmul(a, b)
        runs += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return runs * 2 * size**3 / (time.perf_counter() - started)


def benchmark_series(data_dir: Path, n_rows: int) -> tuple[np.ndarray, str]:
    """The first n_rows of MSL's z-scored TRAIN series, or seeded noise of that shape without the data."""
    from data_factory.registry import load_dataset
    from data_factory.windows import Normalizer
    from runtime.errors import UserInputError

    try:
        dataset = load_dataset("MSL", data_dir)
    except UserInputError as error:
        print(f"note: MSL not readable in {data_dir} ({str(error).splitlines()[0]}); timing on seeded noise")
        return np.random.default_rng(0).standard_normal((n_rows, 55)).astype(np.float32), "seeded noise, 55 channels"
    series = Normalizer.fit(dataset.train).transform(dataset.train)[:n_rows]
    return np.ascontiguousarray(series), f"MSL TRAIN, first {n_rows:,} rows, z-scored, 55 channels"


def _timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _finish(device: torch.device, train_s: float, score_s: float, windows: int) -> dict:
    result = {
        "train_windows_per_s": windows / train_s,
        "score_windows_per_s": windows / score_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_ours(series: np.ndarray, config: dict, batch: int, steps: int, device: torch.device, amp: bool) -> dict:
    """The solver's training step and the Detector's scoring step on our model (amp: as --amp does, CUDA only)."""
    from torch.utils.data import DataLoader, Subset

    from data_factory.windows import WindowDataset
    from model import SCORES, AnomalyTransformer, DetectorConfig, minimax_losses
    from model.scores import DEFAULT_SCORE, WindowOutputs
    from model.scoring import autocast_context
    from runtime.allocator import keep_freed_memory

    torch.manual_seed(0)
    settings = DetectorConfig(win_size=WIN_SIZE, k=K, **config)
    model = AnomalyTransformer(settings.model_config(series.shape[1])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())  # as the solver
    windows = WindowDataset(series, np.arange((steps + 1) * batch), WIN_SIZE)
    warm_up, timed = Subset(windows, range(batch)), Subset(windows, range(batch, (steps + 1) * batch))

    def train(part: Subset) -> None:
        model.train()
        for inputs in DataLoader(part, batch_size=batch):
            inputs = inputs.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, amp):
                losses = minimax_losses(inputs, *model(inputs), settings.k)
            scaler.scale(losses.total).backward()
            scaler.step(optimizer)
            scaler.update()

    @torch.no_grad()
    def score(part: Subset, name: str = "paper") -> None:
        model.eval()
        wanted = SCORES[name]
        for inputs in DataLoader(part, batch_size=batch):
            inputs = inputs.to(device)
            with autocast_context(device, amp):
                outputs = WindowOutputs(inputs, *model(inputs, associations=wanted.needs_associations))
                wanted.compute(outputs, None, settings.temperature).float().cpu().numpy()

    keep_freed_memory()  # as the solver and the scoring loop do
    train(warm_up)
    train_s = _timed(lambda: train(timed), device)
    score(warm_up)
    score_s = _timed(lambda: score(timed), device)
    default_s = _timed(lambda: score(timed, DEFAULT_SCORE), device)
    result = _finish(device, train_s, score_s, steps * batch)
    return {**result, "default_score_windows_per_s": steps * batch / default_s}


def run_deepod(series: np.ndarray, config: dict, batch: int, steps: int, device: torch.device, _amp: bool) -> dict:
    """DeepOD's own training loop and inference on a network built as its fit builds it (it has no AMP)."""
    from deepod.models.time_series.anomalytransformer import AnomalyTransformer, AnomalyTransformerModel
    from deepod.utils.utility import get_sub_seqs
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    detector = AnomalyTransformer(
        seq_len=WIN_SIZE, batch_size=batch, lr=1e-4, epochs=1, epoch_steps=-1, device=str(device), k=K, verbose=0
    )
    channels = series.shape[1]
    detector.net = AnomalyTransformerModel(
        win_size=WIN_SIZE, enc_in=channels, c_out=channels, device=str(device), **config
    ).to(device)
    # As in DeepOD's fit: AdamW with weight decay 1e-5 and a StepLR schedule.
    detector.optimizer = torch.optim.AdamW(detector.net.parameters(), lr=1e-4, weight_decay=1e-5)
    detector.scheduler = torch.optim.lr_scheduler.StepLR(detector.optimizer, step_size=5, gamma=0.5)
    windows = get_sub_seqs(series[: (steps + 1) * batch + WIN_SIZE - 1], seq_len=WIN_SIZE, stride=1)
    warm_up, timed = windows[:batch], windows[batch : (steps + 1) * batch]

    def loader(part: np.ndarray) -> DataLoader:
        return DataLoader(part, batch_size=batch, shuffle=False, drop_last=False)

    detector.net.train()
    detector.training(loader(warm_up))
    train_s = _timed(lambda: detector.training(loader(timed)), device)
    detector.net.eval()
    detector.inference(loader(warm_up))
    score_s = _timed(lambda: detector.inference(loader(timed)), device)
    return _finish(device, train_s, score_s, steps * batch)


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    series = np.load(args.series)
    config = CONFIGS[args.config]
    run = run_ours if args.worker == "ours" else run_deepod
    # The machine's rate at this moment (other jobs may share it); in bfloat16 for a mixed-precision run.
    low_precision = args.amp and device.type == "cuda"
    peak = matmul_peak(1.0, 8192, torch.bfloat16) if low_precision else matmul_peak(1.0)
    print(json.dumps({**run(series, config, args.batch, args.steps, device, args.amp), "matmul_flops": peak}))


def _pip(python: Path, *arguments: str, log: Path) -> None:
    with open(log, "a") as handle:
        subprocess.run([str(python), "-m", "pip", "install", *arguments], check=True, stdout=handle, stderr=handle)


def _peer_torch(python: Path) -> str | None:
    """torch's version where deepod imports in the peer environment, else None."""
    probe = "import torch, deepod.models.time_series.anomalytransformer; print(torch.__version__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_peer(venv: Path) -> tuple[Path | None, str]:
    """DeepOD's own environment: (its python, a note) or (None, why it is not available)."""
    python, log = venv / "bin" / "python", venv.parent / "deepod-install.log"
    version = _peer_torch(python) if python.exists() else None
    if version is None:
        print(f"setting up DeepOD in {venv} (log: {log}) ...", flush=True)
        try:
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
            _pip(python, f"torch=={PEER_TORCH}", log=log)
            _pip(python, "--no-deps", PEER_PACKAGE, log=log)  # its metadata pins torch<1.13.1: see the docstring
            _pip(python, *PEER_REQUIREMENTS, log=log)
        except (OSError, subprocess.CalledProcessError) as error:
            return None, f"DeepOD could not be installed ({error}); see {log}"
        version = _peer_torch(python)
        if version is None:
            return None, f"DeepOD was installed but does not import; see {log}"
    if not version.startswith(PEER_TORCH):
        return None, f"the DeepOD environment has torch {version}, not {PEER_TORCH}; delete {venv} and rerun"
    return (
        python,
        f"DeepOD 0.4.1 in {os.path.relpath(venv, ROOT)}, torch {version} (installed with --no-deps, see docstring)",
    )


def measure(python: Path, script: Path, kind: str, config: str, batch: int, steps: int, device: str, series: Path,
            amp: bool) -> dict:  # fmt: skip
    """One measurement in a fresh process: `script` is this file, or the before tree's bench/speed.py."""
    command = [str(python), str(script), "--worker", kind, "--config", config, "--batch", str(batch)]
    command += ["--steps", str(steps), "--device", device, "--series", str(series)] + (["--amp"] if amp else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"error": reason}
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(results: list[dict]) -> dict:
    """The fastest of the repeats for each throughput, and the largest peak memory (the honest one)."""
    good = [result for result in results if "error" not in result]
    if not good:
        return results[-1]
    best = {key: max(result[key] for result in good) for key in good[0] if key.endswith("_per_s")}
    memory = {key: max(result[key] for result in good) for key in good[0] if key.startswith("peak_")}
    return {**best, **memory, "matmul_flops": max(result["matmul_flops"] for result in good)}


def ratio_row(name: str, batch: int, impl: str, ours: dict, theirs: dict) -> dict:
    ratio = {key: ours[f"{key}_windows_per_s"] / theirs[f"{key}_windows_per_s"] for key in ("train", "score")}
    if "default_score_windows_per_s" in theirs:
        ratio["default_score"] = ours["default_score_windows_per_s"] / theirs["default_score_windows_per_s"]
    ratio["memory"] = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
    return {"config": name, "batch": batch, "impl": impl, **ratio}


def row_line(row: dict) -> str:
    label = f"| {CONFIG_LABELS[row['config']]} | {row['batch']} | {row['impl']} |"
    if "error" in row:
        return f"{label} failed: {row['error']} ||||||||"
    if " / " in row["impl"]:
        default = f"{row['default_score']:.2f}x" if "default_score" in row else ""
        return f"{label} | {row['train']:.2f}x | | {row['score']:.2f}x | | {default} | {row['memory']:.2f}x | |"
    memory = f"{row['peak_rss_mib']:,.0f}"
    if "peak_cuda_mib" in row:
        memory += f" (CUDA {row['peak_cuda_mib']:,.0f})"
    default = f"{row['default_score_windows_per_s']:.1f}" if "default_score_windows_per_s" in row else ""
    return (
        f"{label} {row['timed_windows']} | {row['train_windows_per_s']:.1f} | {row['train_mfu']:.0%} "
        f"| {row['score_windows_per_s']:.1f} | {row['score_mfu']:.0%} | {default} | {memory} "
        f"| {row['matmul_flops'] / 1e9:.0f} |"
    )


def fleet_lines(data_dir: Path, dataset: str, jobs: list[int], before: Path | None) -> list[str]:
    from bench.fleet_quality import dataset_dir
    from bench.fleet_speed import fleet_rows, fleet_table
    from data_factory.entities import entity_names

    folder = dataset_dir(data_dir, dataset)
    try:
        n_entities = len(entity_names(dataset, folder))
    except Exception as error:  # noqa: BLE001 - any reason the data cannot be listed skips the fleet rows
        return [f"fleet rows skipped: {dataset} not readable in {data_dir} ({str(error).splitlines()[0]})"]
    rows = fleet_rows(dataset, folder, "fleet", jobs, before)
    return [f"fleet: all {n_entities} {dataset} entities trained (and their TRAIN scored) with --preset fleet on "
            "CPU, one child process per run", "", *fleet_table(rows, n_entities)]  # fmt: skip


def main() -> None:
    from bench.before import before_tree

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA, help="holds MSL/ (default: ../shared/data)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement, capped by --max-windows")
    parser.add_argument("--max-windows", type=int, default=512, help="cap on timed windows (default: 512)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="mixed precision for ours on CUDA (DeepOD has none)")
    parser.add_argument("--no-peer", action="store_true", help="skip DeepOD")
    parser.add_argument("--no-before", action="store_true", help="skip the code before the speed work")
    parser.add_argument("--fleet", default="MSL", help="dataset of the fleet rows (default: MSL)")
    parser.add_argument("--fleet-jobs", nargs="+", type=int, default=[1, 2], help="--jobs of the fleet rows")
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet rows")
    parser.add_argument("--output", type=Path, default=Path("artifacts/bench"), help="where speed.md/.json go")
    parser.add_argument("--worker", choices=("ours", "deepod"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--series", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with before_tree() as (tree, before_note):
        run(args, None if args.no_before else tree, "before skipped (--no-before)" if args.no_before else before_note)


def run(args: argparse.Namespace, before: Path | None, before_note: str) -> None:
    started = time.perf_counter()
    steps = {batch: max(1, min(args.steps, args.max_windows // batch)) for batch in args.batch_sizes}
    series, source = benchmark_series(args.data_dir, max((s + 1) * b for b, s in steps.items()) + WIN_SIZE - 1)
    peer, peer_note = (None, "DeepOD skipped (--no-peer)") if args.no_peer else ensure_peer(PEER_VENV)
    host = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(f"machine: {host}\ndata: {source}\n{before_note}\npeer: {peer_note}", flush=True)
    sides = {"ours": (Path(sys.executable), Path(__file__), "ours")}
    if before is not None:
        sides = {"before": (Path(sys.executable), before / "bench" / "speed.py", "ours"), **sides}
    if peer is not None:
        sides["DeepOD"] = (peer, Path(__file__), "deepod")

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        series_path = Path(folder) / "series.npy"
        np.save(series_path, series)
        for name in args.configs:
            for batch in args.batch_sizes:
                options = (name, batch, steps[batch], args.device, series_path, args.amp)
                results: dict[str, list[dict]] = {impl: [] for impl in sides}
                for _ in range(max(args.repeats, 1)):  # alternating, so a slow spell of the machine hits every side
                    for impl, (python, script, kind) in sides.items():
                        results[impl].append(measure(python, script, kind, *options))
                        print(f"measured {name}, batch {batch}, {impl}: {json.dumps(results[impl][-1])}",
                              file=sys.stderr, flush=True)  # fmt: skip
                found = {impl: best_of(runs) for impl, runs in results.items()}
                for impl, result in found.items():
                    rows.append({"config": name, "batch": batch, "impl": impl, "timed_windows": steps[batch] * batch})
                    rows[-1].update(result)
                for other in ("before", "DeepOD"):
                    if other in found and "error" not in found[other] and "error" not in found["ours"]:
                        rows.append(ratio_row(name, batch, f"ours / {other}", found["ours"], found[other]))

    # The best matmul rate seen during the run is the nearest to the hardware's limit; other jobs on a
    # shared machine lower the rate of the moment, shown per row.
    measured = [row for row in rows if "matmul_flops" in row]
    peak = max((row["matmul_flops"] for row in measured), default=float("nan"))
    for row in measured:
        flops = forward_flops(series.shape[1], WIN_SIZE, **CONFIGS[row["config"]])
        row["train_mfu"] = row["train_windows_per_s"] * 3 * flops / peak
        row["score_mfu"] = row["score_windows_per_s"] * flops / peak
    header = "| config | batch | impl | timed windows | train win/s | train MFU | score win/s | score MFU "
    header += "| default score win/s | peak RSS MiB | matmul GFLOP/s then |"
    lines = [header, "|---" * 11 + "|", *(row_line(row) for row in rows)]
    fleet = [] if args.no_fleet else fleet_lines(args.data_dir, args.fleet, args.fleet_jobs, before)
    notes = [
        f"machine: {host}; wall time {(time.perf_counter() - started) / 60:.1f} min",
        f"data: {source}; window {WIN_SIZE}, 8 heads, 3 layers, d_ff 512",
        before_note,
        f"peer: {peer_note}",
        f"each side ran {max(args.repeats, 1)} time(s), alternating; each throughput is the best run's, each peak "
        "RSS the largest",
        f"MFU against the best float32 matmul rate seen in the run, {peak / 1e9:.0f} GFLOP/s; a training window "
        "counts 3x its forward FLOPs; forward GFLOP per window: "
        + ", ".join(f"{n} {forward_flops(series.shape[1], WIN_SIZE, **CONFIGS[n]) / 1e9:.2f}" for n in args.configs),
        "score: the paper score (every association); default score: the reconstruction score, for which the "
        "model skips sigma and the prior (ours only)",
        "ratios: throughput (above 1: ours is faster), peak RSS (below 1: ours uses less)",
        f"command: {' '.join(sys.argv)}",
    ]
    text = "\n".join(lines) + ("\n\n" + "\n".join(fleet) if fleet else "")
    print("\n" + text + "\n\n" + "\n".join(notes))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "speed.md").write_text(text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    document = {"machine": host, "data": source, "before": before_note, "peer": peer_note, "matmul_peak_flops": peak,
                "rows": rows, "fleet": fleet}  # fmt: skip
    (args.output / "speed.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
