"""The alarm panel of trained fleets under the decision rules: train, budget and the default (guarded).

    python bench/alarm_rules.py --data-dir ../shared/data --fleets artifacts/fleet_quality \
        --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. Each
bundle is scored once, with the five baselines of the study beside the model on seed 0, by
evaluation.fleet_report.evaluate_fleet, and the TRAIN/TEST scores are cached in
`{fleets}/alarm_scores/{DATASET}_seed{SEED}.pkl`. Each rule then turns each entity's TRAIN scores
and TEST score stream into flags, causally (model/alarm_rule.py), and the table gives, per dataset,
the mean over entities averaged over seeds of: the share of entities within the flood bound, point
F1 at the rule beside the best-threshold F1 (oracle), event F1, flagged and anomalous share, false
alarm events per 10,000 points; and the study's objective, the mean over datasets of (point F1 +
event F1) / 2. --method scores a baseline instead. The study that chose the budget rule, with its
eight other candidates and its event logic, ran this script at commit 0b543bd (docs/research-log.md,
"The decision rule"); the ramp guard's study, with its second candidate, at commit a50f7e6 (same
page, "... with a ramp guard"). The candidates of the later studies stay selectable: `--rules held2-1000,held1-1000`
(same page, "... with a hold"), `guardedq95-1000,guardedk3-1000` ("The decision rule's budget and guard"),
`guardedt300-1000` ("The decision rule's start"; the shipped rule since, and `guardedt1000-1000` the rule
before it). Every variant opens on the shipped start, as `guarded-1000` does; the studies before that one
ran at their commits (same page).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet_quality import dataset_dir  # noqa: E402
from evaluation.baselines import parse_baselines  # noqa: E402
from evaluation.fleet_report import evaluate_fleet  # noqa: E402
from evaluation.grading import grade  # noqa: E402
from model.alarm_rule import AlarmRule, RuleState  # noqa: E402
from model.fleet import fleet_path  # noqa: E402

CANDIDATES = ("train", "budget-1000", "guarded-1000")
STUDY_BASELINES = ("random", "pca", "iforest", "knn", "kmeans")  # the default set when the study ran


def cached_scores(
    fleets: Path,
    data_dir: Path,
    name: str,
    seed: int,
    every_baseline: bool = False,
    smooth: int | None = None,
    baseline: str | None = None,
    score: str | None = None,
) -> dict:
    """entity -> {labels, window (TSB-AD's), train: {method: scores}, test: {method: scores}}, computed once per
    bundle: the model and, on seed 0, the study's five baselines, or with every_baseline every baseline of the
    panel (`{DATASET}_seed{SEED}_all.pkl`; SMD's reference ones take most of an hour); with baseline, the model
    and that one baseline, fitted with this seed (`..._{NAME}.pkl`); with smooth, the model alone at that span
    instead of its stored one (`..._smooth{N}.pkl`; 0: unsmoothed), and with score too, the model scoring
    that way (evaluate.py --score; `..._{SCORE}_smooth{N}.pkl`)."""
    if every_baseline:
        suffix, baselines = "_all", parse_baselines("all")
    elif baseline:
        suffix, baselines = f"_{baseline}", (baseline,)
    elif smooth is not None:
        suffix, baselines = f"_{score}_smooth{smooth}" if score else f"_smooth{smooth}", ()
    else:
        suffix, baselines = "", STUDY_BASELINES if seed == 0 else ()
    cache = fleets / "alarm_scores" / f"{name}_seed{seed}{suffix}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    evaluation = evaluate_fleet(fleet_path(fleets / f"{name}_seed{seed}", name), name, dataset_dir(data_dir, name),
                                baselines=baselines, device="cpu", seed=seed, whole_series=False, smooth=smooth,
                                score=score if smooth is not None else None,
                                jobs=1 if every_baseline else 2)  # fmt: skip
    rows = {e.entity: {"labels": e.labels, "window": e.metrics["model"]["tsb_vus_window"], "train": e.train,
                       "test": e.test} for e in evaluation.entities}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def candidate_decision(rule: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flags and thresholds of `train`, `budget-W` or `guarded-W` (W recent scores), as model/alarm_rule.py
    makes them; the studied variants of the guarded rule (docs/research-log.md) by `variant_decision`:
    `heldK-W` (an open alarm held while above max(q, m + K spreads)), `guardedqQ-W` (the budget's Q % quantile)
    and `guardedkK-W` (a guard of K spreads); `guardedtT-W` by `short_start_decision`."""
    kind, _, window = rule.partition("-")
    if kind.startswith("held"):
        return variant_decision(int(window), train, test, hold=float(kind[4:]))
    if kind.startswith("guardedq"):
        return variant_decision(int(window), train, test, quantile=float(kind[8:]) / 100)
    if kind.startswith("guardedk"):
        return variant_decision(int(window), train, test, spreads=float(kind[8:]))
    if kind.startswith("guardedt"):
        return short_start_decision(int(window), train, test, int(kind[8:]))
    flags, thresholds, _ = AlarmRule.fit(train, kind, 99.0, int(window or 1)).flags(test)
    return flags, thresholds


def variant_decision(
    window: int,
    train: np.ndarray,
    test: np.ndarray,
    quantile: float = 0.9,
    spreads: float = 2.0,
    hold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The guarded rule with another budget quantile or guard width, or with a hold, point by point. The
    defaults are the rule the studies varied, at two spreads; the shipped guard is three (`guardedk3-W`)."""
    rule = AlarmRule.fit(train, "guarded", 99.0, window)
    budget, q25, median, q75 = rule.recent_quantiles(test, (quantile, 0.25, 0.5, 0.75))
    on = np.fmax(np.fmax(rule.threshold, budget), rule.guard(median, q25, q75, spreads))
    off = on if hold is None else np.fmax(rule.threshold, rule.guard(median, q25, q75, hold))
    flags, effective, held = np.zeros(len(test), np.uint8), on.copy(), False
    for t, score in enumerate(np.asarray(test, dtype=np.float64)):
        effective[t] = off[t] if held else on[t]
        held = bool(np.isfinite(score) and score > effective[t])
        flags[t] = held or not np.isfinite(score)
    return flags, effective


def short_start_decision(window: int, train: np.ndarray, test: np.ndarray, tail: int) -> tuple[np.ndarray, np.ndarray]:
    """The shipped guarded rule whose recent window starts TEST with only the last `tail` TRAIN scores (0: none)
    and grows with the TEST scores up to `window`; q and TRAIN's spread still come from every TRAIN score."""
    rule = AlarmRule.fit(train, "guarded", 99.0, window)
    flags, thresholds, _ = rule.flags(test, RuleState(rule.train_tail[max(len(rule.train_tail) - tail, 0) :]))
    return flags, thresholds


def fleet_means(rows: dict, rule: str, method: str) -> dict:
    """Means over the entities of one fleet, each graded by evaluation/grading.py: the flood bound, shares and
    false events over all, the F1s over those with both classes in TEST."""
    records = []
    for entity in rows.values():
        if method not in entity["test"]:
            continue
        labels, train, test = entity["labels"], entity["train"][method], entity["test"][method]
        graded = grade(labels, train, test, *candidate_decision(rule, train, test))
        record = {key: graded.alarms[key] for key in
                  ("within_flag_bound", "flagged_share", "anomaly_share", "false_alarm_events_per_10k")}  # fmt: skip
        if graded.two_classes:
            record |= {"f1": graded.alarms["f1"], "event_f1": graded.alarms["event_f1"],
                       "best_f1": graded.ranking["best_f1"]}  # fmt: skip
        records.append(record)
    return pd.DataFrame(records).mean(numeric_only=False).to_dict()


def seed_means(fleets: list[dict], rule: str, method: str) -> dict:
    """fleet_means of each seed's fleet, averaged over the seeds."""
    graded = [fleet_means(rows, rule, method) for rows in fleets]
    return {key: float(np.mean([g[key] for g in graded])) for key in graded[0]}


def table(results: dict, datasets: list[str], rules: list[str]) -> list[str]:
    lines = ["| rule | objective | " + " | ".join(f"{d} within bound / F1 (best) / event F1 / flagged (anom.) / "
                                                  f"false ev. per 10k" for d in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]  # fmt: skip
    for rule in rules:
        cells = [results[(d, rule)] for d in datasets]
        objective = np.mean([(c["f1"] + c["event_f1"]) / 2 for c in cells])
        shown = [f"{c['within_flag_bound']:.2f} / {c['f1']:.3f} ({c['best_f1']:.3f}) / {c['event_f1']:.3f} / "
                 f"{c['flagged_share']:.3f} ({c['anomaly_share']:.3f}) / {c['false_alarm_events_per_10k']:.1f}"
                 for c in cells]  # fmt: skip
        lines.append(f"| {rule} | {objective:.3f} | " + " | ".join(shown) + " |")
    return lines


def method_table(args: argparse.Namespace, rule: str) -> list[str]:
    """One row per method under `rule`: per dataset, within bound / point F1 at the rule / event F1 / false events
    per 10k (the model: mean over --seeds; each baseline: seed 0)."""
    lines = [f"rule {rule}; per dataset: within bound / F1 at the rule / event F1 / false events per 10k",
             "| method | " + " | ".join(args.datasets) + " |", "|---|" + "---|" * len(args.datasets)]  # fmt: skip
    every = {name: cached_scores(args.fleets, args.data_dir, name, 0, every_baseline=True) for name in args.datasets}
    model = {name: [cached_scores(args.fleets, args.data_dir, name, seed) for seed in args.seeds]
             for name in args.datasets}  # fmt: skip
    first_entity = next(iter(every[args.datasets[0]].values()))
    for method in first_entity["test"]:
        cells = []
        for name in args.datasets:
            mean = seed_means(model[name] if method == "model" else [every[name]], rule, method)
            cells.append(f"{mean['within_flag_bound']:.2f} / {mean['f1']:.3f} / {mean['event_f1']:.3f} / "
                         f"{mean['false_alarm_events_per_10k']:.1f}")  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def fleet_scores_parser(description: str) -> argparse.ArgumentParser:
    """The flags of a bench that reads the cached scores of the fleets: where the data and the fleets are, which
    datasets and seeds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fleets", type=Path, default=Path("artifacts/fleet_quality"))
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = fleet_scores_parser(__doc__.splitlines()[0])
    parser.add_argument("--rules", default=",".join(CANDIDATES), help="comma-separated: train, budget-W, guarded-W")
    parser.add_argument("--method", default="model",
                        help="model, or a baseline: on seed 0 from the panel's cache, on other --seeds fitted with "
                        "that seed beside the model")  # fmt: skip
    parser.add_argument("--every-method", action="store_true",
                        help="instead: the model (the --seeds) and every baseline of the panel (seed 0) under "
                        "the first of --rules, one row each")  # fmt: skip
    args = parser.parse_args(argv)
    rules = args.rules.split(",")
    if args.every_method:
        print("\n".join(method_table(args, rules[0])))
        return 0
    seeds = args.seeds
    every = args.method not in ("model", *STUDY_BASELINES)
    results = {}
    for name in args.datasets:
        fleets = [cached_scores(args.fleets, args.data_dir, name, seed, every)
                  if seed == 0 or args.method == "model"
                  else cached_scores(args.fleets, args.data_dir, name, seed, baseline=args.method)
                  for seed in seeds]  # fmt: skip
        for rule in rules:
            results[(name, rule)] = seed_means(fleets, rule, args.method)
    print(f"method {args.method}, seeds {' '.join(map(str, seeds))}")
    print("\n".join(table(results, args.datasets, rules)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
