"""The model's score joined with TRAIN-fitted distances, per entity: the study's candidates graded on
trained fleets (docs/research-log.md, "Ranking: the model's score joined with a TRAIN-fitted distance").

    python bench/score_ensembles.py --data-dir ../shared/data --fleets artifacts/fleet_quality \
        --datasets MSL SMAP SMD --seeds 0 1 2

The model's scores come from bench/alarm_rules.py's cache (`{fleets}/alarm_scores/`); the four
components' scores, fitted on each entity's TRAIN by evaluation.fleet_report.evaluate_fleet on the
seed-0 bundle (they do not depend on the model's seed), are cached in `{fleets}/ensemble_components/`.
A candidate's score is the sum of its parts, each standardised by its own TRAIN scores' mean and std.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import cached_scores, candidate_flags  # noqa: E402
from bench.fleet_quality import dataset_dir  # noqa: E402
from evaluation.alarm_metrics import alarm_metrics, within_alarm_budget  # noqa: E402
from evaluation.fleet_report import evaluate_fleet  # noqa: E402
from evaluation.metrics import pr_auc, roc_auc  # noqa: E402
from evaluation.tsb_vus import tsb_vus  # noqa: E402
from model.fleet import fleet_path  # noqa: E402

COMPONENTS = {"nn": "sarfraz_nn", "spca": "sarfraz_pca", "pca": "pca", "kmeans": "kmeans"}
CANDIDATES = ("model", "model+nn", "model+spca", "model+pca", "model+kmeans", "model+nn+spca")
SHIPPED_RULE = "budget-1000"


def component_scores(fleets: Path, data_dir: Path, name: str) -> dict:
    """entity -> {train, test: {component: scores}, window}, fitted once on the seed-0 bundle."""
    cache = fleets / "ensemble_components" / f"{name}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    evaluation = evaluate_fleet(fleet_path(fleets / f"{name}_seed0", name), name, dataset_dir(data_dir, name),
                                baselines=tuple(COMPONENTS.values()), device="cpu", seed=0,
                                whole_series=False, jobs=2)  # fmt: skip
    rows = {e.entity: {"train": {k: e.train[v] for k, v in COMPONENTS.items()},
                       "test": {k: e.test[v] for k, v in COMPONENTS.items()},
                       "window": e.metrics["model"].get("tsb_vus_window")} for e in evaluation.entities}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def standardised(train: np.ndarray, scores: np.ndarray) -> np.ndarray:
    std = float(train.std())
    return (scores - float(train.mean())) / (std if std > 0 else 1.0)


def candidate_scores(candidate: str, train: dict, test: dict) -> tuple[np.ndarray, np.ndarray]:
    parts = candidate.split("+")
    return (sum(standardised(train[p], train[p]) for p in parts),
            sum(standardised(train[p], test[p]) for p in parts))  # fmt: skip


def grade(model_rows: dict, components: dict, candidate: str) -> dict:
    """Means over the entities of one fleet: ranking over entities with both classes, alarms over all."""
    records = []
    for entity, row in model_rows.items():
        labels = row["labels"]
        train = {"model": row["train"]["model"], **components[entity]["train"]}
        test = {"model": row["test"]["model"], **components[entity]["test"]}
        train_scores, test_scores = candidate_scores(candidate, train, test)
        alarms = alarm_metrics(labels, candidate_flags(SHIPPED_RULE, train_scores, test_scores))
        record = {"within_bound": within_alarm_budget(alarms["flagged_share"], alarms["anomaly_share"])}
        if 0 < labels.sum() < len(labels):
            window = components[entity]["window"]
            record |= {"roc_auc": roc_auc(labels, test_scores), "pr_auc": pr_auc(labels, test_scores),
                       "tsb_vus_pr": tsb_vus(labels, test_scores, window=window)["vus_pr"],
                       "event_f1": alarms["event_f1"]}  # fmt: skip
        records.append(record)
    return pd.DataFrame(records).astype(float).mean().to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fleets", type=Path, default=Path("artifacts/fleet_quality"))
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    metrics = ("roc_auc", "pr_auc", "tsb_vus_pr", "within_bound", "event_f1")
    header = "| candidate | objective | " + " | ".join(f"{d} ROC / PR / VUS-PR / within bound / event F1"
                                                       for d in args.datasets) + " |"  # fmt: skip
    lines = [header, "|---|---|" + "---|" * len(args.datasets)]
    for candidate in args.candidates.split(","):
        cells = []
        for name in args.datasets:
            components = component_scores(args.fleets, args.data_dir, name)
            graded = [grade(cached_scores(args.fleets, args.data_dir, name, seed), components, candidate)
                      for seed in args.seeds]  # fmt: skip
            cells.append({m: float(np.mean([g[m] for g in graded])) for m in metrics})
        objective = np.mean([c[m] for c in cells for m in metrics[:3]])
        shown = [" / ".join(f"{c[m]:.3f}" if m != "within_bound" else f"{c[m]:.2f}" for m in metrics) for c in cells]
        lines.append(f"| {candidate} | {objective:.3f} | " + " | ".join(shown) + " |")
        print(lines[-1], flush=True)
    print(f"seeds {' '.join(map(str, args.seeds))}\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
