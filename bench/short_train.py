"""The alarm panel after a short TRAIN: each entity's model trained on the first --rows rows of its TRAIN only.

    python bench/short_train.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2 --rows 500

An operator often has little normal history to train on. This trains one `--preset fleet` Detector
per entity on the first --rows rows of the entity's TRAIN (TEST unchanged), as `train.py
--per-entity` would on such a TRAIN, one thread each, caches each entity's TRAIN and TEST scores
in `{cache}/{DATASET}_rows{ROWS}_seed{SEED}.pkl`, and prints the alarm panel of
bench/alarm_rules.py for each --rules entry: the share of entities within the flood bound, point F1
at the rule (best-threshold F1), event F1, flagged (anomalous) share, false alarm events per 10,000
points; means over entities, averaged over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import CANDIDATES, seed_means, table  # noqa: E402
from bench.fleet_quality import dataset_dir  # noqa: E402
from data_factory.entities import entity_names  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from model.config import DetectorConfig, preset_values  # noqa: E402
from model.detector import Detector  # noqa: E402
from runtime.workers import one_thread  # noqa: E402


def short_train_scores(cache: Path, data_dir: Path, name: str, rows: int, seed: int) -> dict:
    """entity -> {labels, train: {"model": scores}, test: {"model": scores}}, computed once per setting."""
    path = cache / f"{name}_rows{rows}_seed{seed}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    config = DetectorConfig(**{**preset_values("fleet", name), "seed": seed, "device": "cpu"})
    scores = {}
    with one_thread():
        for entity in entity_names(name, dataset_dir(data_dir, name)):
            data = load_dataset(name, dataset_dir(data_dir, name), entity)
            data = dataclasses.replace(data, train=data.train[:rows])
            detector = Detector(config).fit(data)
            scores[entity] = {"labels": data.test_labels, "train": {"model": detector.train_scores_},
                              "test": {"model": detector.score(data.test)}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(scores))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("artifacts/short_train"))
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=500, help="TRAIN rows each entity's model sees (default: 500)")
    parser.add_argument("--rules", default=",".join(CANDIDATES), help="as bench/alarm_rules.py takes them")
    args = parser.parse_args(argv)
    rules = args.rules.split(",")
    results = {}
    for name in args.datasets:
        fleets = [short_train_scores(args.cache, args.data_dir, name, args.rows, seed) for seed in args.seeds]
        for rule in rules:
            results[(name, rule)] = seed_means(fleets, rule, "model")
    print(f"TRAIN cut to its first {args.rows} rows per entity, seeds {' '.join(map(str, args.seeds))}")
    print("\n".join(table(results, args.datasets, rules)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
