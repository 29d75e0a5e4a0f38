"""Train the Anomaly Transformer: python train.py --dataset SYNTH --epochs 3"""

from __future__ import annotations

import argparse
import sys

from data_factory import DATASET_NAMES, DEFAULT_DATA_DIR, UserInputError
from data_factory.registry import dataset_label
from model import SCORE_VARIANTS, TrainConfig, TrainingFailed
from model.api import last_checkpoint_path, train_to_checkpoint
from model.score_settings import DEFAULT_VARIANT
from model.solver import TrainingInterrupted

DEFAULTS = {
    "d_model": 256,
    "n_heads": 8,
    "e_layers": 3,
    "d_ff": 512,
    "win_size": 100,
    "dropout": 0.0,
    "batch_size": 128,
    "epochs": 10,
    "lr": 1e-4,
    "score": DEFAULT_VARIANT,
}
# paper: the reference hyper-parameters; small/medium/large: the original README's sizes.
PRESETS = {
    "paper": {
        "d_model": 512,
        "n_heads": 8,
        "e_layers": 3,
        "d_ff": 512,
        "win_size": 100,
        "dropout": 0.0,
        "batch_size": 256,
        "epochs": 3,
        "score": "paper",
    },
    "small": {"d_model": 128, "e_layers": 2},
    "medium": {},
    "large": {"d_model": 512, "e_layers": 4},
}
MODEL_KEYS = ("d_model", "n_heads", "e_layers", "d_ff", "win_size", "dropout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description="Train the Anomaly Transformer on TRAIN data only.")
    add = parser.add_argument
    add("--dataset", default="SMAP", help=f"one of {', '.join(DATASET_NAMES)} (default: SMAP)")
    add("--data-dir", default=None, help=f"data folder; required for CUSTOM (default: {DEFAULT_DATA_DIR})")
    add("--entity", default=None, help="one channel or machine of the dataset, e.g. A-1 or machine-1-1")
    add(
        "--preset",
        choices=sorted(PRESETS),
        help="paper = d_model 512, batch 256, 3 epochs; small = d_model 128, "
        "2 layers; medium = the defaults; large = d_model 512, 4 layers. Explicit flags override it",
    )
    add("--d-model", type=int, help="model dimension (default: 256)")
    add("--n-heads", type=int, help="attention heads; must divide --d-model (default: 8)")
    add("--e-layers", type=int, help="encoder layers (default: 3)")
    add("--d-ff", type=int, help="feed-forward dimension (default: 512)")
    add("--win-size", type=int, help="sliding window length (default: 100)")
    add("--dropout", type=float, help="dropout rate (default: 0.0)")
    add("--batch-size", type=int, help="batch size (default: 128)")
    add("--epochs", type=int, help="maximum epochs; lr halves after each (default: 10)")
    add("--lr", type=float, help="Adam learning rate (default: 1e-4)")
    add("--k", type=float, default=3.0, help="weight of the association discrepancy in the minimax losses (default: 3)")
    add(
        "--val-ratio",
        type=float,
        default=0.2,
        help="share of TRAIN, from its end, held out for early stopping (default: 0.2)",
    )
    add("--patience", type=int, default=3, help="epochs without validation improvement before stopping (default: 3)")
    add("--train-stride", type=int, default=1, help="step between training windows (default: 1)")
    add(
        "--score",
        choices=SCORE_VARIANTS,
        help=f"anomaly score stored with the model (default: {DEFAULT_VARIANT}; --preset paper: paper)",
    )
    add(
        "--score-channels",
        default=None,
        help="channels whose reconstruction error counts: all, target (SMAP/MSL: the telemetry value), or "
        "comma-separated names/indices (default: all for --score paper, else target)",
    )
    add(
        "--smooth",
        type=int,
        default=None,
        help="centred moving average of the scores over N points, 0 = off (default: 0 for --score paper, else 50)",
    )
    add("--temperature", type=float, default=50.0, help="softmax temperature of the paper score (default: 50)")
    add("--seed", type=int, default=0, help="random seed; CPU runs with the same seed are identical (default: 0)")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to train (default: auto)")
    add("--amp", action="store_true", help="mixed precision on CUDA (bfloat16 where supported, else float16)")
    add(
        "--deterministic",
        action="store_true",
        help="CUDA: deterministic kernels only, so the same seed gives the same weights and --resume is exact "
        "(CPU runs are deterministic already)",
    )
    add("--num-workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    add("--output-dir", default="./artifacts", help="where {DATASET}_checkpoint.pth goes (default: ./artifacts)")
    add(
        "--resume",
        action="store_true",
        help="continue the run whose {DATASET}_last.pth is in --output-dir, with its stored settings",
    )
    add(
        "--save-every",
        type=int,
        default=0,
        help="also write {DATASET}_last.pth every N steps (default: 0, at epoch ends and on SIGINT/SIGTERM only)",
    )
    add("--no-progress", action="store_true", help="hide the per-batch progress bars")
    return parser


def resolve_settings(args: argparse.Namespace) -> dict:
    """Defaults, then the preset, then every flag the user gave explicitly."""
    settings = dict(DEFAULTS)
    settings.update(PRESETS.get(args.preset, {}))
    settings.update({key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = resolve_settings(args)
    train_config = TrainConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        k=args.k,
        val_ratio=args.val_ratio,
        patience=args.patience,
        train_stride=args.train_stride,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        num_workers=args.num_workers,
        deterministic=args.deterministic,
        score_variant=settings["score"],
        temperature=args.temperature,
        score_channels=args.score_channels,
        smooth=args.smooth,
    )
    try:
        train_to_checkpoint(
            args.dataset,
            args.data_dir,
            {key: settings[key] for key in MODEL_KEYS},
            train_config,
            args.output_dir,
            progress=not args.no_progress,
            entity=args.entity,
            resume=args.resume,
            save_every=args.save_every,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stopped:
        label = dataset_label(args.dataset, args.entity)
        again = ["python train.py --resume", f"--dataset {args.dataset}", f"--output-dir {args.output_dir}"]
        again += [f"--data-dir {args.data_dir}"] if args.data_dir else []
        again += [f"--entity {args.entity}"] if args.entity else []
        print(
            f"stopped by {stopped}; the state is saved in {last_checkpoint_path(args.output_dir, label)}; "
            f"resume with: {' '.join(again)}",
            file=sys.stderr,
        )
        return 128 + stopped.signal_number
    return 0


if __name__ == "__main__":
    sys.exit(main())
