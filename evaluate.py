"""Evaluate a trained checkpoint: python evaluate.py --dataset SYNTH"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_factory import DATASET_NAMES, DEFAULT_DATA_DIR, UserInputError
from data_factory.atomic import ensure_writable_dir
from data_factory.registry import dataset_label
from evaluation import evaluate_checkpoint, format_table, write_artifacts
from model import SCORE_VARIANTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score the test split and report metrics; no test data sets the threshold."
    )
    add = parser.add_argument
    add("--dataset", default="SMAP", help=f"one of {', '.join(DATASET_NAMES)}; must match training (default: SMAP)")
    add("--entity", default=None, help="one channel or machine of the dataset; must match training")
    add(
        "--checkpoint",
        default=None,
        help="checkpoint path (default: {OUTPUT_DIR}/{DATASET}_checkpoint.pth, i.e. ./artifacts/...)",
    )
    add(
        "--threshold-percentile",
        type=float,
        default=99.0,
        help="flag test points above this percentile of the TRAIN scores (default: 99, top 1%%)",
    )
    add("--data-dir", default=None, help=f"data folder; required for CUSTOM (default: {DEFAULT_DATA_DIR})")
    add("--output-dir", default="./artifacts", help="where results go (default: ./artifacts)")
    add("--batch-size", type=int, default=128, help="scoring batch size (default: 128)")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to score (default: auto)")
    add(
        "--score",
        choices=SCORE_VARIANTS,
        default=None,
        help="score variant (default: the one the checkpoint was trained with, normally paper)",
    )
    add("--seed", type=int, default=0, help="seed of the random-score baseline (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = args.checkpoint or str(
        Path(args.output_dir) / f"{dataset_label(args.dataset, args.entity)}_checkpoint.pth"
    )
    try:
        ensure_writable_dir(args.output_dir)
        evaluation = evaluate_checkpoint(
            checkpoint,
            args.dataset,
            args.data_dir,
            args.threshold_percentile,
            args.batch_size,
            args.device,
            args.seed,
            score_variant=args.score,
            entity=args.entity,
        )
        paths = write_artifacts(evaluation, args.output_dir)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(evaluation))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
