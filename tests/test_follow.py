"""detect.py --follow on a real tiny model: push-style scoring equals batch scoring bit for bit, a real
process fed row by row through a pipe prints the batch run's incidents, a SIGKILLed stream restarted
from --state loses and repeats nothing, SIGTERM says what was left undecided, bad input exits 2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import detect
import train
from data_factory.registry import load_synth
from evaluation.follow import ReplayGuard
from model.score_settings import ScoreSettings
from model.scoring import PointStream, score_stream
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.errors import UserInputError
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
ROWS = 3000  # of SYNTH's test split: enough for a few incidents, fast to pipe
# The tiny model flags little at its stored 99th, and nothing through the guarded rule's 3 spreads: the budget
# rule is the windowed rule whose state the stream must carry (each rule's chunking: tests/test_alarm_rule.py).
RULE = ["--threshold-percentile", "90", "--alarm-rule", "budget"]


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """A tiny SYNTH model, the first ROWS test rows as a CSV with timestamps, and detect.py's incidents for them
    at --batch-size 1 (the batch a live stream scores)."""
    out = tmp_path_factory.mktemp("follow")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    data = load_synth()
    frame = pd.DataFrame(data.test[:ROWS], columns=data.channel_names)
    frame.insert(0, "timestamp", pd.date_range("2024-01-01", periods=ROWS, freq="min").astype(str))
    source = out / "day.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    checkpoint = out / "SYNTH_checkpoint.pth"
    batch = out / "batch" / "detections.csv"
    batch.parent.mkdir()
    code = detect.main(["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(batch),
                        "--batch-size", "1", "--device", "cpu", *RULE])  # fmt: skip
    assert code == 0
    incidents = json.loads((batch.parent / "detections_incidents.json").read_text())["incidents"]
    assert len(incidents) >= 2  # the comparison below means something
    lines = source.read_text().splitlines()
    return {"checkpoint": checkpoint, "source": source, "incidents": incidents, "lines": lines}


def follow_command(run, source, *extra):
    return [sys.executable, "detect.py", "--checkpoint", str(run["checkpoint"]), "--input", str(source), "--follow",
            "--device", "cpu", *RULE, *extra]  # fmt: skip


def start(command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_point_stream_pushed_row_by_row_and_restored_equals_the_batch_scores():
    torch.manual_seed(0)
    model = AnomalyTransformer(ModelConfig(n_channels=3, win_size=20, d_model=16, n_heads=2, e_layers=1, d_ff=32))
    series = np.random.default_rng(0).normal(size=(253, 3)).astype(np.float32)  # 12 windows and a 13-row tail
    settings = ScoreSettings("reconstruction", 50.0, None, 7)
    parts = list(score_stream(model, [series], settings, batch_size=1))
    expected_scores = np.concatenate([p.scores for p in parts])
    expected_errors = np.concatenate([p.errors for p in parts])
    stream = PointStream(model, settings)
    assert stream.lag == 19 + 3
    scores, errors = [], []
    for row in range(253):
        if row == 131:  # a restart: the state through JSON into a fresh stream
            stream = PointStream(model, settings).restore(json.loads(json.dumps(stream.to_dict())))
        part = stream.push(series[row : row + 1])
        scores.append(part.scores)
        assert row + 1 - sum(map(len, scores)) <= stream.lag  # every point decided within the lag
        errors.append(part.errors)
    rest = stream.finish()
    np.testing.assert_array_equal(np.concatenate([*scores, rest.scores]), expected_scores)
    np.testing.assert_array_equal(np.concatenate([*errors, rest.errors]), expected_errors)


@pytest.mark.slow
def test_stdin_fed_row_by_row_prints_the_batch_runs_incidents(stream_run):
    process = start(follow_command(stream_run, "-"))
    for line in stream_run["lines"]:
        process.stdin.write(line + "\n")
        process.stdin.flush()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    closes = [{k: v for k, v in event.items() if k != "event"} for event in events if event["event"] == "close"]
    assert closes == stream_run["incidents"]
    opens = [event for event in events if event["event"] == "open"]
    assert [event["start"] for event in opens] == [incident["start"] for incident in closes]
    for event in opens:  # announced at its first point: the incident as it stood then
        assert event["end"] == event["start"] and event["duration"] == 1 and event["peak_index"] == event["start"]
    for event in events:  # each open comes before its close
        assert events.index(event) >= [e["start"] for e in events].index(event["start"])
    assert "a point is decided at most" in err and f"{ROWS} rows scored" in err


def wait_for_rows(state: Path, rows: int, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if json.loads(state.read_text())["rows"] >= rows:
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the stream did not reach {rows} rows")


def follow_file(run, folder: Path, kill_at: int | None) -> list[str]:
    """Follow a file that grows in steps; with kill_at, SIGKILL the stream once that many rows are read and
    restart it with the same --state. SIGTERM at the end. Returns every line printed, in order."""
    source, state = folder / "growing.csv", folder / "stream.json"
    lines, step = run["lines"], 250
    source.write_text("\n".join(lines[:step]) + "\n")
    command = follow_command(run, source, "--state", str(state), "--poll-seconds", "0.02")
    process, printed = start(command), []
    written = step
    while written < len(lines):
        wait_for_rows(state, written - 1, process)
        if kill_at is not None and written - 1 >= kill_at:
            process.send_signal(signal.SIGKILL)
            printed += process.communicate(timeout=30)[0].splitlines()
            process, kill_at = start(command), None
        with open(source, "a") as handle:
            chunk = lines[written : written + step]
            handle.write("\n".join(chunk[:-1]) + "\n" + chunk[-1])  # the last line without its newline, for now
        time.sleep(0.1)
        with open(source, "a") as handle:
            handle.write("\n")
        written += len(chunk)
    wait_for_rows(state, len(lines) - 1, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after" in err and "not yet scored" in err
    return printed + out.splitlines()


@pytest.mark.slow
def test_a_stream_killed_and_restarted_from_its_state_loses_and_repeats_nothing(stream_run, tmp_path):
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    whole = follow_file(stream_run, tmp_path / "whole", kill_at=None)
    resumed = follow_file(stream_run, tmp_path / "killed", kill_at=1500)
    assert resumed == whole and len(set(resumed)) == len(resumed)
    # Everything but the last incident, which SIGTERM left open, is closed as the batch run closed it.
    closes = [json.loads(line) for line in whole if json.loads(line)["event"] == "close"]
    assert [{k: v for k, v in c.items() if k != "event"} for c in closes] == stream_run["incidents"][: len(closes)]


@pytest.mark.slow
def test_a_followed_file_rotated_then_truncated_is_read_on_like_tail_capital_f(stream_run, tmp_path):
    source, state = tmp_path / "growing.csv", tmp_path / "stream.json"
    header, rows = stream_run["lines"][0], stream_run["lines"][1:]
    source.write_text("\n".join([header, *rows[:1000]]) + "\n")
    process = start(follow_command(stream_run, source, "--state", str(state), "--poll-seconds", "0.02"))
    wait_for_rows(state, 1000, process)
    source.rename(tmp_path / "growing.csv.1")  # logrotate's create: renamed, a new file under the name
    source.write_text("\n".join([header, *rows[1000:2000]]) + "\n")
    wait_for_rows(state, 2000, process)
    with open(source, "r+") as handle:  # logrotate's copytruncate, the writer going on from the start at once
        handle.truncate(0)
        handle.write("\n".join([header, *rows[2000:]]) + "\n")
    wait_for_rows(state, len(rows), process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "was rotated (a new file under its name)" in err and "was truncated while it was followed" in err
    assert json.loads(state.read_text())["rows"] == len(rows)  # every row once: no header read as a row
    closes = [json.loads(line) for line in out.splitlines() if json.loads(line)["event"] == "close"]
    assert len(closes) >= 2 and closes[-1]["end"] >= 2000  # incidents after both turns, as the whole file gives them
    assert [{k: v for k, v in c.items() if k != "event"} for c in closes] == stream_run["incidents"][: len(closes)]


@pytest.mark.slow
def test_bad_row_mid_stream_exits_2_and_keeps_the_saved_state(stream_run, tmp_path):
    state = tmp_path / "stream.json"
    process = start(follow_command(stream_run, "-", "--state", str(state)))
    process.stdin.write("\n".join(stream_run["lines"][:301]) + "\n")  # the header and 300 rows
    process.stdin.flush()
    wait_for_rows(state, 300, process)
    out, err = process.communicate("2024-02-01,1,oops" + ",1" * 10 + "\n", timeout=120)
    assert process.returncode == 2 and err.strip().splitlines()[-1].startswith("error: ")
    assert "has non-numeric columns ['sensor_01'] (first: 'oops' in row 300)" in err
    assert json.loads(state.read_text())["rows"] == 300  # the last commit before the bad row


def test_a_saved_stream_resumes_only_under_the_decision_rule_it_was_saved_with(stream_run, tmp_path):
    state = tmp_path / "stream.json"
    process = start(follow_command(stream_run, "-", "--state", str(state)))
    process.communicate("\n".join(stream_run["lines"][:201]) + "\n", timeout=120)  # the header, 200 rows, the end
    assert process.returncode == 0 and json.loads(state.read_text())["finished"]
    other = start([*follow_command(stream_run, "-", "--state", str(state)), "--alarm-window", "500"])
    _, err = other.communicate("", timeout=120)
    assert other.returncode == 2 and "was saved under other decision-rule flags (percentile 90.0, kind budget)" in err
    same = start(follow_command(stream_run, "-", "--state", str(state)))
    _, err = same.communicate("", timeout=120)
    assert same.returncode == 2 and "reached the end of its input" in err


def test_a_restarted_stream_fed_its_input_again_from_the_start_is_refused_and_then_goes_on(stream_run, tmp_path):
    state = tmp_path / "stream.json"
    lines = stream_run["lines"]  # the header, then one row a minute from 2024-01-01 00:00
    first = start(follow_command(stream_run, "-", "--state", str(state)))
    first.stdin.write("\n".join(lines[:301]) + "\n")
    first.stdin.flush()
    wait_for_rows(state, 300, first)
    first.kill()  # a SIGKILL, the producer then replaying the whole day (cat day.csv | ...)
    first.communicate(timeout=60)
    replayed = start(follow_command(stream_run, "-", "--state", str(state)))
    out, err = replayed.communicate("\n".join(lines[:401]) + "\n", timeout=120)
    assert replayed.returncode == 2 and not out
    assert ("goes on at '2024-01-01 00:00:00', before the last row already read ('2024-01-01 04:59:00')"
            in err and "tail -n +302 FILE" in err)  # fmt: skip
    assert json.loads(state.read_text())["rows"] == 300  # nothing of the replay was taken in
    resumed = start(follow_command(stream_run, "-", "--state", str(state)))
    _, err = resumed.communicate("\n".join([lines[0], *lines[301:401]]) + "\n", timeout=120)
    assert resumed.returncode == 0 and "400 rows scored" in err


def test_the_replay_guard_refuses_only_a_row_certainly_earlier_and_only_on_stdin():
    saved = {"last_stamps": {"pump": "2024-01-31T23:59:00", "fan": "1700000060"}, "rows": 10}
    guard = ReplayGuard(saved, Path("s.json"), stdin=True)
    # The same minute again, a day-first date (not guessed at) and another entity's stamps all go on.
    guard.check(["2024-01-31T23:59:00", "01/02/2024 00:00", "1700000060"], ["pump", "pump", "fan"], "stdin")
    again = ReplayGuard(saved, Path("s.json"), stdin=True)
    with pytest.raises(UserInputError, match=r"stdin goes on at '1700000000' of fan, before the last row of fan"):
        again.check(["1700000000"], ["fan"], "stdin")
    ReplayGuard(saved, Path("s.json"), stdin=False).check(["1700000000"], ["fan"], "day.csv")  # a file: its offset


def test_a_stream_with_semicolons_between_its_fields_is_refused_by_name(stream_run):
    process = start(follow_command(stream_run, "-"))
    out, err = process.communicate("flow;temp\n1,5;2,5\n", timeout=120)
    assert process.returncode == 2 and out == ""
    assert "error: stdin separates its fields with ';', not commas" in err


def test_a_stream_whose_header_leaves_a_column_unnamed_is_refused(stream_run):
    header, *rows = stream_run["lines"][:3]
    process = start(follow_command(stream_run, "-"))
    out, err = process.communicate("\n".join(["," + header, *(f"{n}," + row for n, row in enumerate(rows))]) + "\n",
                                   timeout=120)  # fmt: skip
    assert process.returncode == 2 and out == ""
    assert "error: stdin's header leaves column 0 without a name" in err


def test_follow_refuses_the_flags_of_a_whole_file_run(stream_run, capsys):
    args = ["--checkpoint", str(stream_run["checkpoint"]), "--input", "-", "--follow"]
    assert detect.main([*args, "--output", "x.csv"]) == 2
    assert "--output does not go with --follow" in capsys.readouterr().err
    assert detect.main([*args, "--poll-seconds", "0"]) == 2
    assert "--poll-seconds must be positive" in capsys.readouterr().err


def fleet_stream(tmp_path):
    """A tiny fleet (east, west), their TEST rows interleaved as one CSV, and detect.py's incidents for it."""
    from tests.test_fleet import write_fleet_data

    data = write_fleet_data(tmp_path)
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1",
                       "--output-dir", str(tmp_path / "out"), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    test = np.load(data / "test_data.npy")
    order = [("east", i) for i in range(300)] + [("west", 300 + i) for i in range(280)]
    order = sorted(order, key=lambda item: (item[1] % 300, item[0]))  # the two entities' rows interleaved
    frame = pd.DataFrame(test[[row for _, row in order]], columns=["a", "b", "c"])
    frame.insert(0, "channel", [name for name, _ in order])
    source = tmp_path / "all.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    bundle, batch = tmp_path / "out" / "CUSTOM_fleet.pth", tmp_path / "batch" / "d.csv"
    batch.parent.mkdir()
    flags = ["--checkpoint", str(bundle), "--entity-column", "channel", "--device", "cpu", *RULE]
    assert detect.main([*flags, "--input", str(source), "--output", str(batch), "--batch-size", "1"]) == 0
    expected = json.loads((tmp_path / "batch" / "d_incidents.json").read_text())["incidents"]
    assert len(expected) >= 2  # the comparisons mean something
    return flags, source.read_text().splitlines(), expected


def closed_incidents(out: str) -> list[dict]:
    closes = [{k: v for k, v in json.loads(line).items() if k != "event"} for line in out.splitlines()
              if json.loads(line)["event"] == "close"]  # fmt: skip
    return sorted(closes, key=lambda incident: (incident["entity"], incident["start"]))


@pytest.mark.slow
def test_a_fleet_routed_by_entity_column_prints_the_batch_runs_incidents(tmp_path):
    flags, lines, expected = fleet_stream(tmp_path)
    process = start([sys.executable, "detect.py", *flags, "--input", "-", "--follow"])
    out, err = process.communicate("\n".join(lines) + "\n", timeout=120)
    assert process.returncode == 0, err
    assert closed_incidents(out) == expected


@pytest.mark.slow
def test_rows_of_an_entity_the_fleet_has_no_model_for_are_left_out_and_the_others_go_on(tmp_path):
    flags, lines, expected = fleet_stream(tmp_path)
    cut = 100  # a machine that was not trained starts sending after input row 99, and again at the end
    stray = "north,1,2,3"
    fed = [*lines[: cut + 1], stray, *lines[cut + 1 :], stray, stray]
    process = start([sys.executable, "detect.py", *flags, "--input", "-", "--follow"])
    out, err = process.communicate("\n".join(fed) + "\n", timeout=120)
    assert process.returncode == 0, err
    for incident in expected:  # the input rows after the stray one moved down by one
        for key in ("start", "end", "peak_index", "error_peak_index"):
            if incident[key] is not None and incident[key] >= cut:
                incident[key] += 1
    assert closed_incidents(out) == expected
    assert err.count("warning: the rows of 'north' are left out, from row 100 on: unknown entity 'north'") == 1
    assert f"end of stdin: {len(lines) - 1} rows scored; 3 rows of north left out (no model)" in err
