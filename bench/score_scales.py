"""The default score across time scales: the reconstruction error smoothed over one span, or several joined.

    python bench/score_scales.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. Each
bundle's model is scored once unsmoothed (`evaluate.py --per-entity --smooth 0`) and its TRAIN/TEST
errors cached by bench/alarm_rules.py's `cached_scores` (`{fleets}/alarm_scores/..._smooth0.pkl`); every
candidate then smooths them with model/scoring.py's centred moving average. A candidate is one span
(`sK`; `s50` is the shipped score) or several spans each z-scored with its own TRAIN mean and standard
deviation, then summed (`sumA+B`) or maxed (`maxA+B`). A `d` or `p` before a span reads the association
discrepancy or the paper's criterion instead of the reconstruction error (`d50`, `sum50+d50`; scored once
more, `--score discrepancy` / `paper`, and cached beside). Per dataset: ROC-AUC / PR-AUC / TSB-AD VUS-PR
(entities with both classes in TEST), and at the shipped decision rule the share of entities within
the flood bound / point F1 / event F1; means over entities averaged over seeds. --versus REF adds, per
candidate and seed, on how many graded entities it beats REF on VUS-PR and on event F1. The
studies it ran: docs/research-log.md, "The default score across time scales" and "The association
discrepancy, per entity".
"""

from __future__ import annotations

import re
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
# A term's letter names the unsmoothed score it smooths: none or r, the reconstruction error; d, the
# association discrepancy; p, the paper's criterion (evaluate.py --score reconstruction/discrepancy/paper).
SCORE_OF = {"r": "reconstruction", "d": "discrepancy", "p": "paper"}
TERM = re.compile(r"([rdp]?)(\d+)")


def _terms(candidate: str) -> tuple[str | None, list[tuple[str, int]]]:
    """`sK`/`dK`/`pK` -> (None, [(letter, K)]); `sumT+T...`/`maxT+T...` -> (join, its terms); a term is K, rK, dK
    or pK."""
    single = TERM.fullmatch(candidate[1:]) if candidate[:1] in ("s", "d", "p") else None
    if single and not single.group(1):
        return None, [("r" if candidate[0] == "s" else candidate[0], int(single.group(2)))]
    join, parts = candidate[:3], candidate[3:].split("+")
    matches = [TERM.fullmatch(part) for part in parts]
    if join not in JOINS or not all(matches):
        raise UserInputError(f"unknown candidate {candidate!r}; use sK, dK, pK, sumA+B+... or maxA+B+... (K: a span; "
                             "A, B: a span, d or p before it for the discrepancy or the paper score)")  # fmt: skip
    return join, [(match.group(1) or "r", int(match.group(2))) for match in matches]


def scores_needed(candidates: list[str]) -> set[str]:
    """The unsmoothed scores (reconstruction, discrepancy, paper) the candidates read."""
    return {SCORE_OF[letter] for candidate in candidates for letter, _ in _terms(candidate)[1]}


def candidate_scores(candidate: str, train: dict[str, np.ndarray], test: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """TRAIN and TEST scores of a candidate from the unsmoothed ones, by score name (SCORE_OF's values).
    A join z-scores each term with its own TRAIN mean and standard deviation."""
    join, terms = _terms(candidate)
    smoothed = [(smooth_scores(train[SCORE_OF[letter]], span), smooth_scores(test[SCORE_OF[letter]], span))
                for letter, span in terms]  # fmt: skip
    if join is None:
        return smoothed[0]
    parts_train, parts_test = [], []
    for smoothed_train, smoothed_test in smoothed:
        mean, std = float(np.mean(smoothed_train)), float(np.std(smoothed_train)) or 1.0
        parts_train.append((smoothed_train - mean) / std)
        parts_test.append((smoothed_test - mean) / std)
    return JOINS[join](parts_train, axis=0), JOINS[join](parts_test, axis=0)


def graded_entities(rows: dict[str, dict], candidate: str) -> dict[str, Grade]:
    """Each entity of one fleet graded under `candidate`, at the shipped rule fitted on its own TRAIN scores.
    rows: score name -> the fleet's cached rows (bench/alarm_rules.py's cached_scores)."""
    graded = {}
    first = next(iter(rows.values()))
    for entity, row in first.items():
        train, test = candidate_scores(candidate, {score: rows[score][entity]["train"]["model"] for score in rows},
                                       {score: rows[score][entity]["test"]["model"] for score in rows})  # fmt: skip
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
    needed = scores_needed(candidates)
    fleets = {(name, seed): {score: cached_scores(args.fleets, args.data_dir, name, seed, smooth=0,
                                                  score=None if score == "reconstruction" else score)
                             for score in needed}
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
