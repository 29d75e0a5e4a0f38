"""Fine-tuning each entity's model on the TEST chunks it has already scored, against the shipped score.

    python bench/online_adaptation.py --data-dir ../shared/data --datasets MSL SMAP SMD --seeds 0 1 2

--fleets holds `{DATASET}_seed{SEED}/{DATASET}_fleet.pth` as bench/fleet_quality.py trains them. TEST is cut
into chunks of CHUNK points; chunk k's points take their unsmoothed error from the whole TEST scored by the
model fine-tuned on chunks 0 .. k-1 (chunk 0: the shipped model), then the model trains one epoch on chunk k:
- `adapt`: on every window inside the chunk;
- `adapt-quiet`: on the windows whose every point's score (the chunk's errors smoothed over 50 points within
  the chunk) stays at or under the 99th percentile of the shipped TRAIN scores.
TRAIN keeps the shipped model's errors. Each candidate's unsmoothed scores are cached beside bench/alarm_rules.py's
(`..._{CANDIDATE}_smooth0.pkl`) and graded as bench/score_members.py grades (smoothed over 50 points, the shipped
rule). The study it ran: docs/research-log.md, "Learning from the TEST points already scored".
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alarm_rules import cached_scores, fleet_scores_parser  # noqa: E402
from bench.score_members import SPAN, cached_candidate, f1_ratio, graded, print_table, unsmoothed_entities  # noqa: E402
from bench.score_scales import fleet_means  # noqa: E402
from model.detector import Detector  # noqa: E402
from model.scoring import smooth_scores  # noqa: E402
from model.solver import fit_model  # noqa: E402

CHUNK = 1000  # points: the decision rule's recent window
CANDIDATES = ("s50", "adapt", "adapt-quiet")
QUANTILE = 99  # the shipped rule's TRAIN percentile: adapt-quiet learns no window with a point above it


def quiet_runs(scores: np.ndarray, limit: float, window: int) -> list[tuple[int, int]]:
    """The maximal runs [start, stop) of points scored at or under `limit` that hold at least one window."""
    quiet = np.concatenate([[False], scores <= limit, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return [(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2], strict=True)
            if stop - start >= window]  # fmt: skip


def fine_tune(detector: Detector, series: np.ndarray) -> None:
    """One epoch of the minimax objective over the windows of a normalised series, from a fresh Adam at the rate
    the preset's halving schedule gives the epoch after its last."""
    config = detector.config
    tuned = dataclasses.replace(config, epochs=1, val_ratio=0.0, lr=config.lr * 0.5**config.epochs)
    fit_model(detector.model_, series, tuned, log=lambda _: None, progress=False)
    detector.model_.eval()


def adapted_errors(detector: Detector, test: np.ndarray, train_limit: float, quiet: bool) -> np.ndarray:
    """TEST's unsmoothed errors, chunk k's from the model fine-tuned on chunks before it."""
    adapted = copy.deepcopy(detector)
    torch.manual_seed(detector.config.seed)
    normalised = adapted.normalizer_.transform(test)
    window = adapted.win_size
    errors = np.empty(len(test))
    for start in range(0, len(test), CHUNK):
        stop = min(start + CHUNK, len(test))
        errors[start:stop] = adapted.score(test)[start:stop]
        if stop == len(test):
            break
        runs = [(0, stop - start)]
        if quiet:
            runs = quiet_runs(smooth_scores(errors[start:stop], SPAN), train_limit, window)
        for run_start, run_stop in runs:
            if run_stop - run_start >= window:
                fine_tune(adapted, normalised[start + run_start : start + run_stop])
    return errors


def adaptation_rows(fleets: Path, data_dir: Path, name: str, seed: int, shipped: dict, candidate: str) -> dict:
    """One candidate's rows of one fleet (cached)."""
    return cached_candidate(fleets, name, seed, candidate, lambda: _adaptation_rows(fleets, data_dir, name, seed,
                                                                                    shipped, candidate))  # fmt: skip


def _adaptation_rows(fleets: Path, data_dir: Path, name: str, seed: int, shipped: dict, candidate: str) -> dict:
    rows = {}
    for entity, row, detector, data in unsmoothed_entities(fleets, data_dir, name, seed, shipped):
        detector = detector.to("cpu")
        if not np.allclose(detector.score(data.test), row["test"]["model"], rtol=1e-5, atol=1e-6):
            raise SystemExit(f"{name} seed {seed} {entity}: the shipped model's TEST errors differ from the cache")
        limit = float(np.percentile(smooth_scores(row["train"]["model"], SPAN), QUANTILE))
        test = adapted_errors(detector, data.test, limit, quiet=candidate == "adapt-quiet")
        rows[entity] = {**row, "test": {"model": test}}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = fleet_scores_parser(__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    candidates = args.candidates.split(",")
    table: dict[str, dict[str, list[dict]]] = {c: {name: [] for name in args.datasets} for c in candidates}
    for name in args.datasets:
        for seed in args.seeds:
            shipped = cached_scores(args.fleets, args.data_dir, name, seed, smooth=0)
            for candidate in candidates:
                started = time.perf_counter()
                rows = shipped if candidate == "s50" else adaptation_rows(args.fleets, args.data_dir, name, seed,
                                                                          shipped, candidate)  # fmt: skip
                results = graded(rows)
                table[candidate][name].append(fleet_means(results) | {"f1_ratio": f1_ratio(results)})
                print(f"{name} seed {seed} {candidate}: {time.perf_counter() - started:.0f} s", flush=True)
    print_table(table, candidates, args.datasets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
