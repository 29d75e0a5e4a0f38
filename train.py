"""Train the Anomaly Transformer: python train.py --dataset SYNTH --epochs 3"""

from __future__ import annotations

import argparse
import sys
import time

from commands.training import best_checkpoint_path, last_checkpoint_path, train
from data_factory import DATASET_NAMES, DEFAULT_DATA_DIR, UserInputError
from data_factory.names import dataset_label
from model import PRESETS, TrainingFailed, TrainingInterrupted
from model.config import add_config_flags, config_from_flags, describe_preset
from model.fleet import NORMALISATIONS, FleetInterrupted, fleet_path, shard_path
from model.scoring import resolve_device
from runtime.atomic import Interrupted, signals_raise
from runtime.errors import error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description="Train the Anomaly Transformer on TRAIN data only.")
    add = parser.add_argument
    add("--dataset", default="SMAP", help=f"one of {', '.join(DATASET_NAMES)} (default: SMAP)")
    add("--data-dir", default=None, help=f"data folder; required for CUSTOM (default: {DEFAULT_DATA_DIR})")
    add("--entity", default=None, help="one channel or machine of the dataset, e.g. A-1 or machine-1-1")
    presets = "; ".join(f"{name} = {describe_preset(name)}" for name in sorted(PRESETS))
    add("--preset", choices=sorted(PRESETS), help=f"{presets} (paper on SMD: 10 epochs, train stride 100). "
        "Explicit flags override it")  # fmt: skip
    add_config_flags(parser)
    add("--output-dir", default="./artifacts", help="where {DATASET}_checkpoint.pth goes (default: ./artifacts)")
    add("--resume", action="store_true",
        help="continue the run whose {DATASET}_last.pth (with --per-entity: {DATASET}_fleet.pth) is in "
        "--output-dir, with its stored settings")  # fmt: skip
    add("--save-every", type=int, default=0, help="also write {DATASET}_last.pth every N steps "
        "(default: 0, at epoch ends and on SIGINT/SIGTERM only)")  # fmt: skip
    add("--no-progress", action="store_true", help="hide the per-batch progress bars")
    fleet = parser.add_argument_group("one model per entity (SMAP/MSL channel, SMD machine, CUSTOM entities.csv)")
    fleet.add_argument("--per-entity", action="store_true",
                       help="train one Detector per entity into {DATASET}_fleet.pth; without --preset, "
                       "--preset fleet")
    fleet.add_argument("--entities", default=None, help="comma-separated entities to train (default: all)")
    fleet.add_argument("--jobs", type=int, default=None,
                       help="entities trained at once, each in its own process on one thread (default: the cores)")
    fleet.add_argument("--normalisation", choices=NORMALISATIONS, default="entity",
                       help="entity: z-score each entity with its own TRAIN; global: with the whole dataset's "
                       "(default: entity)")
    return parser  # fmt: skip


def resume_command(args: argparse.Namespace) -> str:
    again = ["python train.py --resume", *(["--per-entity"] if args.per_entity else []), f"--dataset {args.dataset}",
             f"--output-dir {args.output_dir}"]  # fmt: skip
    again += [f"--data-dir {args.data_dir}"] if args.data_dir else []
    again += [f"--entity {args.entity}"] if args.entity else []
    return " ".join(again)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    with signals_raise():  # before training starts and in a fleet's parent process; the epoch loop has its own
        try:
            return run(args)
        except Interrupted as stopped:
            label = dataset_label(args.dataset, args.entity)
            best = fleet_path(args.output_dir, args.dataset) if args.per_entity else (
                best_checkpoint_path(args.output_dir, label))  # fmt: skip
            if not args.per_entity and best.is_file() and best.stat().st_mtime >= started:
                print(f"stopped by {stopped} after the run finished; {best} is saved", file=sys.stderr)
            elif args.per_entity and best.is_file():
                print(f"stopped by {stopped}; the entities finished so far are in {best} (under torchrun, and in the "
                      f"shards beside it); resume with: "
                      f"{resume_command(args)}", file=sys.stderr)  # fmt: skip
            else:
                print(f"stopped by {stopped} before training began; nothing was saved (files already there are "
                      "unchanged); run the command again", file=sys.stderr)  # fmt: skip
            return 128 + stopped.signal_number


def run(args: argparse.Namespace) -> int:
    try:
        # Fleet mode's own default is the small per-entity model it was measured with (docs/results.md).
        preset = args.preset or ("fleet" if args.per_entity else None)
        config = config_from_flags(args, preset, args.dataset)
        device_type = resolve_device(config.device).type
        if config.amp and device_type != "cuda":
            print(f"note: --amp applies on CUDA only; on {device_type} training runs in float32", file=sys.stderr)
        entities = [name.strip() for name in args.entities.split(",")] if args.entities else None
        train(args.dataset, args.data_dir, config, args.output_dir, per_entity=args.per_entity, entity=args.entity,
              entities=entities, jobs=args.jobs, normalisation=args.normalisation, resume=args.resume,
              save_every=args.save_every, progress=not args.no_progress)  # fmt: skip
    except UserInputError as error:
        print(error_line(error), file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(error_line(error), file=sys.stderr)
        return 1
    except FleetInterrupted as stopped:
        bundle = fleet_path(args.output_dir, args.dataset)
        shards = None if stopped.rank is None else shard_path(bundle, stopped.rank, "*").name
        saved = bundle if shards is None else f"{bundle} and its shards {shards}"
        print(f"stopped by {stopped}; the finished ones are saved in {saved}; resume with: {resume_command(args)}",
              file=sys.stderr)  # fmt: skip
        return 128 + stopped.signal_number
    except TrainingInterrupted as stopped:
        last = last_checkpoint_path(args.output_dir, dataset_label(args.dataset, args.entity))
        print(f"stopped by {stopped}; the state is saved in {last}; resume with: {resume_command(args)}",
              file=sys.stderr)  # fmt: skip
        return 128 + stopped.signal_number
    return 0


if __name__ == "__main__":
    sys.exit(main())
