"""detect.py --follow: score a growing CSV file or stdin as rows arrive, print incidents as they open and close.

The loop: read the lines that arrived, score every window they complete (evaluation/live.py), then
commit: with --state, the state goes to a temp file, synced, the event lines are printed, and the temp
is renamed over the state file, with SIGINT/SIGTERM held back meanwhile. A stop by signal lands between
two commits; a SIGKILL loses only the lines read since the last commit, which a restart reads again
(a file from the saved byte offset; stdin from the producer, which resumes at the saved row count).
Only a kill between printing and the rename (microseconds) repeats those lines on restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from data_factory.live_input import LineFeed, RowParser
from data_factory.readers import column_order
from evaluation.live import EntityStream, LiveDetector, read_state
from model.detector import Detector
from model.fleet import Fleet, load_detector
from runtime.atomic import Interrupted, atomic_path
from runtime.errors import UserInputError

STATE_FORMAT = 1
DEFAULT_POLL_SECONDS = 0.5


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done: a stop never splits scoring from its commit."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)  # a signal that came meanwhile is raised here


def _print_lines(lines: list[str], out: TextIO) -> None:
    if lines:
        out.write("".join(line + "\n" for line in lines))
        out.flush()


class Committer:
    """Prints event lines, and with a state file saves the state so that no line is lost or repeated."""

    def __init__(self, path: Path | None, out: TextIO) -> None:
        self.path, self.out = path, out

    def commit(self, state: dict, lines: list[str]) -> None:
        if self.path is None:
            _print_lines(lines, self.out)
            return
        text = json.dumps(state)
        with atomic_path(self.path) as temp:
            with open(temp, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            _print_lines(lines, self.out)  # after the state is on disk, just before the rename


def follow(
    checkpoint: str,
    source: str,
    out: TextIO,
    *,
    state_path: Path | None,
    poll_seconds: float,
    rule_options: dict,
    top_sensors: int,
    nan_policy: str,
    timestamp_column: str,
    device: str,
    entity: str | None,
    entity_column: str | None,
    err: TextIO = sys.stderr,
) -> int:
    """Run the live stream until stdin ends (0) or a signal stops it (128 + the signal)."""
    if poll_seconds <= 0:
        raise UserInputError(f"--poll-seconds must be positive, got {poll_seconds}")
    about = {"format": STATE_FORMAT, "checkpoint": str(checkpoint), "input": source, "entity": entity,
             "entity_column": entity_column}  # fmt: skip
    saved = _saved_stream(state_path, about, rule_options)
    routed = entity_column is not None
    detectors, pick = _stream_models(checkpoint, entity, routed, device)
    parser = RowParser("stdin" if source == "-" else source, timestamp_column, entity_column)
    if saved is not None:
        parser.header, parser.width, parser.rows = saved["header"], saved["width"], saved["rows"]
    names = next(iter(detectors.values())).channel_names
    order, matched = None, False  # the input's columns put in the model's order, once the first row arrives

    def make_stream(name: str | None) -> EntityStream:
        detector = pick(name).to(device)
        label = parser.name if name is None or not routed else f"{parser.name} ({name})"
        return EntityStream(detector, rule_options, entity=name, nan_policy=nan_policy, top_sensors=top_sensors,
                            timestamps=parser.stamp_index is not None, input_name=label)  # fmt: skip

    live = LiveDetector(make_stream, routed, warn=lambda line: print(line, file=err, flush=True))
    feed = LineFeed(source, saved["offset"] if saved and source != "-" else 0, poll_seconds,
                    saved.get("inode") if saved else None)  # fmt: skip
    committer = Committer(state_path, out)
    replay = ReplayGuard(saved, state_path, stdin=source == "-")  # stdin started again at an earlier row: refused
    slowest = max(detectors.values(), key=decision_lag)
    rows = "rows of its own entity" if routed else "rows"  # with interleaved entities, each waits for its own rows
    print(f"following {feed.name}: a point is decided at most {decision_lag(slowest)} {rows} after it arrives "
          f"({_lag_text(slowest)}); incidents as JSON lines on stdout", file=err)  # fmt: skip

    def state(finished: bool = False) -> dict:
        return {**about, "rule": rule_options, "finished": finished, "offset": feed.offset, "rows": parser.rows,
                "header": parser.header, "width": parser.width, "live": live.to_dict(),
                "last_stamps": replay.last_stamps, "inode": feed.inode}  # fmt: skip

    try:
        with signals_held():
            if saved is not None:
                live.restore(saved["live"])
                print(_resuming_line(state_path, parser.rows, feed.offset, source), file=err)
        while True:
            lines = feed.read()  # signals may stop the stream here, between commits
            if feed.reopened:  # a new file or the same one from its start: its header may come again
                print(f"note: {feed.reopened}", file=err, flush=True)
                feed.reopened, parser.at_start = None, True
            with signals_held():
                if lines is None:
                    events = live.finish()
                    committer.commit(state(finished=True), events)
                    break
                if not lines:
                    continue
                rows = parser.parse(lines)
                if not matched and len(rows.values):
                    order, matched = _model_order(parser, rows.values.shape[1], timestamp_column, names), True
                replay.check(rows.stamps, rows.entities, feed.name)
                values = rows.values if order is None else rows.values[:, order]
                events = live.push(values, rows.stamps, rows.entities)
                committer.commit(state(), events)  # the state after these rows
    except Interrupted as stopped:
        for line in stop_lines(live, str(stopped)):
            print(line, file=err)
        return 128 + stopped.signal_number
    finally:
        feed.close()
    scored = parser.rows - sum(live.left_out.values())
    print(f"end of {feed.name}: {scored} rows scored{left_out_text(live)}", file=err)
    return 0


def _model_order(parser: RowParser, width: int, timestamp_column: str, names: list[str]) -> np.ndarray | None:
    """The input's columns in the model's order (None: already in it), read once the first row has arrived."""
    table = parser.table()
    if timestamp_column != "timestamp" and table.columns is not None and table.stamp_column is None:
        raise UserInputError(f"{table.name} has no column {timestamp_column!r} (--timestamp-column)")
    order, _ = column_order(table, width, names)
    return order


def _resuming_line(state_path: Path | None, rows: int, offset: int, source: str) -> str:
    where = f" (byte {offset})" if source != "-" else "; stdin must go on from the next row"
    return f"resuming from {state_path}: {rows} rows already read{where}"


def left_out_text(live: LiveDetector) -> str:
    """The rows of entities without a model, as the end of a line: "; 12 rows of web-9 left out (no model)"."""
    if not live.left_out:
        return ""
    counts = ", ".join(f"{count} rows of {entity}" for entity, count in live.left_out.items())
    return f"; {counts} left out (no model)"


def _stamp_value(text: str) -> float | pd.Timestamp | None:
    """A timestamp as something ordered: a number, or an ISO 8601 date-time (other date orders, such as day
    first, are not guessed at); None where it reads as neither."""
    with contextlib.suppress(ValueError):
        return float(text)
    with contextlib.suppress(ValueError, TypeError):
        return pd.to_datetime(text, format="ISO8601")
    return None


def _goes_back(stamp: str, last: str) -> bool:
    """Whether a row stamped `stamp` certainly comes before one stamped `last`: earlier where both read as
    numbers or as ISO date-times; an equal stamp, or one that cannot be ordered, may go on."""
    new, old = _stamp_value(stamp), _stamp_value(last)
    if new is None or old is None or type(new) is not type(old):
        return False
    try:
        return bool(new < old)
    except TypeError:  # a date-time with a time zone against one without
        return False


class ReplayGuard:
    """The last timestamp read of each entity, kept in the state: stdin restarted with a first row of an entity
    earlier than that (replayed from its start, say) is refused before any of it is scored. A file resumes at its
    saved byte offset, so it cannot replay: only stdin is checked."""

    def __init__(self, saved: dict | None, state_path: Path | None, stdin: bool) -> None:
        self.last_stamps: dict[str, str] = dict(saved.get("last_stamps") or {}) if saved else {}
        # the entities whose first row since the restart is not seen yet
        self.unchecked = dict(self.last_stamps) if stdin else {}
        self.saved_rows = saved["rows"] if saved else 0
        self.state_path = state_path

    def check(self, stamps: list[str] | None, entities: list[str] | None, name: str) -> None:
        if stamps is None:
            return
        keys = entities if entities is not None else [""] * len(stamps)
        # Only the first rows after a restart are compared, one per entity; later batches just move last_stamps on.
        for key, stamp in zip(keys, stamps, strict=True):
            if not self.unchecked:
                break
            last = self.unchecked.pop(key, None)
            if last is not None and _goes_back(stamp, last):
                who = f" of {key}" if key else ""
                raise UserInputError(
                    f"{name} goes on at {stamp!r}{who}, before the last row{who} already read ({last!r}); the "
                    f"stream saved in {self.state_path} needs the rows after its first {self.saved_rows} (a file "
                    f"replayed through a pipe: tail -n +{self.saved_rows + 2} FILE)"
                )
        self.last_stamps.update(zip(keys, stamps, strict=True))  # each entity's last stamp in this batch wins


def _saved_stream(state_path: Path | None, about: dict, rule_options: dict) -> dict | None:
    """The state a stopped run of this same stream, under the same decision-rule flags, saved (None: none was asked
    for, or none saved yet)."""
    saved = read_state(state_path) if state_path is not None else None
    if saved is not None:
        if {key: saved.get(key) for key in about} != about:
            raise UserInputError(f"the --state file {state_path} belongs to another stream ({saved.get('input')} "
                                 f"with {saved.get('checkpoint')}); give another file to start over")  # fmt: skip
        if saved.get("rule", rule_options) != rule_options:  # a state from before the flags were kept: not known
            given = ", ".join(f"{key} {value}" for key, value in saved["rule"].items() if value is not None) or "none"
            raise UserInputError(f"the --state file {state_path} was saved under other decision-rule flags "
                                 f"({given}); resume with those, or give another file to start over")  # fmt: skip
        if saved["finished"]:
            raise UserInputError(f"the stream saved in {state_path} reached the end of its input; "
                                 "delete the file to start over")  # fmt: skip
    return saved


def _stream_models(
    checkpoint: str, entity: str | None, routed: bool, device: str
) -> tuple[dict[str | None, Detector], Callable[[str | None], Detector]]:
    """The models a stream may use and how a row's entity picks one: a bundle's by the entity column when
    routed, else the one model (a checkpoint's, or the --entity of a bundle) for every row."""
    if routed:
        if entity is not None:
            raise UserInputError("--entity and --entity-column both choose the model; give one of them")
        fleet = Fleet.load(checkpoint)
        return dict(fleet.detectors), fleet.detector
    only = load_detector(checkpoint, entity, device=device)
    return {entity: only}, lambda _: only


def decision_lag(detector: Detector) -> int:
    """Rows after a point that the stream reads before deciding it: up to win_size - 1 to fill its window,
    then the centred smoothing's look-ahead; the decision rule adds none."""
    smooth = detector.scoring_.smooth
    return detector.win_size - 1 + (smooth - smooth // 2 - 1 if smooth > 1 else 0)


def _lag_text(detector: Detector) -> str:
    smooth = detector.scoring_.smooth
    smoothing = f" + {smooth - smooth // 2 - 1} for the centred smoothing over {smooth}" if smooth > 1 else ""
    return f"up to {detector.win_size - 1} to fill its window of {detector.win_size}{smoothing}"


def stop_lines(live: LiveDetector, signal_name: str) -> list[str]:
    """What a stopped stream had not yet decided."""
    waiting = live.waiting()
    total = sum(waiting.values())
    parts = [f"stopped by {signal_name} after {live.rows} rows: {total} not yet scored{left_out_text(live)}"]
    if live.routed and total:
        parts[0] += " (" + ", ".join(f"{name} {count}" for name, count in waiting.items() if count) + ")"
    for incident in live.open_incidents():
        who = f" of {incident.entity}" if incident.entity else ""
        since = incident.start_time if incident.start_time is not None else f"row {incident.start}"
        parts.append(f"an incident{who} is open since {since} ({incident.duration} points so far); "
                     "it closes when the stream goes on")  # fmt: skip
    return parts
