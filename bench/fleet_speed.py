"""Wall time and peak memory of training a whole fleet on CPU, and the speed-up from --jobs.

    python bench/fleet_speed.py --data-dir ../shared/data --dataset MSL --jobs 1 2
    python bench/fleet_speed.py --data-dir ../shared/data --dataset MSL --jobs 1 2 --before   # and the old code

Each run trains every entity of the dataset with `--preset fleet` (or --preset) into a fresh
folder, in a child process of its own (so that peak memory is that run's alone), and prints one
row per --jobs value: wall seconds, entities per minute, the speed-up over the first row, and the
peak resident memory of the largest process (the parent or one worker). With --before, the code
before the speed work (bench/before.py) trains the same fleets, alternating with this code, and each
row says which code ran.
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
from model.config import DetectorConfig, preset_values
started = time.perf_counter()
config = DetectorConfig(**{{**preset_values({preset!r}, {dataset!r}), "device": "cpu"}})
options = dict(jobs={jobs}, log=lambda _: None, progress=False)
try:
    from commands.training import train
    options["per_entity"] = True
except ImportError:  # bench/before.py's tree: the fleet had an entry of its own, in model/api.py
    from model.api import train_fleet_to_bundle as train
train({dataset!r}, {data!r}, config, {out!r}, **options)
seconds = time.perf_counter() - started
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_kib": max(own, workers)}}))
"""


def measure(dataset: str, data: Path, preset: str, jobs: int, root: Path = ROOT) -> dict:
    """One fleet training in a child process, with the code of `root` (this tree, or bench/before.py's)."""
    with tempfile.TemporaryDirectory() as out:
        code = CHILD.format(root=str(root), preset=preset, dataset=dataset, data=str(Path(data).resolve()), out=out,
                            jobs=jobs)  # fmt: skip
        # Run from `root`: a package of this tree found through the current folder would shadow the
        # same-named folder of the before tree, which has no __init__.py.
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fleet_rows(dataset: str, data: Path, preset: str, jobs: list[int], before: Path | None) -> list[dict]:
    """For each --jobs value: the before code's run (when `before` is given), then this code's."""
    rows = []
    for count in jobs:
        for code, root in (("before", before), ("ours", ROOT)):
            if root is not None:
                rows.append({"code": code, "jobs": count, **measure(dataset, data, preset, count, root)})
    return rows


def fleet_table(rows: list[dict], n_entities: int) -> list[str]:
    lines = ["| code | --jobs | wall s | entities / min | speed-up over the first row | peak RSS MiB |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    first = rows[0]["seconds"] if rows else 1.0
    for row in rows:
        seconds = row["seconds"]
        lines.append(f"| {row['code']} | {row['jobs']} | {seconds:.0f} | {60 * n_entities / seconds:.1f} | "
                     f"{first / seconds:.2f} | {row['peak_kib'] / 1024:.0f} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.before import before_tree
    from bench.fleet_quality import dataset_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="MSL")
    parser.add_argument("--preset", default="fleet")
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--before", action="store_true", help="also time the code before the speed work")
    args = parser.parse_args(argv)
    data = dataset_dir(args.data_dir, args.dataset)
    n_entities = len(entity_names(args.dataset, data))
    print(f"{args.dataset}: {n_entities} entities, --preset {args.preset}, CPU", flush=True)
    with before_tree() as (tree, note):
        if args.before:
            print(note, flush=True)
        rows = fleet_rows(args.dataset, data, args.preset, args.jobs, tree if args.before else None)
    print("\n".join(fleet_table(rows, n_entities)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
