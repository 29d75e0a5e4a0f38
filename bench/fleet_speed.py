"""Wall time and peak memory of training a whole fleet on CPU, and the speed-up from --jobs.

    python bench/fleet_speed.py --data-dir ../shared/data --dataset MSL --jobs 1 2

Each run trains every entity of the dataset with `--preset fleet` (or --preset) into a fresh
folder, in a child process of its own (so that peak memory is that run's alone), and prints one
row per --jobs value: wall seconds, entities per minute, the speed-up over the first row, and the
peak resident memory of the largest process (the parent or one worker).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_factory.entities import entity_names  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from model.api import train_fleet_to_bundle
from model.config import DetectorConfig, preset_values
started = time.perf_counter()
config = DetectorConfig(**{{**preset_values({preset!r}, {dataset!r}), "device": "cpu"}})
train_fleet_to_bundle({dataset!r}, {data!r}, config, {out!r}, jobs={jobs}, log=lambda _: None, progress=False)
seconds = time.perf_counter() - started
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_kib": max(own, workers)}}))
"""


def measure(dataset: str, data: Path, preset: str, jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        code = CHILD.format(root=str(ROOT), preset=preset, dataset=dataset, data=str(data), out=out, jobs=jobs)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="MSL")
    parser.add_argument("--preset", default="fleet")
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args(argv)
    data = args.data_dir / "SMD" if args.dataset == "SMD" else args.data_dir
    n_entities = len(entity_names(args.dataset, data))
    print(f"{args.dataset}: {n_entities} entities, --preset {args.preset}, CPU")
    print("| --jobs | wall s | entities / min | speed-up | peak RSS MiB |")
    print("|---|---|---|---|---|")
    first = None
    for jobs in args.jobs:
        result = measure(args.dataset, data, args.preset, jobs)
        first = first or result["seconds"]
        print(f"| {jobs} | {result['seconds']:.0f} | {60 * n_entities / result['seconds']:.1f} | "
              f"{first / result['seconds']:.2f} | {result['peak_kib'] / 1024:.0f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
