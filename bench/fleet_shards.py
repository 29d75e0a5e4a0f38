"""What a torchrun rank's shard save costs per entity, beside what training the entity costs.

    python bench/fleet_shards.py --data-dir ../shared/data --dataset MSL --entities 4 --sizes 1 10 100 500

Trains the first --entities entities of the dataset with --preset fleet in this process on one thread
(as `--jobs 1` does), once without saving and once saving after every entity as a torchrun rank does
(model.fleet.ShardWriter), alternating --rounds times after one warm-up entity, and prints the seconds
per entity of each. A save rewrites the rank's last shard file, which holds up to SHARD_SIZE entities:
the save alone is then timed for files of --sizes entities (copies of one trained entity's record;
every entity of a dataset has a model of the same size), to show what that bound buys.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_factory.entities import entity_names  # noqa: E402
from model.config import DetectorConfig, preset_values  # noqa: E402
from model.detector import Detector  # noqa: E402
from model.fleet import SHARD_SIZE, Fleet, ShardWriter, prepare_fleet, shard_path, train_claimed  # noqa: E402


def seconds_per_entity(
    dataset: str, data: Path, names: list[str], config: DetectorConfig, bundle: Path | None
) -> float:
    """Train `names` one after another; with `bundle`, save rank 0's shards beside it after every entity."""
    fleet = prepare_fleet(dataset, data, names, config)
    save = None if bundle is None else ShardWriter(bundle, 0)
    started = time.perf_counter()
    train_claimed(fleet, dataset, data, names, itertools.count().__next__, save=save)
    return (time.perf_counter() - started) / len(names)


def shard_save(trained: Fleet, size: int, path: Path, repeats: int = 3) -> tuple[float, int]:
    """Best seconds of `repeats` saves of a shard holding `size` entities, and its bytes."""
    record = next(iter(trained.detectors.values())).to_checkpoint()
    shard = trained.without_entities()
    shard.order = [f"copy-{index}" for index in range(size)]
    shard.detectors = {name: Detector.from_checkpoint(record) for name in shard.order}  # each its own tensors
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        shard.save(path)
        best = min(best, time.perf_counter() - started)
    return best, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="MSL")
    parser.add_argument("--entities", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 100, 500])
    args = parser.parse_args()
    config = DetectorConfig(**{**preset_values("fleet", args.dataset), "device": "cpu"}).validate()
    names = entity_names(args.dataset, args.data_dir)
    warm_up, measured = names[:1], names[1 : 1 + args.entities]
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / f"{args.dataset}_fleet.pth"
        seconds_per_entity(args.dataset, args.data_dir, warm_up, config, None)
        timings: dict[str, list[float]] = {"no save": [], "shard save after each": []}
        for _ in range(args.rounds):
            timings["no save"].append(seconds_per_entity(args.dataset, args.data_dir, measured, config, None))
            timings["shard save after each"].append(seconds_per_entity(args.dataset, args.data_dir, measured, config,
                                                                       bundle))  # fmt: skip
        print(f"{args.dataset}, --preset fleet, {len(measured)} entities ({measured[0]}..{measured[-1]}), one thread")
        print("| training | s per entity (best of rounds) | rounds |")
        print("|---|---|---|")
        for what, values in timings.items():
            print(f"| {what} | {min(values):.2f} | {', '.join(f'{value:.2f}' for value in values)} |")
        trained = Fleet.load(shard_path(bundle, 0))
        print(f"\none save of a shard file of N entities (a rank's part holds at most {SHARD_SIZE})")
        print("| N | MiB | s (best of 3) |")
        print("|---|---|---|")
        for size in args.sizes:
            seconds, size_bytes = shard_save(trained, size, shard_path(bundle, 0))
            print(f"| {size} | {size_bytes / 2**20:.1f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
