"""Incidents: the alarm events an operator sees, one per maximal run of flagged points.

An incident is built from the final per-point decision (flags) and the per-point thresholds that
made it, whatever rule produced them. Its severity is the peak of score / threshold over the run:
how many times the threshold it reached (2.0: twice the threshold). Its top sensors are the
project's segment attribution (evaluation/attribution.py): each channel's mean squared
reconstruction error over the run, divided by its mean on TRAIN, as shares summing to 1. Its error peak is
the point where the unsmoothed errors of the channels the score reads, each over its TRAIN mean and summed,
are largest.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.attribution import exceedance_peak, ranking, relative_shares
from evaluation.metrics import label_segments

INCIDENT_COLUMNS = ("entity", "start", "end", "start_time", "end_time", "duration", "peak_index", "peak_time",
                    "peak_score", "severity", "error_peak_index", "error_peak_time")  # fmt: skip


@dataclass(frozen=True)
class Incident:
    entity: str  # "" for a single model scoring one series
    start: int  # index of the first flagged point
    end: int  # index of the last flagged point (inclusive)
    duration: int  # flagged points in the incident
    peak_index: int  # the point of highest score / threshold
    peak_score: float
    severity: float | None  # peak of score / threshold; None for a non-finite score or a threshold <= 0
    top_sensors: tuple[tuple[str, float], ...]  # (channel name, share), largest share first
    start_time: str | None = None  # the timestamps of start, end and peak, where the input has them
    end_time: str | None = None
    peak_time: str | None = None
    # The point of the largest unsmoothed error of the score's channels (each over its TRAIN mean, summed): the
    # smoothing spreads a short fault over the span, and this is where inside it the fault shows most.
    error_peak_index: int | None = None
    error_peak_time: str | None = None

    def to_json(self) -> dict:
        row = {column: getattr(self, column) for column in INCIDENT_COLUMNS}
        row["peak_score"] = self.peak_score if math.isfinite(self.peak_score) else None
        row["top_sensors"] = [{"name": name, "share": share} for name, share in self.top_sensors]
        return row


@dataclass
class _OpenRun:
    """An incident still growing: it may go on in the next part of a streamed series."""

    start: int
    start_time: str | None
    end: int = 0
    end_time: str | None = None
    duration: int = 0
    peak_key: float = -math.inf
    peak_index: int = 0
    peak_score: float = math.nan
    peak_time: str | None = None
    error_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    error_rows: int = 0  # rows whose channel errors are all finite, the ones the shares average
    error_peak_key: float = -math.inf  # the largest relative error so far, and where
    error_peak_index: int | None = None
    error_peak_time: str | None = None


def _stamp(timestamps: np.ndarray | None, position: int) -> str | None:
    return None if timestamps is None else str(timestamps[position])


class IncidentTracker:
    """Incidents of a series that arrives in consecutive parts (detect.py streams chunks): an incident
    still open at the end of one part continues into the next, so the result does not depend on where
    the parts are cut."""

    def __init__(
        self,
        channel_names: Sequence[str],
        scale: np.ndarray | None = None,
        entity: str | None = None,
        top_k: int = 3,
        score_channels: Sequence[int] | None = None,
    ) -> None:
        self.channel_names = list(channel_names)
        # Without TRAIN errors the raw errors are ranked, as detect does for old checkpoints.
        self.scale = np.ones(len(self.channel_names)) if scale is None else np.asarray(scale, dtype=np.float64)
        # The error peak reads the channels the score reads (None: all), so it finds what raised the incident.
        self.peak_channels = list(range(len(self.channel_names))) if score_channels is None else list(score_channels)
        self.entity = entity or ""
        self.top_k = min(top_k, len(self.channel_names))
        self.incidents: list[Incident] = []
        self._open: _OpenRun | None = None
        self._offset = 0

    def add(
        self,
        flags: np.ndarray,
        scores: np.ndarray,
        thresholds: np.ndarray | float,
        channel_errors: np.ndarray,
        timestamps: np.ndarray | None = None,
        index: np.ndarray | None = None,
    ) -> None:
        """The next part: flags, scores, thresholds (N,) (a scalar broadcasts), channel_errors (N, C),
        optional timestamps (N,), and the indices to report (default: the running point count)."""
        flags = np.asarray(flags).astype(bool)
        n = len(flags)
        scores = np.asarray(scores, dtype=np.float64)
        thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n,))
        index = np.arange(self._offset, self._offset + n) if index is None else np.asarray(index)
        self._offset += n
        if n and not flags[0]:
            self._close()
        for start, stop in label_segments(flags.astype(np.uint8)):
            if self._open is None or start > 0:
                self._close()
                self._open = _OpenRun(int(index[start]), _stamp(timestamps, start))
            self._extend(scores[start:stop], thresholds[start:stop], channel_errors[start:stop], timestamps,
                         index, start, stop)  # fmt: skip
            if stop < n:
                self._close()

    def _extend(self, scores, thresholds, errors, timestamps, index, start: int, stop: int) -> None:
        run = self._open
        peak, key = exceedance_peak(scores, thresholds)
        if run.duration == 0 or key[peak] > run.peak_key:
            run.peak_key, run.peak_score = float(key[peak]), float(scores[peak])
            run.peak_index, run.peak_time = int(index[start + peak]), _stamp(timestamps, start + peak)
        finite = np.isfinite(errors).all(axis=1)
        if run.error_sum.size == 0:
            run.error_sum = np.zeros(errors.shape[1])
        run.error_sum += errors[finite].sum(axis=0, dtype=np.float64)
        run.error_rows += int(finite.sum())
        relative = np.asarray(errors, dtype=np.float64)[:, self.peak_channels] / self.scale[self.peak_channels]
        scored = np.isfinite(relative).all(axis=1)  # a NaN in a channel the score does not read does not matter
        if scored.any():
            relative = np.where(scored, relative.sum(axis=1), -np.inf)
            top = int(np.argmax(relative))
            if relative[top] > run.error_peak_key:
                run.error_peak_key = float(relative[top])
                run.error_peak_index, run.error_peak_time = int(index[start + top]), _stamp(timestamps, start + top)
        run.duration += stop - start
        run.end, run.end_time = int(index[stop - 1]), _stamp(timestamps, stop - 1)

    def _incident(self, run: _OpenRun) -> Incident:
        top: tuple[tuple[str, float], ...] = ()
        if run.error_rows:
            shares = relative_shares(run.error_sum / run.error_rows, self.scale)
            top = tuple((self.channel_names[c], float(shares[c])) for c in ranking(shares)[: self.top_k])
        severity = run.peak_key if math.isfinite(run.peak_key) else None
        return Incident(self.entity, run.start, run.end, run.duration, run.peak_index, run.peak_score, severity,
                        top, run.start_time, run.end_time, run.peak_time, run.error_peak_index,
                        run.error_peak_time)  # fmt: skip

    def _close(self) -> None:
        run, self._open = self._open, None
        if run is not None:
            self.incidents.append(self._incident(run))

    def current(self) -> Incident | None:
        """The incident still open after the last part, as it stands so far (None when the last point was normal)."""
        return None if self._open is None else self._incident(self._open)

    def to_dict(self) -> dict:
        """The open incident and the point count: what a restarted stream needs (closed incidents are not kept)."""
        run = None
        if self._open is not None:  # plain numbers (numpy ones do not go into JSON); error_sum as a list
            fields = vars(self._open).items()
            run = {key: value.tolist() if hasattr(value, "tolist") else value for key, value in fields}
        return {"open": run, "offset": int(self._offset)}

    def restore(self, record: dict) -> IncidentTracker:
        self._offset = int(record["offset"])
        run = record["open"]
        self._open = None if run is None else _OpenRun(**{**run, "error_sum": np.asarray(run["error_sum"])})
        return self

    def finish(self) -> list[Incident]:
        """Every incident, the last one closed at the end of the series."""
        self._close()
        return self.incidents


def find_incidents(
    flags: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray | float,
    channel_errors: np.ndarray,
    channel_names: Sequence[str],
    timestamps: np.ndarray | None = None,
    entity: str | None = None,
    top_k: int = 3,
    *,
    scale: np.ndarray | None = None,
    index: np.ndarray | None = None,
    score_channels: Sequence[int] | None = None,
) -> list[Incident]:
    """One incident per maximal run of flagged points of a whole series.

    flags: (N,) the final decision; scores: (N,); thresholds: (N,) or a scalar; channel_errors: (N, C)
    squared reconstruction errors; scale: (C,) each channel's TRAIN error (train_error_scale), the
    denominator of the shares; index: (N,) the positions to report (default 0..N-1); score_channels: the
    channels the score reads (None: all), whose errors place the error peak.
    """
    tracker = IncidentTracker(channel_names, scale, entity, top_k, score_channels)
    tracker.add(flags, scores, thresholds, channel_errors, timestamps, index)
    return tracker.finish()


def incident_header(top_k: int) -> list[str]:
    header = list(INCIDENT_COLUMNS)
    for rank in range(1, top_k + 1):
        header += [f"sensor_{rank}", f"share_{rank}"]
    return header


def write_incidents_csv(document: dict, path: Path) -> None:
    """The incidents document (incidents_document) as CSV: one row per incident, INCIDENT_COLUMNS, then
    sensor_k, share_k of its top sensors."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(incident_header(document["top_k"]))
        for row in document["incidents"]:
            cells = ["" if row[column] is None else row[column] for column in INCIDENT_COLUMNS]
            if row["peak_score"] is not None:
                cells[INCIDENT_COLUMNS.index("peak_score")] = f"{row['peak_score']:.9g}"
            if row["severity"] is not None:
                cells[INCIDENT_COLUMNS.index("severity")] = f"{row['severity']:.6g}"
            for sensor in row["top_sensors"]:
                cells += [sensor["name"], f"{sensor['share']:.4f}"]
            writer.writerow(cells)


def incidents_document(incidents: list[Incident], top_k: int, **about: object) -> dict:
    """The incidents JSON: what was scored (about), the definitions, and one object per incident;
    top_k is the sensors each incident lists (the CSV's sensor columns)."""
    return {
        **about,
        "severity": "peak over the incident of score / threshold: how many times the threshold it reached",
        "top_sensors": "mean squared reconstruction error over the incident / the channel's mean on TRAIN, as shares",
        "error_peak": "the point of the incident where the unsmoothed reconstruction error of the score's channels, "
        "each / its mean on TRAIN and summed, is largest: where a fault shorter than the smoothing sits",
        "top_k": top_k,
        "n_incidents": len(incidents),
        "incidents": [incident.to_json() for incident in incidents],
    }
