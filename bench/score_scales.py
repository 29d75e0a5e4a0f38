"""The default score across time scales: the reconstruction error smoothed over one span, or several joined.

    python bench/score_scales.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. Each
bundle is scored once unsmoothed (`evaluate.py --per-entity --smooth 0`) and its TRAIN/TEST errors
cached in `{fleets}/alarm_scores/{DATASET}_seed{SEED}_unsmoothed.pkl`; every candidate then smooths
them with model/scoring.py's centred moving average. A candidate is one span (`sK`) or several spans
each z-scored with its own TRAIN mean and standard deviation, then summed (`sumA+B`) or maxed
(`maxA+B`). Per dataset: ROC-AUC / PR-AUC / TSB-AD VUS-PR (entities with both classes in TEST), and at
the shipped decision rule the share of entities within the flood bound / point F1 / event F1; means
over entities averaged over seeds. The study it ran: docs/research-log.md, "The default score across
time scales".
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import candidate_decision, fleet_scores_parser  # noqa: E402
from bench.fleet_quality import dataset_dir  # noqa: E402
from evaluation.fleet_report import evaluate_fleet  # noqa: E402
from evaluation.grading import grade  # noqa: E402
from model.fleet import fleet_path  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402

CANDIDATES = ("s50", "s10", "sum1+50", "max1+50", "sum1+10+50+100")
SHIPPED_RULE = "guarded-1000"


def unsmoothed_scores(fleets: Path, data_dir: Path, name: str, seed: int) -> dict:
    """entity -> {labels, window, train, test}: the model's unsmoothed TRAIN/TEST scores, computed once."""
    cache = fleets / "alarm_scores" / f"{name}_seed{seed}_unsmoothed.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    evaluation = evaluate_fleet(fleet_path(fleets / f"{name}_seed{seed}", name), name, dataset_dir(data_dir, name),
                                baselines=(), device="cpu", seed=seed, whole_series=False, smooth=0,
                                jobs=2)  # fmt: skip
    rows = {e.entity: {"labels": e.labels, "window": e.metrics["model"]["tsb_vus_window"],
                       "train": e.train["model"], "test": e.test["model"]} for e in evaluation.entities}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def candidate_scores(candidate: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TRAIN and TEST scores of `sK`, `sumA+B+...` or `maxA+B+...` from the unsmoothed ones."""
    if candidate.startswith("s") and candidate[1:].isdigit():
        span = int(candidate[1:])
        return smooth_scores(train, span), smooth_scores(test, span)
    join, spans = candidate[:3], [int(span) for span in candidate[3:].split("+")]
    parts_train, parts_test = [], []
    for span in spans:
        smoothed_train, smoothed_test = smooth_scores(train, span), smooth_scores(test, span)
        mean, std = float(np.mean(smoothed_train)), float(np.std(smoothed_train)) or 1.0
        parts_train.append((smoothed_train - mean) / std)
        parts_test.append((smoothed_test - mean) / std)
    combine = np.sum if join == "sum" else np.max
    return combine(parts_train, axis=0), combine(parts_test, axis=0)


def fleet_means(rows: dict, candidate: str) -> dict:
    records = []
    for entity in rows.values():
        train, test = candidate_scores(candidate, entity["train"], entity["test"])
        graded = grade(entity["labels"], train, test, *candidate_decision(SHIPPED_RULE, train, test),
                       tsb_window=entity["window"])  # fmt: skip
        record = {"within_flag_bound": graded.alarms["within_flag_bound"]}
        if graded.two_classes:
            record |= {key: graded.ranking[key] for key in ("roc_auc", "pr_auc", "tsb_vus_pr")}
            record |= {"f1": graded.alarms["f1"], "event_f1": graded.alarms["event_f1"]}
        records.append(record)
    return pd.DataFrame(records).mean().to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = fleet_scores_parser(__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    candidates = args.candidates.split(",")
    fleets = {(name, seed): unsmoothed_scores(args.fleets, args.data_dir, name, seed)
              for name in args.datasets for seed in args.seeds}  # fmt: skip
    print("| candidate | objective | " + " | ".join(f"{name} ROC / PR / VUS-PR / within bound / F1 / event F1"
                                                    for name in args.datasets) + " |")  # fmt: skip
    print("|---|---|" + "---|" * len(args.datasets))
    for candidate in candidates:
        cells, ranking = [], []
        for name in args.datasets:
            per_seed = [fleet_means(fleets[(name, seed)], candidate) for seed in args.seeds]
            mean = {key: float(np.mean([m[key] for m in per_seed])) for key in per_seed[0]}
            ranking += [mean["roc_auc"], mean["pr_auc"], mean["tsb_vus_pr"]]
            cells.append(f"{mean['roc_auc']:.3f} / {mean['pr_auc']:.3f} / {mean['tsb_vus_pr']:.3f} / "
                         f"{mean['within_flag_bound']:.2f} / {mean['f1']:.3f} / {mean['event_f1']:.3f}")  # fmt: skip
        print(f"| {candidate} | {np.mean(ranking):.4f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
