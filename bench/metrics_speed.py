"""Time every metric of the evaluation panel on the real SMAP (or MSL) test labels.

    python bench/metrics_speed.py                  # SMAP: 427,617 points, 67 labelled segments
    python bench/metrics_speed.py --dataset MSL

The score is seeded uniform noise: speed does not depend on values, only on the length, the
number of distinct scores (all distinct here, the worst case) and the labelled segments. The
threshold is the 99th percentile of another seeded noise standing in for the train scores.
Reads ../shared/data next to the repository and exits 0 with a message where it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.affiliation import affiliation_metrics  # noqa: E402
from evaluation.metrics import best_f1, point_adjust, pr_auc, precision_recall_f1, roc_auc  # noqa: E402
from evaluation.range_metrics import event_metrics, pa_k_f1, pa_k_f1_auc  # noqa: E402
from evaluation.vus import DEFAULT_MAX_BUFFER, vus  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def panel(labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray) -> dict:
    """Each metric of the panel as a zero-argument call, in the order of the report."""
    return {
        "point P/R/F1": lambda: precision_recall_f1(labels, predictions),
        "ROC-AUC": lambda: roc_auc(labels, scores),
        "PR-AUC": lambda: pr_auc(labels, scores),
        "PA P/R/F1": lambda: precision_recall_f1(labels, point_adjust(labels, predictions)),
        "PA%K F1 at K=0,20,100": lambda: [pa_k_f1(labels, predictions, k) for k in (0, 20, 100)],
        "PA%K F1 area": lambda: pa_k_f1_auc(labels, predictions),
        "event P/R/F1": lambda: event_metrics(labels, predictions),
        "affiliation P/R": lambda: affiliation_metrics(labels, predictions),
        f"VUS-ROC/PR (buffers 0..{DEFAULT_MAX_BUFFER})": lambda: vus(labels, scores),
        "best F1 (oracle)": lambda: best_f1(labels, scores),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="SMAP", choices=["SMAP", "MSL"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = DATA / args.dataset / "test_label.npy"
    if not path.exists():
        print(f"{path} not found: the real labels are not on this machine, nothing to time.")
        return
    labels = np.load(path).astype(bool)
    rng = np.random.default_rng(args.seed)
    scores = rng.random(len(labels))
    predictions = scores > np.percentile(rng.random(len(labels)), 99)
    print(f"{args.dataset}: {len(labels):,} points, {labels.mean():.2%} labelled; seeded uniform score")
    total = 0.0
    for name, call in panel(labels, scores, predictions).items():
        start = time.perf_counter()
        value = call()
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"  {name:<32} {elapsed:7.3f} s   {value}")
    print(f"  {'whole panel':<32} {total:7.3f} s")


if __name__ == "__main__":
    main()
