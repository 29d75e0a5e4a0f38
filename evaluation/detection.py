"""Score new data with a saved Detector: stream a table through it, flag points above a stored
threshold, name each flagged point's top sensors, gather the incidents, and report drift against TRAIN.

Memory holds one chunk, one batch of windows and the last window, whatever the input's length.
The scores are those evaluate.py gives the same rows (one windowing loop, one scoring).
"""

from __future__ import annotations

import contextlib
import csv
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from data_factory.missing import NAN_POLICIES, MissingValues
from data_factory.readers import DEFAULT_TIME_COLUMN, InputTable, column_order, open_input, time_order_warning
from data_factory.windows import SCORING_FIX, check_long_enough
from evaluation.attribution import sensor_scale, top_sensor_text
from evaluation.drift import ChannelMoments, drift_report, drift_warning
from evaluation.incidents import IncidentTracker, incidents_document
from evaluation.thresholds import detection_rule
from model.alarm_rule import AlarmRule
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


class EntityWatch:
    """One detector watching one entity's rows in order, whether they come as a table (EntityPass) or live
    (evaluation/live.py's EntityStream): the NaN policy and the TRAIN normaliser on the way in; the decision
    rule, whose state carries its recent scores from one scored part to the next, and the incident tracker on
    the way out."""

    def __init__(
        self, detector: Detector, rule: AlarmRule, source: str, nan_policy: str, top_sensors: int, entity: str | None
    ) -> None:
        self.detector, self.rule, self.state, self.source = detector, rule, rule.start(), source
        names = detector.channel_names
        self.scale = sensor_scale(detector.train_channel_error_, len(names))
        self.missing = MissingValues(nan_policy, detector.normalizer_.mean, source, names)
        self.incidents = IncidentTracker(names, self.scale, entity, top_sensors, detector.scoring_.channels)
        self.rows = 0  # taken in

    def normalise(self, values: np.ndarray, rows: Sequence[int] | None = None) -> np.ndarray:
        """The next raw (n, C) rows in the model's channel order, filled by the NaN policy and normalised; rows: their
        input rows, where the entity's rows are not the whole input (for messages)."""
        values = self.detector.normalizer_.transform(self.missing.apply(values, self.rows, rows))
        self.rows += len(values)
        return values

    def flag(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flags, thresholds) of the next scored points under the decision rule."""
        flags, thresholds, self.state = self.rule.flags(scores, self.state)
        return flags, thresholds


class EntityPass(EntityWatch):
    """One detector's pass over one series (one entity's rows), part by part: the values watched for drift on
    the way in; each scored part's flags, its flagged points' top sensors and its incidents on the way out. A
    single model's input and each entity of a routed input take this same pass."""

    def __init__(
        self,
        detector: Detector,
        rule: AlarmRule,
        source: str,
        nan_policy: str,
        top_sensors: int,
        entity: str | None,
        input_rows: np.ndarray | None = None,
    ) -> None:
        """input_rows: the input row of each row of the series, where it is one entity's rows among others'."""
        super().__init__(detector, rule, source, nan_policy, top_sensors, entity)
        self.input_rows = input_rows
        self.top_k = min(top_sensors, len(detector.channel_names))
        self.moments = ChannelMoments(len(detector.channel_names))
        self.n_flagged = self.non_finite = 0
        self.first_non_finite: object = None
        self.applied = (np.inf, -np.inf)  # the lowest and highest threshold any point met: the rule moves it

    def points(
        self, chunks: Iterable[np.ndarray], batch_size: int, context: DistributedContext | None = None
    ) -> Iterator[PointValues]:
        """The scored points of raw chunks in the model's channel order (an iterator of PointValues)."""
        return self.detector.stream(self._normalised(chunks), batch_size=batch_size, context=context, normalised=True)

    def _normalised(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            rows = None if self.input_rows is None else self.input_rows[self.rows : self.rows + len(chunk)]
            values = self.normalise(chunk, rows)
            self.moments.update(values)  # the drift check and the model read the same normalised values
            yield values
        check_long_enough(self.rows, self.detector.win_size, self.source, SCORING_FIX)

    def decide(self, part: PointValues, positions: np.ndarray, stamps: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """(flags, thresholds, top sensors) of the next scored part; positions: its input rows; stamps: its times,
        if any. A non-finite score is flagged (the rule never passes it as normal) with no top sensors."""
        flags, thresholds = self.flag(part.scores)
        if len(thresholds):
            lowest, highest = self.applied
            self.applied = (min(lowest, float(thresholds.min())), max(highest, float(thresholds.max())))
        non_finite = ~np.isfinite(part.scores)
        tops = np.full(len(flags), "", dtype=object)
        ranked = flags.astype(bool) & ~non_finite
        if ranked.any():
            tops[ranked] = top_sensor_text(part.errors[ranked], self.scale, self.detector.channel_names, self.top_k)
        self.n_flagged += int(flags.sum())
        self.non_finite += int(non_finite.sum())
        if non_finite.any() and self.first_non_finite is None:
            self.first_non_finite = (positions if stamps is None else stamps)[np.argmax(non_finite)].item()
        self.incidents.add(flags, part.scores, thresholds, part.errors, stamps, positions)
        return flags, thresholds, tops

    def report(self) -> dict:
        lowest, highest = self.applied if np.isfinite(self.applied[0]) else (None, None)  # None: no point scored
        return {
            "rows": self.rows,
            "threshold": {"value": self.rule.threshold, "source": self.rule.describe(), "rule": self.rule.kind,
                          "lowest": lowest, "highest": highest},
            "n_flagged": self.n_flagged,
            "non_finite_scores": self.non_finite,  # flagged too; see decide
            "first_non_finite": self.first_non_finite,
            "filled_values": self.missing.filled,
            "filled_channels": {name: int(count) for name, count in
                                zip(self.detector.channel_names, self.missing.filled_by_channel, strict=True) if count},
            "drift": drift_report(self.moments, self.detector.normalizer_.constant_in_train,
                                  self.detector.channel_names),
        }


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
    rule_options = (threshold_percentile, threshold, alarm_rule, alarm_window)
    if entity_column is not None:
        if entity is not None:
            raise UserInputError("--entity and --entity-column both choose the model; give one of them")
        fleet = Fleet.load(checkpoint_path)
        with contextlib.closing(open_input(source, chunk_rows, timestamp_column, stdin, entity_column)) as table:
            return _detect_routed(fleet, table, output, str(checkpoint_path), device, rule_options, top_sensors,
                                  nan_policy, batch_size)  # fmt: skip
    detector = load_detector(checkpoint_path, entity, device=device)
    with contextlib.closing(open_input(source, chunk_rows, timestamp_column, stdin)) as table:
        return _detect_one(detector, table, output, checkpoint_path, timestamp_column, rule_options, top_sensors,
                           nan_policy, batch_size, context, entity)  # fmt: skip


def _detect_one(
    detector: Detector,
    table: InputTable,
    output: TextIO,
    checkpoint_path: str | Path,
    timestamp_column: str,
    rule_options: tuple,
    top_sensors: int,
    nan_policy: str,
    batch_size: int,
    context: DistributedContext | None,
    entity: str | None,
) -> dict:
    """detect's pass of one model over the table's rows."""
    if timestamp_column != DEFAULT_TIME_COLUMN and table.columns is not None and table.stamp_column is None:
        raise UserInputError(f"{table.name} has no column {timestamp_column!r} (--timestamp-column)")
    run = EntityPass(detector, detection_rule(detector, *rule_options), table.name, nan_policy, top_sensors, entity)
    stamps: deque = deque()
    columns, time_order = "", None

    def ordered_chunks() -> Iterator[np.ndarray]:
        nonlocal columns, time_order
        order, seen, before = None, 0, np.array([], dtype=str)
        for index, chunk in enumerate(table.chunks):
            if index == 0:
                order, columns = column_order(table, chunk.values.shape[1], detector.channel_names)
            if chunk.stamps is not None and time_order is None and len(chunk.stamps):
                # Each chunk with the last time before it: a time that goes back across chunks is found too.
                time_order = time_order_warning(np.concatenate([before, chunk.stamps]), table.name, seen - len(before))
                before = chunk.stamps[-1:]
            stamps.append(chunk.stamps if chunk.stamps is not None else np.arange(seen, seen + len(chunk.values)))
            seen += len(chunk.values)
            yield chunk.values if order is None else chunk.values[:, order]

    writer = csv.writer(output, lineterminator="\n")
    done = 0
    for number, part in enumerate(run.points(ordered_chunks(), batch_size, context)):
        if number == 0:  # the header waits until the first chunk passed its checks
            writer.writerow([table.stamp_column or "index", "score", "threshold", "flag", "top_sensors"])
        index = _take(stamps, len(part.scores))
        positions = np.arange(done, done + len(index))
        done += len(index)
        flags, thresholds, tops = run.decide(part, positions, index if table.stamp_column else None)
        writer.writerows(zip(index.tolist(), _shown(part.scores), _exact(thresholds), flags.astype(int).tolist(),
                             tops.tolist(), strict=True))  # fmt: skip
    return {
        "checkpoint": str(checkpoint_path),
        "dataset": detector.dataset_["name"],
        "input": table.name,
        "score_variant": detector.scoring_.score,
        "scoring": detector.scoring_.to_dict(),
        **run.report(),
        "flagged_share": run.n_flagged / run.rows,
        "columns": columns,
        "time_order": time_order,
        "nan_policy": nan_policy,
        "incidents": incidents_document(run.incidents.finish(), run.top_k, dataset=detector.dataset_["name"],
                                        input=table.name, time_column=table.stamp_column),
    }


def _shown(scores: np.ndarray) -> list[str]:
    return np.char.mod("%.9g", scores).tolist()  # 9 digits: a float32 score reads back exactly


def _exact(thresholds: np.ndarray) -> list[str]:
    return np.char.mod("%.17g", thresholds).tolist()  # 17 digits: a float64 threshold reads back exactly


def _refuse_first_non_finite(values: np.ndarray, entities: np.ndarray, source: str, names: list[str]) -> None:
    """The NaN policy `fail`'s error for the input's first row holding NaN/Inf, naming its entity."""
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        first = int(bad[0])
        missing = MissingValues("fail", np.zeros(len(names)), f"{source} (entity {entities[first]})", names)
        missing.apply(values[first : first + 1], first)


def _detect_routed(
    fleet: Fleet,
    table,
    output: TextIO,
    checkpoint_name: str,
    device: str,
    rule_options: tuple,
    top_sensors: int,
    nan_policy: str,
    batch_size: int,
) -> dict:
    """Each row scored by the model of the entity its entity column names; rows keep the input's order.

    Each entity's rows form its own series, in input order, so its windows never mix entities; each
    takes the same pass (EntityPass) as a single model's input.
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
    if nan_policy == "fail":  # the input's first NaN, not its first entity's: the entities are scored one by one
        _refuse_first_non_finite(values, labels, table.name, names)
    scores, flags = np.zeros(len(values), dtype=np.float32), np.zeros(len(values), dtype=np.int64)
    thresholds = np.zeros(len(values), dtype=np.float64)
    tops = np.full(len(values), "", dtype=object)
    report_entities, incidents, not_scored = {}, [], {}
    for name in present:
        detector = fleet.detector(name).to(device)
        rows = np.flatnonzero(labels == name)
        if len(rows) < detector.win_size:  # a machine that sent little today: the others are still scored
            not_scored[name] = f"{len(rows)} rows, fewer than its model's window of {detector.win_size}"
            continue
        run = EntityPass(detector, detection_rule(detector, *rule_options), f"{table.name} (entity {name})",
                         nan_policy, top_sensors, name, input_rows=rows)  # fmt: skip
        # Positions are input rows; an entity's incident may span rows of other entities between its own.
        done = 0
        for part in run.points([values[rows]], batch_size):
            at = rows[done : done + len(part.scores)]
            done += len(at)
            scores[at] = part.scores
            flags[at], thresholds[at], tops[at] = run.decide(part, at, stamps[at] if table.stamp_column else None)
        incidents += run.incidents.finish()
        report_entities[name] = {key: value for key, value in run.report().items() if key != "first_non_finite"}
    if not report_entities:
        reasons = "; ".join(f"{name}: {why}" for name, why in not_scored.items())
        raise UserInputError(f"{table.name}: no entity has rows enough to score ({reasons}); {SCORING_FIX}")
    blank = np.isin(labels, list(not_scored))
    scored_rows = int((~blank).sum())  # the rows of entities not scored are counted apart
    shown, exact, flagged = (np.where(blank, "", column).tolist() for column in
                             (_shown(scores), _exact(thresholds), flags.astype(str)))  # fmt: skip
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow([table.stamp_column or "index", "entity", "score", "threshold", "flag", "top_sensors"])
    writer.writerows(zip(stamps.tolist(), labels.tolist(), shown, exact, flagged, tops.tolist(), strict=True))
    n_flagged = int(flags.sum())
    return {
        "non_finite_scores": sum(part["non_finite_scores"] for part in report_entities.values()),
        "checkpoint": checkpoint_name,
        "dataset": fleet.dataset,
        "input": table.name,
        "rows": scored_rows,
        "rows_not_scored": len(values) - scored_rows,
        "score_variant": fleet.config.score,
        "n_flagged": n_flagged,
        "flagged_share": n_flagged / scored_rows,
        "columns": columns,
        "nan_policy": nan_policy,
        "entities": report_entities,
        "not_scored": not_scored,
        "incidents": incidents_document(incidents, min(top_sensors, len(names)), dataset=fleet.dataset,
                                        input=table.name, time_column=table.stamp_column),
    }


def _applied(threshold: dict) -> str:
    """The thresholds the points met, in words: the decision rule raises them from the TRAIN percentile."""
    if threshold["lowest"] is None or threshold["lowest"] == threshold["highest"]:
        return f"every point's threshold {threshold['value']:.6g}"
    return (f"the points' thresholds {threshold['lowest']:.6g} to {threshold['highest']:.6g} (the {threshold['rule']} "
            f"rule, from the TRAIN percentile {threshold['value']:.6g})")  # fmt: skip


def non_finite_line(count: int, first: object) -> str:
    where = f" (the first at {first})" if first is not None else ""
    return (
        f"warning: {count} points have a non-finite score{where}: the input holds values the model cannot score "
        "(far outside TRAIN's range); they are flagged, with an empty top_sensors"
    )


def filled_line(filled: int, by_channel: dict[str, int], rows: int) -> str:
    """What --nan fill did, the channels filled most first: one filled on every row had no reading at all."""
    ranked = sorted(by_channel.items(), key=lambda item: -item[1])
    named = ", ".join(f"{name} {count} of {rows} rows" + (" (every row: scored as its TRAIN mean)" * (count == rows))
                      for name, count in ranked[:5])  # fmt: skip
    return f"filled {filled} NaN/Inf values (--nan fill): {named}{', ...' if len(ranked) > 5 else ''}"


def incident_line(document: dict) -> str:
    """How many incidents, and the most severe one."""
    ranked = [row for row in document["incidents"] if row["severity"] is not None]
    if not ranked:
        return f"{document['n_incidents']} incidents"
    top = max(ranked, key=lambda row: row["severity"])
    where = top["peak_time"] if top["peak_time"] is not None else top["peak_index"]
    fault = top["error_peak_time"] if top["error_peak_time"] is not None else top["error_peak_index"]
    entity = f" of {top['entity']}" if top["entity"] else ""
    sensors = ", ".join(f"{sensor['name']} {sensor['share']:.0%}" for sensor in top["top_sensors"])
    error = f" (its error at {fault})" if fault is not None and fault != where else ""
    return (f"{document['n_incidents']} incidents; the most severe{entity} peaks at {where}{error}, "
            f"{top['severity']:.3g}x its threshold: {sensors}")  # fmt: skip


def summary_lines(report: dict) -> list[str]:
    """What detect.py prints after a run."""
    return _column_warning(report) + _scored_lines(report)


def _column_warning(report: dict) -> list[str]:
    """A line when the input's header names other sensors than TRAIN's: its columns were taken in their order."""
    if not report["columns"].startswith("by position:"):
        return []
    return [f"warning: columns matched {report['columns']}: taken in order; if that is not TRAIN's order, the "
            "scores mean nothing"]  # fmt: skip


def _scored_lines(report: dict) -> list[str]:
    if "entities" in report:  # routed by an entity column
        lines = [f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} fleet "
                 f"({len(report['entities'])} entities); {report['n_flagged']} points flagged "
                 f"({report['flagged_share']:.2%})"]  # fmt: skip
        for name, part in report["entities"].items():
            lines.append(f"  {name}: {part['rows']} rows, {part['n_flagged']} flagged; {_applied(part['threshold'])}")
            if part["non_finite_scores"]:
                lines.append(f"  {name}: {non_finite_line(part['non_finite_scores'], None)}")
            warning = drift_warning(part["drift"])
            if warning:
                lines.append(f"  {name}: {warning}")
        lines += [f"  {name}: not scored ({why}); its rows are left blank"
                  for name, why in report["not_scored"].items()]
        return [*lines, incident_line(report["incidents"])]
    lines = [
        f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} checkpoint "
        f"({report['score_variant']} score); threshold {report['threshold']['value']:.6g} = "
        f"{report['threshold']['source']}; {report['n_flagged']} points flagged ({report['flagged_share']:.2%}); "
        f"{_applied(report['threshold'])}",
        incident_line(report["incidents"]),
    ]
    if report["non_finite_scores"]:
        lines.append(non_finite_line(report["non_finite_scores"], report["first_non_finite"]))
    if report["filled_values"]:
        lines.append(filled_line(report["filled_values"], report["filled_channels"], report["rows"]))
    if report.get("time_order"):
        lines.append(report["time_order"])
    warning = drift_warning(report["drift"])
    if warning:
        lines.append(warning)
    return lines
