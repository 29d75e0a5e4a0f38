"""How close can any threshold rule come to the best-threshold F1? Oracle rules on the fleets' cached scores.

    python bench/rule_ceiling.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

The alarm target "point F1 at the shipped rule at least 0.8x the best-threshold F1 of the same scores"
compares a rule with an oracle that picks each entity's threshold on its TEST labels. This prints,
per dataset, the point F1 (its ratio to that oracle) and the event F1 of rules that cheat in
stated ways, so the target can be read against what is reachable at all:

- `guarded` (shipped): the default decision rule, label-free and causal;
- `train pP`: a fixed threshold at the P-th percentile of each entity's TRAIN scores, the same P for
  every entity; `best train percentile` is the P of the grid with the highest mean F1 per dataset,
  chosen on the TEST labels;
- `share oracle`: each entity flags exactly as many TEST points as it has anomalous ones, its highest
  scores (it knows each entity's anomaly count from the labels, nothing else).

Means over the entities with both classes in TEST, averaged over seeds. The scores come from the cache
of bench/alarm_rules.py (the `--preset fleet` fleets of bench/fleet_quality.py), computed there once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import cached_scores, fleet_scores_parser  # noqa: E402
from evaluation.alarm_metrics import alarm_metrics  # noqa: E402
from evaluation.metrics import best_f1  # noqa: E402
from model.alarm_rule import AlarmRule  # noqa: E402

PERCENTILES = (90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 100.0)


def share_oracle_flags(labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The entity's `labels.sum()` highest TEST scores flagged (ties broken by position)."""
    flags = np.zeros(len(test), dtype=np.uint8)
    flags[np.argsort(-np.nan_to_num(test, nan=np.inf), kind="stable")[: int(labels.sum())]] = 1
    return flags


def entity_rules(labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule's flags on one entity's TEST."""
    finite = train[np.isfinite(train)]
    rules = {"guarded": AlarmRule.fit(train).flags(test)[0]}
    for percentile in PERCENTILES:
        # A non-finite score is flagged, as every rule of the project flags it.
        above = (test > np.percentile(finite, percentile)) | ~np.isfinite(test)
        rules[f"train p{percentile:g}"] = above.astype(np.uint8)
    rules["share oracle"] = share_oracle_flags(labels, test)
    return rules


def dataset_means(fleets: list[dict], method: str) -> tuple[float, dict[str, dict[str, float]]]:
    """(the oracle best F1, rule -> {f1, event_f1, within, flagged}): means over entities (those with both classes
    in TEST), averaged over the fleets (seeds)."""
    best, per_rule = [], {}
    for rows in fleets:
        seed_best, seed_rules = [], {}
        for entity in rows.values():
            labels, train, test = entity["labels"], entity["train"][method], entity["test"][method]
            if labels.min() == labels.max():
                continue
            seed_best.append(best_f1(labels, test))
            for rule, flags in entity_rules(labels, train, test).items():
                metrics = alarm_metrics(labels, flags)
                seed_rules.setdefault(rule, []).append(
                    (metrics["f1"], metrics["event_f1"], metrics["within_flag_bound"], metrics["flagged_share"])
                )
        best.append(np.mean(seed_best))
        for rule, values in seed_rules.items():
            per_rule.setdefault(rule, []).append(np.mean(values, axis=0))
    keys = ("f1", "event_f1", "within", "flagged")
    return float(np.mean(best)), {rule: dict(zip(keys, np.mean(values, axis=0), strict=True))
                                  for rule, values in per_rule.items()}  # fmt: skip


def table(results: dict[str, tuple[float, dict]]) -> list[str]:
    names = list(results)
    header = " | ".join(f"{name} F1 (x best) / event F1 / within bound / flagged" for name in names)
    lines = [f"| rule | {header} |", "|---|" + "---|" * len(names)]
    rules = list(next(iter(results.values()))[1])
    best_train = {name: max((r for r in rules if r.startswith("train")), key=lambda r: results[name][1][r]["f1"])
                  for name in names}  # fmt: skip

    def cell(name: str, rule: str) -> str:
        best, means = results[name]
        return (
            f"{means[rule]['f1']:.3f} ({means[rule]['f1'] / best:.2f}x) / {means[rule]['event_f1']:.3f} / "
            f"{means[rule]['within']:.2f} / {means[rule]['flagged']:.3f}"
        )

    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(cell(name, rule) for name in names) + " |")
    lines.append("| best train percentile, chosen on the labels | "
                 + " | ".join(f"{best_train[n]}: {cell(n, best_train[n])}" for n in names) + " |")  # fmt: skip
    lines.append("| best threshold per entity (oracle) | "
                 + " | ".join(f"{results[n][0]:.3f} (1.00x)" for n in names) + " |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    args = fleet_scores_parser(__doc__.splitlines()[0]).parse_args(argv)
    results = {name: dataset_means([cached_scores(args.fleets, args.data_dir, name, seed) for seed in args.seeds],
                                   "model") for name in args.datasets}  # fmt: skip
    print(f"model, seeds {' '.join(map(str, args.seeds))}; point F1 at each rule (its ratio to the best-threshold "
          "F1) / event F1 / share of entities within the flood bound / flagged share")  # fmt: skip
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
