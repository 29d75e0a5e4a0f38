"""A live stream: rows scored as they arrive, incidents announced as JSON lines when they open and close.

Each entity (one, for a single model) has its own `EntityStream`: what detect.py's pass over a table
holds of an entity (evaluation/detection.py EntityWatch: the NaN policy, the TRAIN normaliser, the
decision rule with its state, the incident tracker), with the push-style scorer with batches of one
window (model/scoring.py PointStream). A point is decided once its window is full and
the centred smoothing has seen the points after it; the decision rule adds no delay. The scores, flags
and incidents are detect.py's on the whole input at --batch-size 1, bit for bit.

`LiveDetector.to_dict` / `restore` hold everything a restarted stream needs (the rows of the open
window, the smoother, the rule's state, the open incident), never the closed incidents or the scores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_factory.records import decode_array, encode_array
from evaluation.detection import EntityWatch
from evaluation.incidents import Incident
from evaluation.thresholds import detection_rule
from model.alarm_rule import RuleState
from model.detector import Detector
from model.scoring import PointStream, PointValues
from runtime.atomic import json_ready
from runtime.errors import UserInputError


def event_line(event: str, incident: Incident) -> str:
    """One incident as the JSON line the stream prints: {"event": "open" | "close", ...Incident.to_json()}."""
    return json.dumps(json_ready({"event": event, **incident.to_json()}), allow_nan=False)


class EntityStream(EntityWatch):
    """One model scoring one entity's rows as they arrive."""

    def __init__(self, detector: Detector, rule_options: dict, *, entity: str | None, nan_policy: str,
                 top_sensors: int, timestamps: bool, input_name: str) -> None:  # fmt: skip
        rule = detection_rule(detector, **rule_options)
        super().__init__(detector, rule, input_name, nan_policy, top_sensors, entity)
        self.points = PointStream(detector.model_, detector.scoring_, batch_size=1, device=detector._device())
        self.timestamps = timestamps
        self.waiting_rows: list[int] = []  # input row numbers of the points pushed whose score is not out yet
        self.stamps: list[str] = []

    def push(self, values: np.ndarray, rows: list[int], stamps: list[str] | None) -> list[str]:
        """Raw (n, C) values of this entity in the model's column order; the event lines they decide."""
        series = self.normalise(values, rows)
        self.waiting_rows += rows
        self.stamps += stamps if self.timestamps else []
        return self._decide(self.points.push(series))

    def finish(self) -> list[str]:
        """The end of the input: the tail window scored as detect.py scores it, the open incident closed."""
        lines = self._decide(self.points.finish())
        closed = len(self.incidents.finish())
        lines += [event_line("close", incident) for incident in self.incidents.incidents[:closed]]
        self.incidents.incidents.clear()
        return lines

    def _decide(self, part: PointValues) -> list[str]:
        n = len(part.scores)
        if n == 0:
            return []
        index, self.waiting_rows = np.asarray(self.waiting_rows[:n]), self.waiting_rows[n:]
        stamps = None
        if self.timestamps:
            stamps, self.stamps = np.asarray(self.stamps[:n], dtype=object), self.stamps[n:]
        flags, thresholds = self.flag(part.scores)
        # Cut the part after each point that opens an incident, so its open line is the incident at that point.
        opens = np.flatnonzero(flags & (np.concatenate([[self.incidents.current() is None], flags[:-1] == 0])))
        lines, begin = [], 0
        for stop in [*(opens + 1).tolist(), n]:
            if stop == begin:
                continue
            part_stamps = None if stamps is None else stamps[begin:stop]
            self.incidents.add(flags[begin:stop], part.scores[begin:stop], thresholds[begin:stop],
                               part.errors[begin:stop], part_stamps, index[begin:stop])  # fmt: skip
            lines += [event_line("close", incident) for incident in self.incidents.incidents]
            self.incidents.incidents.clear()
            if stop - 1 in opens:
                lines.append(event_line("open", self.incidents.current()))
            begin = stop
        return lines

    def to_dict(self) -> dict:
        return {"points": self.points.to_dict(), "rule": self.state.to_dict(), "tracker": self.incidents.to_dict(),
                "missing": {"last": encode_array(self.missing.last), "filled": self.missing.filled},
                "rows": self.waiting_rows, "stamps": self.stamps, "pushed": self.rows}  # fmt: skip

    def restore(self, record: dict) -> EntityStream:
        self.points.restore(record["points"])
        self.state = RuleState.from_dict(record["rule"])
        self.incidents.restore(record["tracker"])
        self.missing.last, self.missing.filled = decode_array(record["missing"]["last"]), record["missing"]["filled"]
        self.waiting_rows, self.stamps, self.rows = list(record["rows"]), list(record["stamps"]), int(record["pushed"])
        return self


class LiveDetector:
    """Rows of one input routed to their entity's EntityStream (one stream for a single model).

    make_stream(entity) builds the stream of an entity the first time a row names it; for a single model
    every row goes to entity None. Rows of an entity without a model (one the fleet was not trained on, or
    skipped in training) are left out and counted, so a new machine cannot stop the others' stream; warn gets
    one line the first time each such entity appears.
    """

    def __init__(self, make_stream: Callable[[str | None], EntityStream], routed: bool,
                 warn: Callable[[str], None] = lambda line: None) -> None:  # fmt: skip
        self.make_stream, self.routed, self.warn = make_stream, routed, warn
        self.streams: dict[str | None, EntityStream] = {}
        self.left_out: dict[str, int] = {}  # rows of each entity without a model
        self.warned: set[str] = set()  # those entities named on stderr by this process
        self.rows = 0  # input rows taken in

    def stream(self, entity: str | None) -> EntityStream:
        if entity not in self.streams:
            self.streams[entity] = self.make_stream(entity)
        return self.streams[entity]

    def push(self, values: np.ndarray, stamps: list[str] | None, entities: list[str] | None) -> list[str]:
        """(n, C) raw values in the model's column order; rows of one entity in a row go in together."""
        lines: list[str] = []
        numbers = list(range(self.rows, self.rows + len(values)))
        self.rows += len(values)
        if not self.routed:
            return self.stream(None).push(values, numbers, stamps)
        begin = 0
        for stop in range(1, len(values) + 1):
            if stop == len(values) or entities[stop] != entities[begin]:
                part_stamps = None if stamps is None else stamps[begin:stop]
                if self._has_model(entities[begin], numbers[begin]):
                    lines += self.stream(entities[begin]).push(values[begin:stop], numbers[begin:stop], part_stamps)
                else:
                    self.left_out[entities[begin]] = self.left_out.get(entities[begin], 0) + stop - begin
                begin = stop
        return lines

    def _has_model(self, entity: str, row: int) -> bool:
        if entity in self.streams:
            return True
        if entity not in self.warned:
            try:
                self.stream(entity)
                return True
            except UserInputError as error:
                self.warned.add(entity)
                self.warn(f"warning: the rows of {entity!r} are left out, from row {row} on: {error}")
        return False

    def finish(self) -> list[str]:
        lines: list[str] = []
        for stream in self.streams.values():
            lines += stream.finish()
        return lines

    def waiting(self) -> dict[str | None, int]:
        """Rows of each entity taken in but not yet decided."""
        return {entity: stream.points.waiting for entity, stream in self.streams.items()}

    def open_incidents(self) -> list[Incident]:
        return [incident for stream in self.streams.values() if (incident := stream.incidents.current()) is not None]

    def to_dict(self) -> dict:
        return {"rows": self.rows, "streams": [[entity, stream.to_dict()] for entity, stream in self.streams.items()],
                "left_out": self.left_out}  # fmt: skip

    def restore(self, record: dict) -> LiveDetector:
        self.rows = int(record["rows"])
        self.left_out = {entity: int(count) for entity, count in record.get("left_out", {}).items()}
        for entity, stream in record["streams"]:
            self.stream(entity).restore(stream)
        return self


def read_state(path: Path) -> dict | None:
    """The saved state of a stream, None when there is none yet."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"cannot read the --state file {path}: {error}; give another file to start over") from None
