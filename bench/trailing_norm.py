"""Trailing score normalisation (issue 9): each score judged against the W scores before it.

    python bench/trailing_norm.py --scores artifacts/bench_gpu --datasets MSL

The rule (variants, W, what chooses and what is only graded) was written before any figure:
bench/results/trailing_norm_rule.md. This script reads the per-point scores bench/quality.py saved
(reconstruction error of the target channels, non-overlapping windows), applies the default
centred 50-point mean, then

    ratio: s_t / max(m_t, 0.1 mu)            z: (s_t - m_t) / max(sd_t, 0.1 sigma)

with m_t and sd_t the mean and std of s over the W points before t (positions before the series
start hold mu, the TRAIN mean of s; sigma is the TRAIN std of s). TRAIN scores are transformed the
same way, since the default protocol thresholds at their 99th percentile. Each row is graded by
ROC-AUC, PR-AUC, VUS-PR and the point F1 of that threshold; no test data chooses anything here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import DATASETS  # noqa: E402
from bench.seed_tables import mean_std_cells  # noqa: E402
from bench.temperature import grade  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from evaluation.metrics import precision_recall_f1  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WINDOW = 2100  # telemanom's trailing error window: 30 batches of 70 points
SPAN = 50  # the default centred smoothing
FLOOR = 0.1  # denominators never fall below this share of the TRAIN scale


def trailing_moments(scores: np.ndarray, window: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the `window` scores before each point; positions before the start hold `fill`."""
    padded = np.concatenate([np.full(window, fill), scores.astype(np.float64)])
    sums = np.concatenate([[0.0], np.cumsum(padded)])
    squares = np.concatenate([[0.0], np.cumsum(padded**2)])
    n = len(scores)
    mean = (sums[window : window + n] - sums[:n]) / window
    second = (squares[window : window + n] - squares[:n]) / window
    return mean, np.sqrt(np.clip(second - mean**2, 0.0, None))


def normalised(scores: np.ndarray, mu: float, sigma: float, form: str, window: int = WINDOW) -> np.ndarray:
    mean, std = trailing_moments(scores, window, mu)
    if form == "ratio":
        return scores / np.maximum(mean, FLOOR * mu)
    return (scores - mean) / np.maximum(std, FLOOR * sigma)


def rows_for_seed(values: dict, labels: np.ndarray) -> dict[str, tuple[float, ...]]:
    train = smooth_scores(values["train_reconstruction_target"], SPAN).astype(np.float64)
    test = smooth_scores(values["test_reconstruction_target"], SPAN).astype(np.float64)
    mu, sigma = float(train.mean()), float(train.std())
    candidates = {"default (reconstruction, target, smoothed 50)": (train, test)}
    for form in ("ratio", "z"):
        transformed = tuple(normalised(part, mu, sigma, form) for part in (train, test))
        candidates[f"default, trailing {form}, W {WINDOW}"] = transformed
    rows = {}
    for name, (train_scores, test_scores) in candidates.items():
        threshold = np.percentile(train_scores, 99.0)
        f1 = precision_recall_f1(labels, test_scores > threshold)["f1"]
        rows[name] = (*grade(labels, test_scores), f1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=Path, default=Path("artifacts/bench_gpu"), help="quality_*_seed*_scores.npz")
    parser.add_argument("--data-dir", type=Path, default=DATA, help="for the test labels")
    parser.add_argument("--datasets", nargs="+", default=["MSL"], choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    for name in args.datasets:
        labels = load_dataset(name, args.data_dir).test_labels
        per_seed = []
        for seed in args.seeds:
            path = args.scores / f"quality_{name}_seed{seed}_scores.npz"
            if not path.exists():
                raise SystemExit(f"error: {path} is missing; run bench/quality.py for seed {seed} first")
            with np.load(path) as saved:
                per_seed.append(rows_for_seed(dict(saved), labels))
        print(f"\n### {name}: trailing normalisation, seeds {' '.join(map(str, args.seeds))} (mean ± sample std)\n")
        print("| score | ROC-AUC | PR-AUC | VUS-PR | point F1 (TRAIN 99th pct) |\n|---|---|---|---|---|")
        for row in per_seed[0]:
            print(f"| {row} | {mean_std_cells(per_seed, row)} |", flush=True)


if __name__ == "__main__":
    main()
