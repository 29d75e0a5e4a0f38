"""The decision-rule study: candidate rules on the saved per-entity scores of trained fleets.

    python bench/alarm_rules.py --data-dir ../shared/data --fleets artifacts/fleet_quality \
        --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. Each
bundle is scored once, with the default baselines beside the model on seed 0, by
evaluation.fleet_report.evaluate_fleet, and the TRAIN/TEST scores are cached in
`{fleets}/alarm_scores/{DATASET}_seed{SEED}.pkl`. Every candidate (docs/research-log.md, "The
decision rule") then turns each entity's TRAIN scores and TEST score stream into flags, causally,
and the table gives, per dataset, the mean over entities averaged over seeds of: the share of
entities within the flood bound, point F1 at the rule beside the best-threshold F1 (oracle), event
F1, flagged and anomalous share, false alarm events per 10,000 points; and the selection's
objective, the mean over datasets of (point F1 + event F1) / 2. --method scores a baseline instead.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet_quality import dataset_dir  # noqa: E402
from evaluation.alarm_metrics import alarm_metrics, within_alarm_budget  # noqa: E402
from evaluation.fleet_report import evaluate_fleet  # noqa: E402
from evaluation.metrics import best_f1  # noqa: E402
from evaluation.thresholds import pot_threshold  # noqa: E402
from model.fleet import fleet_path  # noqa: E402

FAMILIES = ("level", "robust", "dspot", "budget")
WINDOWS = (1000, 4000)
CANDIDATES = ("train", "pot", *(f"{family}-{window}" for family in FAMILIES for window in WINDOWS))
STUDY_BASELINES = ("random", "pca", "iforest", "knn", "kmeans")  # the default set when the study ran


def cached_scores(fleets: Path, data_dir: Path, name: str, seed: int) -> dict:
    """entity -> {labels, train: {method: scores}, test: {method: scores}}, computed once per bundle."""
    cache = fleets / "alarm_scores" / f"{name}_seed{seed}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    evaluation = evaluate_fleet(fleet_path(fleets / f"{name}_seed{seed}", name), name, dataset_dir(data_dir, name),
                                baselines=STUDY_BASELINES if seed == 0 else (), device="cpu", seed=seed,
                                whole_series=False, jobs=2)  # fmt: skip
    rows = {e.entity: {"labels": e.labels, "train": e.train, "test": e.test} for e in evaluation.entities}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def trailing(train: np.ndarray, test: np.ndarray, window: int, statistic: str, *args: float) -> np.ndarray:
    """The statistic of the `window` scores before each TEST point, the last TRAIN scores filling the start."""
    joined = pd.Series(np.concatenate([train[-window:], test]).astype(np.float64))
    values = getattr(joined.rolling(window, min_periods=1), statistic)(*args).shift(1).to_numpy()
    return values[min(window, len(train)) :]


def candidate_flags(rule: str, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    q = np.percentile(train, 99)
    if rule == "train":
        return test > q
    if rule == "pot":
        return test > pot_threshold(train)
    family, window = rule.rsplit("-", 1)
    window, m0 = int(window), np.median(train)
    if family == "level":
        return test > q * np.maximum(1, trailing(train, test, window, "median") / m0) if m0 > 0 else test > q
    if family == "robust":
        r0 = (np.percentile(train, 75) - np.percentile(train, 25)) / 1.349
        if r0 <= 0:
            return test > q
        recent = (trailing(train, test, window, "quantile", 0.75) - trailing(train, test, window, "quantile", 0.25))
        spread = recent / 1.349
        return test > np.maximum(q, trailing(train, test, window, "median") + (q - m0) / r0 * np.maximum(spread, r0))
    if family == "budget":
        return test > np.maximum(q, trailing(train, test, window, "quantile", 0.9))
    if family == "dspot":
        return dspot_flags(train, test, window)
    raise ValueError(rule)


def dspot_flags(train: np.ndarray, test: np.ndarray, depth: int) -> np.ndarray:
    """DSPOT's drift: each score minus the mean of the last `depth` un-flagged ones; the tail fitted once."""
    drift = pd.Series(train.astype(np.float64)).rolling(depth, min_periods=1).mean().shift(1).to_numpy()[1:]
    threshold = pot_threshold(train[1:] - drift)
    recent = collections.deque(train[-depth:].astype(np.float64).tolist(), maxlen=depth)
    total, flags = sum(recent), np.zeros(len(test), dtype=bool)
    for index, score in enumerate(test.astype(np.float64)):
        if score - total / len(recent) > threshold:
            flags[index] = True
            continue
        if len(recent) == depth:
            total -= recent[0]
        recent.append(score)
        total += score
    return flags


def event_logic(flags: np.ndarray, gap: int, min_length: int) -> np.ndarray:
    """Merge alarm events less than `gap` points apart, then drop events shorter than `min_length`."""
    flags = flags.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))).reshape(-1, 2)
    for (_, end), (start, _) in zip(edges[:-1], edges[1:], strict=True):
        if start - end < gap:
            flags[end:start] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))).reshape(-1, 2)
    for start, end in edges:
        if end - start < min_length:
            flags[start:end] = False
    return flags


def debounced(flags: np.ndarray, points: int) -> np.ndarray:
    """Causal debounce: a point stays flagged only when it and the `points - 1` before it are all flagged."""
    if points <= 1:
        return flags
    run = np.zeros(len(flags), dtype=np.int64)  # consecutive flags ending at each point
    for index, flagged in enumerate(flags):
        run[index] = (run[index - 1] + 1 if index else 1) if flagged else 0
    return flags & (run >= points)


def grade(rows: dict, rule: str, method: str, gap: int = 0, min_length: int = 0, debounce: int = 0) -> dict:
    """Means over the entities of one fleet: compliance over all, the F1s over those with anomalies."""
    records = []
    for entity in rows.values():
        if method not in entity["test"]:
            continue
        labels, train, test = entity["labels"], entity["train"][method], entity["test"][method]
        flags = debounced(event_logic(candidate_flags(rule, train, test), gap, min_length), debounce)
        alarms = alarm_metrics(labels, flags)
        record = {"compliant": within_alarm_budget(alarms["flagged_share"], alarms["anomaly_share"]),
                  "flagged": alarms["flagged_share"], "anomalous": alarms["anomaly_share"],
                  "false_events_10k": alarms["false_alarm_events_per_10k"]}  # fmt: skip
        if 0 < labels.sum() < len(labels):
            best = entity.setdefault("best_f1", {})
            if method not in best:
                best[method] = best_f1(labels, test)
            record |= {"f1": alarms["f1"], "event_f1": alarms["event_f1"], "best_f1": best[method]}
        records.append(record)
    return pd.DataFrame(records).mean(numeric_only=False).to_dict()


def table(results: dict, datasets: list[str], rules: list[str]) -> list[str]:
    lines = ["| rule | objective | " + " | ".join(f"{d} within bound / F1 (best) / event F1 / flagged (anom.) / "
                                                  f"false ev. per 10k" for d in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]  # fmt: skip
    for rule in rules:
        cells = [results[(d, rule)] for d in datasets]
        objective = np.mean([(c["f1"] + c["event_f1"]) / 2 for c in cells])
        shown = [f"{c['compliant']:.2f} / {c['f1']:.3f} ({c['best_f1']:.3f}) / {c['event_f1']:.3f} / "
                 f"{c['flagged']:.3f} ({c['anomalous']:.3f}) / {c['false_events_10k']:.1f}" for c in cells]  # fmt: skip
        lines.append(f"| {rule} | {objective:.3f} | " + " | ".join(shown) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fleets", type=Path, default=Path("artifacts/fleet_quality"))
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rules", default=",".join(CANDIDATES), help="comma-separated candidates")
    parser.add_argument("--method", default="model", help="model, or a baseline (scored on seed 0 only)")
    parser.add_argument("--gap", type=int, default=0, help="merge alarm events less than this many points apart")
    parser.add_argument("--min-length", type=int, default=0, help="drop alarm events shorter than this")
    parser.add_argument("--debounce", type=int, default=0, help="flag only after this many flagged points in a row")
    args = parser.parse_args(argv)
    rules = args.rules.split(",")
    seeds = args.seeds if args.method == "model" else [0]
    results = {}
    for name in args.datasets:
        fleets = [cached_scores(args.fleets, args.data_dir, name, seed) for seed in seeds]
        for rule in rules:
            graded = [grade(rows, rule, args.method, args.gap, args.min_length, args.debounce) for rows in fleets]
            results[(name, rule)] = {key: float(np.mean([g[key] for g in graded])) for key in graded[0]}
    print(f"method {args.method}, seeds {' '.join(map(str, seeds))}, event logic: gap {args.gap}, "
          f"min length {args.min_length}, debounce {args.debounce}")  # fmt: skip
    print("\n".join(table(results, args.datasets, rules)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
