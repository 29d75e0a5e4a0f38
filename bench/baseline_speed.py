"""Time baselines of the registry (evaluation/baselines.py, METHODS) on one SMD machine (about 23,700 TRAIN
and TEST rows x 38).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/baseline_speed.py
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/baseline_speed.py --machine machine-2-1
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/baseline_speed.py --baselines reference

Each baseline (default: pca, iforest, knn, kmeans; --baselines as evaluate.py takes it) is fitted on
the machine's TRAIN (z-scored with its own statistics) and scores TEST as its fit mode says; the time
covers all of it, once, with the thread limits of the command line. Reads ../shared/data next to the
repository and exits 0 with a message where SMD is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_factory.smd import load_smd  # noqa: E402
from data_factory.windows import Normalizer  # noqa: E402
from evaluation import baselines  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--machine", default="machine-1-3")
    parser.add_argument("--baselines", default="pca,iforest,knn,kmeans", help=baselines.baselines_help())
    args = parser.parse_args()
    if not (args.data_dir / "SMD" / "ServerMachineDataset" / "train" / f"{args.machine}.txt").exists():
        print(f"SMD {args.machine} is not under {args.data_dir}; nothing to time")
        return
    dataset = load_smd(args.data_dir / "SMD", entity=args.machine)
    normalizer = Normalizer.fit(dataset.train)
    train, test = normalizer.transform(dataset.train), normalizer.transform(dataset.test)
    threads = {name: os.environ.get(name, "unset") for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"SMD {args.machine}: TRAIN {train.shape[0]} x {train.shape[1]}, TEST {test.shape[0]}; {threads}\n")
    print("| baseline | fit mode | fit on TRAIN, score TRAIN + TEST (s) |")
    print("|---|---|---|")
    for name in baselines.parse_baselines(args.baselines):
        started = time.perf_counter()
        train_scores, test_scores = baselines.baseline_scores(name, train, test)
        elapsed = time.perf_counter() - started
        assert np.isfinite(train_scores).all() and np.isfinite(test_scores).all()
        print(f"| {name} | {baselines.METHODS[name].fit_mode} | {elapsed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
