"""Overlapping scoring windows and an ensemble of seeds, against the shipped score, per entity.

    python bench/score_members.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them; every seed
listed must be there (`seeds2` pairs seed s with the next one listed, `seeds3` joins the first three). Each
candidate's unsmoothed TRAIN and TEST errors are smoothed over the shipped span and judged by the shipped rule,
as bench/score_scales.py does:
- `s50`: the shipped score, from bench/alarm_rules.py's cache of `evaluate.py --per-entity --smooth 0`;
- `overlap25`: the mean, over offsets 0, 25, 50 and 75, of the error when the series from that offset on is
  scored in non-overlapping windows (windows every 25 points), cached as `..._overlap25_smooth0.pkl`; its
  offset-0 term is checked against the cache of `s50`;
- `seeds2` / `seeds3`: the mean of the unsmoothed errors of the fleets of two / three seeds.
The study it ran: docs/research-log.md, "Ranking: overlapping scoring windows and an ensemble of seeds".
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import cached_scores, candidate_decision, fleet_scores_parser  # noqa: E402
from bench.fleet_quality import dataset_dir  # noqa: E402
from bench.score_scales import SHIPPED_RULE, fleet_means  # noqa: E402
from data_factory.registry import load_dataset  # noqa: E402
from evaluation.grading import Grade, grade  # noqa: E402
from model.fleet import fleet_path, open_fleet  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402

SPAN = 50
OFFSETS = (0, 25, 50, 75)
CANDIDATES = ("s50", "overlap25", "seeds2", "seeds3", "min10+50", "minlr25")


def overlapped(score, series: np.ndarray, window: int, offsets: tuple[int, ...] = OFFSETS) -> np.ndarray:
    """Mean over offsets of score(series[offset:]), each aligned to its points (a point before an offset has
    fewer terms; an offset leaving less than a window is skipped). score: a Detector's unsmoothed score of a raw
    series."""
    total, count = np.zeros(len(series)), np.zeros(len(series))
    for offset in offsets:
        if len(series) - offset < window:
            continue
        total[offset:] += score(series[offset:])
        count[offset:] += 1
    return total / count


def cached_candidate(fleets: Path, name: str, seed: int, candidate: str, rows: Callable[[], dict]) -> dict:
    """A candidate's rows of one fleet, in the layout of bench/alarm_rules.py's cache and beside it
    (`..._{CANDIDATE}_smooth0.pkl`): computed by `rows` once."""
    cache = fleets / "alarm_scores" / f"{name}_seed{seed}_{candidate}_smooth0.pkl"
    if not cache.exists():
        cache.write_bytes(pickle.dumps(rows()))
    return pickle.loads(cache.read_bytes())


def unsmoothed_entities(fleets: Path, data_dir: Path, name: str, seed: int, shipped: dict) -> Iterator[tuple]:
    """(entity, its row of the shipped cache, its Detector scoring unsmoothed, its data) for each cached entity."""
    fleet = open_fleet(fleet_path(fleets / f"{name}_seed{seed}", name))
    for entity, row in shipped.items():
        detector = fleet.detectors[entity]
        detector = detector.rescored(dataclasses.replace(detector.scoring_, smooth=0))
        yield entity, row, detector, load_dataset(name, str(dataset_dir(data_dir, name)), entity)


def overlap_rows(fleets: Path, data_dir: Path, name: str, seed: int, shipped: dict) -> dict:
    """The `overlap25` rows of one fleet (cached)."""
    return cached_candidate(fleets, name, seed, "overlap25", lambda: _overlap_rows(fleets, data_dir, name, seed,
                                                                                     shipped))  # fmt: skip


def _overlap_rows(fleets: Path, data_dir: Path, name: str, seed: int, shipped: dict) -> dict:
    rows = {}
    for entity, row, detector, data in unsmoothed_entities(fleets, data_dir, name, seed, shipped):
        parts = {}
        for part, series in (("train", data.train), ("test", data.test)):
            first = detector.score(series)
            if not np.allclose(first, row[part]["model"], rtol=1e-5, atol=1e-6):
                raise SystemExit(f"{name} seed {seed} {entity}: offset 0 differs from the cached shipped score")
            parts[part] = {"model": overlapped(detector.score, series, detector.win_size)}
        rows[entity] = {"labels": row["labels"], "window": row["window"], **parts}
    return rows


def mean_rows(members: list[dict]) -> dict:
    """The entity rows whose model scores are the members' mean."""
    first = members[0]
    return {entity: {**row, **{part: {"model": np.mean([m[entity][part]["model"] for m in members], axis=0)}
                               for part in ("train", "test")}}
            for entity, row in first.items()}  # fmt: skip


def window_mean(errors: np.ndarray, before: int, after: int) -> np.ndarray:
    """The mean of errors over t - before .. t + after at each t, over the points that exist."""
    errors = np.asarray(errors, dtype=np.float64)
    total = np.concatenate([[0.0], np.cumsum(errors)])
    index = np.arange(len(errors))
    start, stop = np.maximum(index - before, 0), np.minimum(index + after, len(errors) - 1) + 1
    return (total[stop] - total[start]) / (stop - start)


def min_spans(errors: np.ndarray) -> np.ndarray:
    """`min10+50`: the lower of the shipped 50-point mean and the 10-point mean (t-5 .. t+4)."""
    return np.minimum(smooth_scores(errors, SPAN), smooth_scores(errors, 10))


def min_sides(errors: np.ndarray) -> np.ndarray:
    """`minlr25`: the lower of the trailing (t-24 .. t) and the leading (t .. t+24) 25-point means."""
    return np.minimum(window_mean(errors, 24, 0), window_mean(errors, 0, 24))


# How a candidate smooths its unsmoothed score; the others take the shipped centred mean.
SMOOTHING = {"min10+50": min_spans, "minlr25": min_sides}


def graded(rows: dict, smoothing=lambda errors: smooth_scores(errors, SPAN)) -> dict[str, Grade]:
    results = {}
    for entity, row in rows.items():
        train, test = smoothing(row["train"]["model"]), smoothing(row["test"]["model"])
        results[entity] = grade(row["labels"], train, test, *candidate_decision(SHIPPED_RULE, train, test),
                                tsb_window=row["window"])  # fmt: skip
    return results


def f1_ratio(results: dict[str, Grade]) -> float:
    """Point F1 at the rule over the best-threshold F1 of the same scores, each a mean over the graded entities
    (as bench/rule_ceiling.py and the README state the ratio)."""
    graded_ones = [r for r in results.values() if r.two_classes]
    return float(np.mean([r.alarms["f1"] for r in graded_ones]) / np.mean([r.ranking["best_f1"] for r in graded_ones]))


def main(argv: list[str] | None = None) -> int:
    parser = fleet_scores_parser(__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    candidates = args.candidates.split(",")
    seeds = args.seeds
    shipped = {(name, seed): cached_scores(args.fleets, args.data_dir, name, seed, smooth=0)
               for name in args.datasets for seed in seeds}  # fmt: skip
    table: dict[str, dict[str, list[dict]]] = {c: {name: [] for name in args.datasets} for c in candidates}
    for name in args.datasets:
        for index, seed in enumerate(seeds):
            rows = {
                "s50": shipped[(name, seed)],
                "seeds2": mean_rows([shipped[(name, seed)], shipped[(name, seeds[(index + 1) % len(seeds)])]]),
            }
            if "overlap25" in candidates:
                started = time.perf_counter()
                rows["overlap25"] = overlap_rows(args.fleets, args.data_dir, name, seed, shipped[(name, seed)])
                print(f"{name} seed {seed}: overlap25 scored or read in {time.perf_counter() - started:.0f} s",
                      flush=True)  # fmt: skip
            if index == 0:
                rows["seeds3"] = mean_rows([shipped[(name, s)] for s in seeds[:3]])
            for candidate in candidates:
                if candidate in SMOOTHING:
                    results = graded(shipped[(name, seed)], SMOOTHING[candidate])
                elif candidate in rows:
                    results = graded(rows[candidate])
                else:
                    continue
                table[candidate][name].append(fleet_means(results) | {"f1_ratio": f1_ratio(results)})
    print_table(table, candidates, args.datasets)
    return 0


def print_table(table: dict[str, dict[str, list[dict]]], candidates: list[str], datasets: list[str]) -> None:
    """The study's table: per candidate, the objective (the mean of the nine ranking means) and per dataset the
    means over seeds of the entity means."""
    keys = ("roc_auc", "pr_auc", "tsb_vus_pr", "within_flag_bound", "f1", "event_f1", "f1_ratio")
    heading = "ROC / PR / VUS-PR / within bound / F1 / event F1 / F1 ratio"
    print("| candidate | objective | " + " | ".join(f"{name} {heading}" for name in datasets) + " |")
    print("|---|---|" + "---|" * len(datasets))
    for candidate in candidates:
        cells, ranking = [], []
        for name in datasets:
            means = pd.DataFrame(table[candidate][name]).mean()
            ranking += [means[key] for key in keys[:3]]
            cells.append(" / ".join(f"{means[key]:.3f}" if key != "within_flag_bound" else f"{means[key]:.2f}"
                                    for key in keys))  # fmt: skip
        print(f"| {candidate} | {np.mean(ranking):.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
