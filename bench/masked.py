"""Masked reconstruction (issue 9): hide some steps of the score channels while training, score the hidden steps.

    OMP_NUM_THREADS=2 python bench/masked.py --datasets MSL

The rule (one setting, what chooses, what is only graded) was written before any figure:
bench/results/masked_rule.md. For each seed the script trains two models on the stride-50 CPU
bench (paper architecture, 1 epoch, a window every 50 steps, batch 64, no validation tail): the
default, and one whose training input has each step's score channels set to 0 with probability
0.25 (the losses still compare with the clean window; the association discrepancy and the
minimax training are unchanged). The masked model is scored twice: the default way, and with 4
passes per non-overlapping window, pass r hiding the steps at positions r mod 4, each point taking
its error from the pass that hid it. Every score is the target-channel squared error (all
channels where the dataset names none) with the default centred 50-point mean, graded by ROC-AUC,
PR-AUC, VUS-PR and the point F1 at the 99th percentile of TRAIN scores. Labels only grade.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import DATASETS  # noqa: E402
from bench.seed_tables import mean_std_cells  # noqa: E402
from bench.temperature import grade  # noqa: E402
from data_factory.dataset import TimeSeriesDataset  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from data_factory.windows import WindowDataset, scoring_starts, stitch_window_values  # noqa: E402
from evaluation.metrics import precision_recall_f1  # noqa: E402
from model import solver  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402
from model.transformer import AnomalyTransformer, ModelConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MASK_RATIO = 0.25
PASSES = 4
SPAN = 50


def masked_training_model(channels: list[int] | None, ratio: float) -> type[AnomalyTransformer]:
    """The model class the solver builds, with each training step's score channels hidden at `ratio`."""
    columns = slice(None) if channels is None else list(channels)

    class MaskedInputTransformer(AnomalyTransformer):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
            if self.training:
                hidden = torch.rand(x.shape[:2], device=x.device) < ratio  # (B, L)
                x = x.clone()  # the solver's losses compare with the caller's clean window
                x[..., columns] = x[..., columns].masked_fill(hidden[..., None], 0.0)
            return super().forward(x)

    return MaskedInputTransformer


@torch.no_grad()
def point_errors(model: AnomalyTransformer, series: np.ndarray, channels: list[int] | None, masked: bool) -> np.ndarray:
    """Per-point squared error of the score channels; `masked`: each point hidden in one of PASSES passes."""
    win = model.config.win_size
    columns = slice(None) if channels is None else list(channels)
    loader = DataLoader(WindowDataset(series, scoring_starts(len(series), win), win), batch_size=128)
    model.eval()
    parts = []
    for batch in loader:
        if not masked:
            reconstruction, _ = model(batch)
            parts.append(((reconstruction - batch)[..., columns] ** 2).mean(-1).numpy())
            continue
        errors = torch.zeros(batch.shape[:2])
        for offset in range(PASSES):
            hidden = batch.clone()
            hidden[:, offset::PASSES, columns] = 0.0
            reconstruction, _ = model(hidden)
            step_error = ((reconstruction - batch)[..., columns] ** 2).mean(-1)
            errors[:, offset::PASSES] = step_error[:, offset::PASSES]
        parts.append(errors.numpy())
    return stitch_window_values(np.concatenate(parts), len(series), win)


def graded(labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[float, ...]:
    train, test = smooth_scores(train, SPAN), smooth_scores(test, SPAN)
    f1 = precision_recall_f1(labels, test > np.percentile(train, 99.0))["f1"]
    return (*grade(labels, test), f1)


def run_seed(dataset: TimeSeriesDataset, seed: int, args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
    model_config = ModelConfig(
        n_channels=dataset.n_channels, win_size=100, d_model=512, n_heads=8, e_layers=3, d_ff=512
    )
    config = solver.TrainConfig(epochs=1, batch_size=64, train_stride=args.train_stride, val_ratio=0.0, seed=seed)
    channels = dataset.target_channels or None
    rows = {}
    for name, model_class in (("default", AnomalyTransformer), ("masked", masked_training_model(channels, MASK_RATIO))):
        started = time.perf_counter()
        with mock.patch.object(solver, "AnomalyTransformer", model_class):
            result = solver.train_anomaly_transformer(dataset, model_config, config, log=lambda _: None, progress=False)
        trained = time.perf_counter()
        train, test = (result.normalizer.transform(part) for part in (dataset.train, dataset.test))
        for scoring in ("unmasked", "masked") if name == "masked" else ("unmasked",):
            hide = scoring == "masked"
            scores = [point_errors(result.model, part, channels, hide) for part in (train, test)]
            if not hide and not np.allclose(smooth_scores(scores[0], SPAN), result.train_scores, rtol=1e-4, atol=1e-9):
                raise RuntimeError("this script's default scores differ from the solver's TRAIN scores")
            label = "default (unmasked model)" if name == "default" else f"masked training, {scoring} scoring"
            rows[label] = graded(dataset.test_labels, *scores)
        print(
            f"  {dataset.name} seed {seed} {name}: train {trained - started:.0f} s, "
            f"scoring {time.perf_counter() - trained:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["MSL"], choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-stride", type=int, default=50, help="the bench's (the paper: 1)")
    args = parser.parse_args()
    for name in args.datasets:
        dataset = load_dataset(name, args.data_dir)
        per_seed = [run_seed(dataset, seed, args) for seed in args.seeds]
        print(f"\n### {name}: masked reconstruction, seeds {' '.join(map(str, args.seeds))} (mean ± sample std)\n")
        print("| score (target channels, smoothed 50) | ROC-AUC | PR-AUC | VUS-PR | point F1 (TRAIN 99th pct) |")
        print("|---|---|---|---|---|")
        for row in per_seed[0]:
            print(f"| {row} | {mean_std_cells(per_seed, row)} |", flush=True)
        for seed, seed_rows in zip(args.seeds, per_seed, strict=True):
            print(
                f"\nseed {seed}: "
                + "; ".join(f"{row} {values[0]:.3f} / {values[2]:.3f}" for row, values in seed_rows.items())
            )


if __name__ == "__main__":
    main()
