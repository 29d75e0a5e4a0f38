"""The default score across time scales: the reconstruction error smoothed over one span, or several joined.

    python bench/score_scales.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. Each
bundle's model is scored once unsmoothed (`evaluate.py --per-entity --smooth 0`) and its TRAIN/TEST
errors cached by bench/alarm_rules.py's `cached_scores` (`{fleets}/alarm_scores/..._smooth0.pkl`); every
candidate then smooths them with model/scoring.py's centred moving average. A candidate is one span
(`sK`; `s50` is the shipped score) or several spans each z-scored with its own TRAIN mean and standard
deviation, then summed (`sumA+B`) or maxed (`maxA+B`). Per dataset: ROC-AUC / PR-AUC / TSB-AD VUS-PR
(entities with both classes in TEST), and at the shipped decision rule the share of entities within
the flood bound / point F1 / event F1; means over entities averaged over seeds. --versus REF adds, per
candidate and seed, on how many graded entities it beats REF on VUS-PR and on event F1. The study it
ran: docs/research-log.md, "The default score across time scales".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import cached_scores, candidate_decision, fleet_scores_parser  # noqa: E402
from evaluation.grading import Grade, grade  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402
from runtime.errors import UserInputError  # noqa: E402

CANDIDATES = ("s50", "s10", "sum1+50", "max1+50", "sum1+10+50+100")
SHIPPED_RULE = "guarded-1000"
JOINS = {"sum": np.sum, "max": np.max}


def candidate_scores(candidate: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TRAIN and TEST scores of `sK`, `sumA+B+...` or `maxA+B+...` from the unsmoothed ones."""
    if candidate.startswith("s") and candidate[1:].isdigit():
        span = int(candidate[1:])
        return smooth_scores(train, span), smooth_scores(test, span)
    join, spans = candidate[:3], candidate[3:].split("+")
    if join not in JOINS or not all(span.isdigit() for span in spans):
        raise UserInputError(f"unknown candidate {candidate!r}; use sK, sumA+B+... or maxA+B+... (K, A, B: spans)")
    parts_train, parts_test = [], []
    for span in map(int, spans):
        smoothed_train, smoothed_test = smooth_scores(train, span), smooth_scores(test, span)
        mean, std = float(np.mean(smoothed_train)), float(np.std(smoothed_train)) or 1.0
        parts_train.append((smoothed_train - mean) / std)
        parts_test.append((smoothed_test - mean) / std)
    return JOINS[join](parts_train, axis=0), JOINS[join](parts_test, axis=0)


def graded_entities(rows: dict, candidate: str) -> dict[str, Grade]:
    """Each entity of one fleet graded under `candidate`, at the shipped rule fitted on its own TRAIN scores."""
    graded = {}
    for entity, row in rows.items():
        train, test = candidate_scores(candidate, row["train"]["model"], row["test"]["model"])
        graded[entity] = grade(row["labels"], train, test, *candidate_decision(SHIPPED_RULE, train, test),
                               tsb_window=row["window"])  # fmt: skip
    return graded


def fleet_means(graded: dict[str, Grade]) -> dict:
    records = []
    for result in graded.values():
        record = {"within_flag_bound": result.alarms["within_flag_bound"]}
        if result.two_classes:
            record |= {key: result.ranking[key] for key in ("roc_auc", "pr_auc", "tsb_vus_pr")}
            record |= {"f1": result.alarms["f1"], "event_f1": result.alarms["event_f1"]}
        records.append(record)
    return pd.DataFrame(records).mean().to_dict()


def wins(graded: dict[str, Grade], reference: dict[str, Grade], key: str) -> int:
    """Graded entities on which `graded` beats `reference` on `key` (tsb_vus_pr or event_f1)."""
    def value(result: Grade) -> float:
        return result.ranking[key] if key in result.ranking else result.alarms[key]

    return sum(value(graded[e]) > value(reference[e]) for e in graded if graded[e].two_classes)


def main(argv: list[str] | None = None) -> int:
    parser = fleet_scores_parser(__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--versus", default=None, help="a candidate to count per-entity wins against")
    args = parser.parse_args(argv)
    candidates = args.candidates.split(",")
    fleets = {(name, seed): cached_scores(args.fleets, args.data_dir, name, seed, smooth=0)
              for name in args.datasets for seed in args.seeds}  # fmt: skip
    print("| candidate | objective | " + " | ".join(f"{name} ROC / PR / VUS-PR / within bound / F1 / event F1"
                                                    for name in args.datasets) + " |")  # fmt: skip
    print("|---|---|" + "---|" * len(args.datasets))
    grades: dict[tuple[str, str, int], dict[str, Grade]] = {}  # each candidate graded once per fleet

    def graded_once(candidate: str, name: str, seed: int) -> dict[str, Grade]:
        if (candidate, name, seed) not in grades:
            grades[(candidate, name, seed)] = graded_entities(fleets[(name, seed)], candidate)
        return grades[(candidate, name, seed)]

    counts = []
    for candidate in candidates:
        cells, ranking = [], []
        for name in args.datasets:
            per_seed = []
            for seed in args.seeds:
                graded = graded_once(candidate, name, seed)
                per_seed.append(fleet_means(graded))
                if args.versus and candidate != args.versus:
                    reference = graded_once(args.versus, name, seed)
                    counts.append(f"{candidate} against {args.versus}, {name} seed {seed}: higher VUS-PR on "
                                  f"{wins(graded, reference, 'tsb_vus_pr')}, higher event F1 on "
                                  f"{wins(graded, reference, 'event_f1')} of "
                                  f"{sum(g.two_classes for g in graded.values())} graded entities")  # fmt: skip
            mean = {key: float(np.mean([m[key] for m in per_seed])) for key in per_seed[0]}
            ranking += [mean["roc_auc"], mean["pr_auc"], mean["tsb_vus_pr"]]
            cells.append(f"{mean['roc_auc']:.3f} / {mean['pr_auc']:.3f} / {mean['tsb_vus_pr']:.3f} / "
                         f"{mean['within_flag_bound']:.2f} / {mean['f1']:.3f} / {mean['event_f1']:.3f}")  # fmt: skip
        print(f"| {candidate} | {np.mean(ranking):.4f} | " + " | ".join(cells) + " |", flush=True)
    print("\n".join(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
