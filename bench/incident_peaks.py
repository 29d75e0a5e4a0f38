"""Where inside an incident the fault is: the smoothed score's peak against the unsmoothed error's peak.

    python bench/incident_peaks.py --data-dir ../shared/data --datasets MSL SMAP SMD --seed 0

The default score is smoothed over 50 points, so a fault shorter than that raises an incident about
50 points long, and the score's peak (`peak_index`) may sit anywhere in it. Each incident also names
`error_peak_index`, the point of its largest unsmoothed reconstruction error (each channel's over its
TRAIN mean, summed). For the incidents of the model's `--preset fleet` fleets that overlap a
labelled anomaly, this prints how often each of the two points falls on a labelled point, and their
mean distance to the nearest labelled point of the segments the incident overlaps, per dataset.
The fleets are bench/fleet_quality.py's (`{fleets}/{DATASET}_seed{SEED}/{DATASET}_fleet.pth`),
scored afresh by evaluation.fleet_report.evaluate_fleet without baselines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet_quality import dataset_dir  # noqa: E402
from evaluation.fleet_report import evaluate_fleet  # noqa: E402
from evaluation.metrics import label_segments  # noqa: E402
from model.fleet import fleet_path  # noqa: E402


def distance_to(points: np.ndarray, index: int) -> int:
    """Points from `index` to the nearest of `points` (0 when it is one of them)."""
    return int(np.min(np.abs(points - index)))


def incident_rows(labels: np.ndarray, incidents: list) -> list[dict]:
    """For each incident overlapping a labelled segment: whether its score peak and its error peak are labelled
    points, and their distances to the labelled points of the segments it overlaps."""
    segments = label_segments(labels)
    rows = []
    for incident in incidents:
        overlapped = [(start, stop) for start, stop in segments if start <= incident.end and stop > incident.start]
        if not overlapped:
            continue
        if incident.error_peak_index is None:  # every error of the incident was NaN/Inf: no error peak to place
            continue
        labelled = np.concatenate([np.arange(start, stop) for start, stop in overlapped])
        rows.append({
            "length": incident.end - incident.start + 1,
            "score_on": bool(labels[incident.peak_index]),
            "error_on": bool(labels[incident.error_peak_index]),
            "score_distance": distance_to(labelled, incident.peak_index),
            "error_distance": distance_to(labelled, incident.error_peak_index),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fleets", type=Path, default=Path("artifacts/fleet_quality"))
    parser.add_argument("--datasets", nargs="+", default=["MSL", "SMAP", "SMD"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    print("| dataset | incidents on an anomaly | median length | score peak on a labelled point | error peak on one "
          "| mean distance to the anomaly, points: score peak / error peak |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        evaluation = evaluate_fleet(fleet_path(args.fleets / f"{name}_seed{args.seed}", name), name,
                                    dataset_dir(args.data_dir, name), baselines=(), device="cpu", seed=args.seed,
                                    whole_series=False, jobs=args.jobs)  # fmt: skip
        rows = [row for entity in evaluation.entities for row in incident_rows(entity.labels, entity.incidents)]
        mean = {key: float(np.mean([row[key] for row in rows]))
                for key in ("score_on", "error_on", "score_distance", "error_distance")}  # fmt: skip
        length = float(np.median([row["length"] for row in rows]))
        print(f"| {name} | {len(rows)} | {length:.0f} | {mean['score_on']:.2f} | {mean['error_on']:.2f} | "
              f"{mean['score_distance']:.1f} / {mean['error_distance']:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
