"""Every scoring variant tried for issue 9, on one trained model: the table the options were chosen from.

    python bench/score_variants.py --data-dir ../shared/data --dataset MSL --seed 0

Trains the paper's architecture once (1 epoch, a window every 50 steps, the last 20 % of TRAIN
held out for early stopping), then scores TRAIN and TEST twice, with non-overlapping windows and
with windows every `--overlap-stride` steps, keeping each point's per-channel reconstruction error,
association discrepancy and paper score (mean and max over the windows that hold the point). Every
variant below is computed from those arrays and graded by ROC-AUC, PR-AUC and VUS-PR on the test
labels. The labels grade, they never tune inside this script; which dataset's table was allowed
to choose (MSL) and which was kept untouched (SMAP) is the README's rule, not this script's.

Variants: the reconstruction error over all channels, over the target channels (SMAP/MSL: the
telemetry value), over channels divided by their mean TRAIN error ("channel-normalised"); the
negated discrepancy; the paper score; rank combinations (empirical CDF against TRAIN) of error and
discrepancy; a per-entity calibration (each entity's scores as a CDF of its own TRAIN scores,
entities from DATA_DIR/DATASET/channels.csv); smoothing by a centred or trailing moving average
or an EWMA. Output: one markdown table on stdout, best ROC-AUC first.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_factory.registry import load_dataset  # noqa: E402
from evaluation.vus import vus  # noqa: E402
from model.discrepancy import association_discrepancy  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402
from model.solver import TrainConfig, train_anomaly_transformer  # noqa: E402
from model.transformer import AnomalyTransformer, ModelConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@torch.no_grad()
def point_outputs(model: AnomalyTransformer, series: np.ndarray, stride: int, batch_size: int = 128) -> dict:
    """Per-point mean and max over the windows (every `stride` steps, plus one at the end) that hold it."""
    win = model.config.win_size
    n, c = series.shape
    starts = list(range(0, n - win + 1, stride))
    if starts[-1] != n - win:
        starts.append(n - win)
    sums = {"err": np.zeros((n, c)), "disc": np.zeros(n), "paper": np.zeros(n)}
    maxima = {"err": np.zeros((n, c)), "disc": np.full(n, -np.inf), "paper": np.zeros(n)}
    count = np.zeros(n)
    model.eval()
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        x = torch.from_numpy(np.stack([series[s : s + win] for s in batch_starts]))
        reconstruction, per_layer = model(x)
        err = ((reconstruction - x) ** 2).numpy()
        disc = (-association_discrepancy(per_layer)).numpy()  # high = suspicious, as the discrepancy score
        paper = torch.softmax(torch.from_numpy(disc) * 50.0, dim=-1).numpy() * err.mean(-1)
        for row, start in enumerate(batch_starts):
            span = slice(start, start + win)
            for name, values in (("err", err[row]), ("disc", disc[row]), ("paper", paper[row])):
                sums[name][span] += values
                np.maximum(maxima[name][span], values, out=maxima[name][span])
            count[span] += 1
    means = {name: total / (count[:, None] if total.ndim == 2 else count) for name, total in sums.items()}
    return {"mean": means, "max": maxima}


def cdf(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    ordered = np.sort(reference)
    return np.searchsorted(ordered, values, side="right") / len(ordered)


def trailing_mean(values: np.ndarray, span: int) -> np.ndarray:
    sums = np.cumsum(np.concatenate([[0.0], values]))
    index = np.arange(len(values))
    low = np.maximum(0, index - span + 1)
    return (sums[index + 1] - sums[low]) / (index + 1 - low)


def ewma(values: np.ndarray, span: int) -> np.ndarray:
    alpha, out, level = 2 / (span + 1), np.empty(len(values)), values[0]
    for index, value in enumerate(values):
        level = alpha * value + (1 - alpha) * level
        out[index] = level
    return out


def entity_calibrated(rows: list[dict], train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Each entity's test scores as the CDF of that entity's own TRAIN scores."""
    out = np.empty(len(test))
    for row in rows:
        a, n = int(row["train_start"]), int(row["train_len"])
        b, m = int(row["test_start"]), int(row["test_len"])
        out[b : b + m] = cdf(train[a : a + n], test[b : b + m])
    return out


def variants(train: dict, test: dict, target: list[int], rows: list[dict] | None) -> dict[str, np.ndarray]:
    """Test scores of every variant for one window stride (train/test: point_outputs of that stride)."""
    out: dict[str, np.ndarray] = {}
    for aggregate in ("mean", "max"):
        tr, te = train[aggregate], test[aggregate]
        scale = tr["err"].mean(axis=0) + 1e-8
        pairs = {
            "rec, all channels": (tr["err"].mean(1), te["err"].mean(1)),
            "rec, target channels": (tr["err"][:, target].mean(1), te["err"][:, target].mean(1)),
            "rec, channel-normalised": ((tr["err"] / scale).mean(1), (te["err"] / scale).mean(1)),
            "discrepancy": (tr["disc"], te["disc"]),
            "paper": (tr["paper"], te["paper"]),
        }
        for name, (_, values) in pairs.items():
            out[f"{name} [{aggregate}]"] = values
        rec, disc = pairs["rec, all channels"], pairs["discrepancy"]
        target_rec = pairs["rec, target channels"]
        out[f"CDF(rec all) + CDF(discrepancy) [{aggregate}]"] = cdf(*rec) + cdf(*disc)
        out[f"CDF(rec target) + CDF(discrepancy) [{aggregate}]"] = cdf(*target_rec) + cdf(*disc)
        out[f"CDF(rec target) + 0.5 CDF(AssDis) [{aggregate}]"] = cdf(*target_rec) + 0.5 * cdf(-disc[0], -disc[1])
        if rows is not None:
            out[f"rec all, per-entity CDF [{aggregate}]"] = entity_calibrated(rows, *rec)
            out[f"rec target, per-entity CDF [{aggregate}]"] = entity_calibrated(rows, *target_rec)
            out[f"discrepancy, per-entity CDF [{aggregate}]"] = entity_calibrated(rows, *disc)
    return out


SMOOTHERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda v: v,
    "centred 25": lambda v: smooth_scores(v.astype(np.float32), 25),
    "centred 50": lambda v: smooth_scores(v.astype(np.float32), 50),
    "centred 100": lambda v: smooth_scores(v.astype(np.float32), 100),
    "trailing 50": lambda v: trailing_mean(v, 50),
    "EWMA 50": lambda v: ewma(v, 50),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data-dir", type=Path, default=DATA)
    add("--dataset", default="MSL", choices=("SMAP", "MSL"))
    add("--seed", type=int, default=0)
    add("--train-stride", type=int, default=50)
    add("--overlap-stride", type=int, default=10, help="stride of the overlapping scoring windows")
    add("--vus", action="store_true", help="also VUS-PR for every row (slower)")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.data_dir)
    config = ModelConfig(n_channels=dataset.n_channels, d_model=512, n_heads=8, e_layers=3, d_ff=512)
    training = TrainConfig(epochs=1, batch_size=64, train_stride=args.train_stride, seed=args.seed, device="cpu")
    started = time.perf_counter()
    result = train_anomaly_transformer(
        dataset, config, training, log=lambda line: print(line, file=sys.stderr), progress=False
    )
    print(f"trained in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    index = args.data_dir / args.dataset / "channels.csv"
    rows = list(csv.DictReader(index.open())) if index.is_file() else None
    target = dataset.target_channels or list(range(dataset.n_channels))
    train, test = (result.normalizer.transform(split) for split in (dataset.train, dataset.test))
    scores: dict[str, np.ndarray] = {}
    for stride in (config.win_size, args.overlap_stride):
        started = time.perf_counter()
        outputs = variants(
            point_outputs(result.model, train, stride), point_outputs(result.model, test, stride), target, rows
        )
        label = "non-overlapping" if stride == config.win_size else f"stride {stride}"
        for name, values in outputs.items():
            if stride == config.win_size and name.endswith("[max]"):
                continue  # each point lies in one window (two at the end): max = mean
            scores[f"{name.replace(' [mean]', '').replace(' [max]', ', max')}, {label}"] = values
        print(f"scored with {label} windows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    labels = dataset.test_labels
    table = []
    for name, values in scores.items():
        for smoother, smooth in SMOOTHERS.items():
            smoothed = smooth(values)
            entry = [f"{name}; smoothing {smoother}", roc_auc_score(labels, smoothed)]
            entry.append(average_precision_score(labels, smoothed))
            entry.append(vus(labels, smoothed)["vus_pr"] if args.vus else float("nan"))
            table.append(entry)
    table.sort(key=lambda entry: -entry[1])
    print(f"{args.dataset}, seed {args.seed}, {len(table)} variants\n")
    print("| variant | ROC-AUC | PR-AUC | VUS-PR |\n|---|---|---|---|")
    for name, roc, pr, vus_pr in table:
        print(f"| {name} | {roc:.3f} | {pr:.3f} | {vus_pr:.3f} |")


if __name__ == "__main__":
    main()
