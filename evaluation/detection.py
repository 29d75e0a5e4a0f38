"""Score new data with a saved Detector: stream a table through it, flag points above a stored
threshold, name each flagged point's top sensors, gather the incidents, and report drift against TRAIN.

Memory holds one chunk, one batch of windows and the last window, whatever the input's length.
The scores are those evaluate.py gives the same rows (one windowing loop, one scoring).
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from data_factory.missing import NAN_POLICIES, MissingValues
from data_factory.readers import column_order, open_input
from evaluation.attribution import top_sensor_text, train_error_scale
from evaluation.drift import ChannelMoments, drift_report, drift_warning
from evaluation.incidents import IncidentTracker, find_incidents, incidents_document
from evaluation.thresholds import detection_rule
from model.detector import Detector
from model.fleet import Fleet, load_detector
from model.scoring import PointValues, resolve_device
from runtime.distributed import DistributedContext
from runtime.errors import UserInputError


def _take(queue: deque, n: int) -> np.ndarray:
    """The next n items of a queue of arrays."""
    parts = []
    while n:
        head = queue[0]
        if len(head) <= n:
            parts.append(queue.popleft())
            n -= len(head)
        else:
            parts.append(head[:n])
            queue[0] = head[n:]
            n = 0
    return np.concatenate(parts)


def flag_points(scores: np.ndarray, thresholds: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(flags, non_finite): a point is flagged above its threshold, and also when its score is NaN/Inf (the
    model met values it cannot score, e.g. far outside TRAIN's range): such a point is never silently normal."""
    non_finite = ~np.isfinite(scores)
    with np.errstate(invalid="ignore"):
        return (scores > thresholds) | non_finite, non_finite


def _write_points(writer, index: np.ndarray, part: PointValues, threshold: np.ndarray, names, scale, k: int) -> tuple:
    """One CSV row per point: index or timestamp, score, flag, top sensors of flagged points (none for a
    non-finite score). Returns the flag count, the non-finite count and the index of the first non-finite point."""
    flags, non_finite = flag_points(part.scores, threshold)
    tops = np.full(len(flags), "", dtype=object)
    ranked = flags & ~non_finite
    if ranked.any():
        tops[ranked] = top_sensor_text(part.errors[ranked], scale, names, min(k, len(names)))
    scores = np.char.mod("%.9g", part.scores)  # 9 digits: a float32 score reads back exactly
    writer.writerows(zip(index.tolist(), scores.tolist(), flags.astype(int).tolist(), tops.tolist(), strict=True))
    first = index[np.argmax(non_finite)].item() if non_finite.any() else None
    return int(flags.sum()), int(non_finite.sum()), first


def check_detect_flags(
    chunk_rows: int, batch_size: int, top_sensors: int, nan_policy: str, device: str, threshold: float | None
) -> None:
    """detect's flags, refused before the checkpoint or the input is read and before anything is written."""
    if chunk_rows <= 0 or batch_size <= 0 or top_sensors <= 0:
        raise UserInputError("--chunk-rows, --batch-size and --top-sensors must be positive")
    if nan_policy not in NAN_POLICIES:
        raise UserInputError(f"--nan must be one of {', '.join(NAN_POLICIES)}")
    if threshold is not None and not np.isfinite(threshold):
        raise UserInputError(f"--threshold must be a finite number, got {threshold}")
    resolve_device(device)


def detect(
    checkpoint_path: str | Path,
    source: str,
    output: TextIO,
    *,
    threshold_percentile: float | None = None,
    threshold: float | None = None,
    alarm_rule: str | None = None,
    alarm_window: int | None = None,
    top_sensors: int = 3,
    nan_policy: str = "fail",
    timestamp_column: str = "timestamp",
    chunk_rows: int = 100_000,
    batch_size: int = 128,
    device: str = "auto",
    stdin: TextIO | None = None,
    context: DistributedContext | None = None,
    entity: str | None = None,
    entity_column: str | None = None,
) -> dict:
    """Score `source` with the checkpoint, write the per-point CSV to `output`, return the report.

    The report's "incidents" holds the incidents document (evaluation/incidents.py), which detect.py
    writes to its own files.

    With a fleet bundle, `entity` routes every row to that entity's model, and `entity_column`
    routes each row by the entity named in that column (holding the input in memory).
    Under torchrun (`context`) every rank reads the same input and runs its share of the batches;
    each gets every score, so only rank 0 needs to keep the output.
    """
    check_detect_flags(chunk_rows, batch_size, top_sensors, nan_policy, device, threshold)
    options = {"threshold_percentile": threshold_percentile, "threshold": threshold, "alarm_rule": alarm_rule,
               "alarm_window": alarm_window, "top_sensors": top_sensors, "nan_policy": nan_policy,
               "batch_size": batch_size}  # fmt: skip
    if entity_column is not None:
        if entity is not None:
            raise UserInputError("--entity and --entity-column both choose the model; give one of them")
        table = open_input(source, chunk_rows, timestamp_column, stdin, entity_column)
        return detect_by_entity(Fleet.load(checkpoint_path), table, output, str(checkpoint_path), device, **options)
    detector = load_detector(checkpoint_path, entity, device=device)
    rule = detection_rule(detector, threshold_percentile, threshold, alarm_rule, alarm_window)
    state = rule.start()
    names = detector.channel_names
    table = open_input(source, chunk_rows, timestamp_column, stdin)
    if timestamp_column != "timestamp" and table.columns is not None and table.stamp_column is None:
        raise UserInputError(f"{table.name} has no column {timestamp_column!r} (--timestamp-column)")
    normalizer = detector.normalizer_
    scale = _sensor_scale(detector)
    missing = MissingValues(nan_policy, normalizer.mean, table.name, names)
    moments = ChannelMoments(len(names))
    stamps: deque = deque()
    rows, columns = 0, ""

    def normalised_chunks() -> Iterator[np.ndarray]:
        nonlocal rows, columns
        order = None
        for index, chunk in enumerate(table.chunks):
            if index == 0:
                order, columns = column_order(table, chunk.values.shape[1], names)
            values = chunk.values if order is None else chunk.values[:, order]
            values = normalizer.transform(missing.apply(values, rows))
            moments.update(values)  # the drift check and the model read the same normalised values
            stamps.append(chunk.stamps if chunk.stamps is not None else np.arange(rows, rows + len(values)))
            rows += len(values)
            yield values
        if rows < detector.win_size:
            raise UserInputError(
                f"{table.name} has {rows} rows, fewer than the model's window of {detector.win_size}; "
                "detect needs at least one full window"
            )

    writer = csv.writer(output, lineterminator="\n")
    n_flagged, n_non_finite, first_non_finite = 0, 0, None
    incidents = IncidentTracker(names, scale, entity, top_sensors)
    points = detector.stream(normalised_chunks(), batch_size=batch_size, context=context, normalised=True)
    for number, part in enumerate(points):
        if number == 0:  # the header waits until the first chunk passed its checks
            writer.writerow([table.stamp_column or "index", "score", "flag", "top_sensors"])
        index = _take(stamps, len(part.scores))
        flags, thresholds, state = rule.flags(part.scores, state)  # it carries its recent scores across chunks
        flagged, non_finite, first = _write_points(writer, index, part, thresholds, names, scale, top_sensors)
        n_flagged, n_non_finite = n_flagged + flagged, n_non_finite + non_finite
        first_non_finite = first if first_non_finite is None else first_non_finite
        incidents.add(flags, part.scores, thresholds, part.errors, index if table.stamp_column else None)

    return {
        "checkpoint": str(checkpoint_path),
        "dataset": detector.dataset_["name"],
        "input": table.name,
        "rows": rows,
        "score_variant": detector.scoring_.score,
        "scoring": detector.scoring_.to_dict(),
        "threshold": {"value": rule.threshold, "source": rule.describe(), "rule": rule.kind},
        "n_flagged": n_flagged,
        "flagged_share": n_flagged / rows,
        "non_finite_scores": n_non_finite,  # flagged too; see flag_points
        "first_non_finite": first_non_finite,
        "columns": columns,
        "nan_policy": nan_policy,
        "filled_values": missing.filled,
        "drift": drift_report(moments, normalizer.std, names),
        "incidents": incidents_document(incidents.finish(), incidents.top_k, dataset=detector.dataset_["name"],
                                        input=table.name, time_column=table.stamp_column),
    }


def _sensor_scale(detector: Detector) -> np.ndarray:
    # Checkpoints from before the TRAIN error was stored rank sensors by their raw error.
    stored = detector.train_channel_error_
    return train_error_scale(stored) if stored is not None else np.ones(len(detector.channel_names))


def detect_by_entity(
    fleet: Fleet,
    table,
    output: TextIO,
    checkpoint_name: str,
    device: str,
    *,
    threshold_percentile: float | None,
    threshold: float | None,
    alarm_rule: str | None,
    alarm_window: int | None,
    top_sensors: int,
    nan_policy: str,
    batch_size: int,
) -> dict:
    """Each row scored by the model of the entity its entity column names; rows keep the input's order.

    Each entity's rows form its own series, in input order, so its windows never mix entities.
    """
    names = next(iter(fleet.detectors.values())).channel_names
    values, stamps, entities, order = [], [], [], None
    for index, chunk in enumerate(table.chunks):
        if index == 0:
            order, columns = column_order(table, chunk.values.shape[1], names)
        values.append(chunk.values if order is None else chunk.values[:, order])
        stamps.append(chunk.stamps)
        entities.append(chunk.entities)
    if not values:
        raise UserInputError(f"{table.name} has no rows")
    values, labels = np.concatenate(values), np.concatenate(entities)
    stamps = np.concatenate(stamps) if table.stamp_column else np.arange(len(values))
    present = list(dict.fromkeys(labels.tolist()))
    for name in present:
        fleet.detector(name)  # an unknown or skipped entity stops the run before any scoring
    scores, flags = np.zeros(len(values), dtype=np.float32), np.zeros(len(values), dtype=np.int64)
    tops = np.full(len(values), "", dtype=object)
    report_entities, incidents = {}, []
    for name in present:
        detector = fleet.detector(name).to(device)
        rows = np.flatnonzero(labels == name)
        if len(rows) < detector.win_size:
            raise UserInputError(
                f"{table.name} has {len(rows)} rows of entity {name}, fewer than its model's window of "
                f"{detector.win_size}"
            )
        missing = MissingValues(nan_policy, detector.normalizer_.mean, f"{table.name} ({name})", names)
        series = missing.apply(values[rows], 0)
        points = detector.score_points(series, batch_size=batch_size)
        rule = detection_rule(detector, threshold_percentile, threshold, alarm_rule, alarm_window)
        thresholds = rule.flags(points.scores)[1]
        flagged, non_finite = flag_points(points.scores, thresholds)
        scores[rows], flags[rows] = points.scores, flagged
        ranked = flagged & ~non_finite
        if ranked.any():
            tops[rows[ranked]] = top_sensor_text(points.errors[ranked], _sensor_scale(detector), names,
                                                 min(top_sensors, len(names)))  # fmt: skip
        # Indices are input rows; an entity's incident may span rows of other entities between its own.
        incidents += find_incidents(flagged, points.scores, thresholds, points.errors, names,
                                    stamps[rows] if table.stamp_column else None, name, top_sensors,
                                    scale=_sensor_scale(detector), index=rows)  # fmt: skip
        moments = ChannelMoments(len(names))
        moments.update(detector.normalizer_.transform(series))
        report_entities[name] = {"rows": len(rows),
                                 "threshold": {"value": rule.threshold, "source": rule.describe(), "rule": rule.kind},
                                 "n_flagged": int(flagged.sum()), "non_finite_scores": int(non_finite.sum()),
                                 "filled_values": missing.filled,
                                 "drift": drift_report(moments, detector.normalizer_.std, names)}  # fmt: skip
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow([table.stamp_column or "index", "entity", "score", "flag", "top_sensors"])
    shown = np.char.mod("%.9g", scores)
    writer.writerows(zip(stamps.tolist(), labels.tolist(), shown.tolist(), flags.tolist(), tops.tolist(), strict=True))
    n_flagged = int(flags.sum())
    return {
        "non_finite_scores": sum(part["non_finite_scores"] for part in report_entities.values()),
        "checkpoint": checkpoint_name,
        "dataset": fleet.dataset,
        "input": table.name,
        "rows": len(values),
        "score_variant": fleet.config.score,
        "n_flagged": n_flagged,
        "flagged_share": n_flagged / len(values),
        "columns": columns,
        "nan_policy": nan_policy,
        "entities": report_entities,
        "incidents": incidents_document(incidents, min(top_sensors, len(names)), dataset=fleet.dataset,
                                        input=table.name, time_column=table.stamp_column),
    }


def non_finite_line(count: int, first: object) -> str:
    where = f" (the first at {first})" if first is not None else ""
    return (
        f"warning: {count} points have a non-finite score{where}: the input holds values the model cannot score "
        "(far outside TRAIN's range); they are flagged, with an empty top_sensors"
    )


def incident_line(document: dict) -> str:
    """How many incidents, and the most severe one."""
    ranked = [row for row in document["incidents"] if row["severity"] is not None]
    if not ranked:
        return f"{document['n_incidents']} incidents"
    top = max(ranked, key=lambda row: row["severity"])
    where = top["peak_time"] if top["peak_time"] is not None else top["peak_index"]
    entity = f" of {top['entity']}" if top["entity"] else ""
    sensors = ", ".join(f"{sensor['name']} {sensor['share']:.0%}" for sensor in top["top_sensors"])
    return (f"{document['n_incidents']} incidents; the most severe{entity} peaks at {where}, "
            f"{top['severity']:.3g}x its threshold: {sensors}")  # fmt: skip


def summary_lines(report: dict) -> list[str]:
    """What detect.py prints after a run."""
    if "entities" in report:  # routed by an entity column
        lines = [f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} fleet "
                 f"({len(report['entities'])} entities); {report['n_flagged']} points flagged "
                 f"({report['flagged_share']:.2%})"]  # fmt: skip
        for name, part in report["entities"].items():
            lines.append(f"  {name}: {part['rows']} rows, threshold {part['threshold']['value']:.6g}, "
                         f"{part['n_flagged']} flagged")  # fmt: skip
            if part["non_finite_scores"]:
                lines.append(f"  {name}: {non_finite_line(part['non_finite_scores'], None)}")
            warning = drift_warning(part["drift"])
            if warning:
                lines.append(f"  {name}: {warning}")
        return [*lines, incident_line(report["incidents"])]
    lines = [
        f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} checkpoint "
        f"({report['score_variant']} score); threshold {report['threshold']['value']:.6g} = "
        f"{report['threshold']['source']}; {report['n_flagged']} points flagged ({report['flagged_share']:.2%})",
        incident_line(report["incidents"]),
    ]
    if report["non_finite_scores"]:
        lines.append(non_finite_line(report["non_finite_scores"], report["first_non_finite"]))
    if report["filled_values"]:
        lines.append(f"filled {report['filled_values']} NaN/Inf values (--nan fill)")
    warning = drift_warning(report["drift"])
    if warning:
        lines.append(warning)
    return lines
