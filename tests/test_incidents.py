"""Incidents from a real tiny model: evaluate.py's agree with its segment attribution, detect.py's with
evaluate.py's whatever the chunking, and a fleet evaluation lists each entity's."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

import detect
import evaluate
import train
from data_factory.registry import load_synth
from evaluation.attribution import train_error_scale
from evaluation.incidents import IncidentTracker, find_incidents
from evaluation.report import evaluate_checkpoint, evaluation_page
from model.detector import Detector
from tests.test_fleet import train_tiny_fleet, write_routed_csv
from tests.tiny import TINY_TRAIN_FLAGS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny SYNTH model, its evaluation, and the per-channel test errors of its scoring."""
    out = tmp_path_factory.mktemp("incidents")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    checkpoint = out / "SYNTH_checkpoint.pth"
    evaluation = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device="cpu")
    detector = Detector.load(checkpoint)
    data = load_synth()
    points = detector.score_points(data.test)
    return {"dir": out, "checkpoint": checkpoint, "evaluation": evaluation, "detector": detector, "data": data,
            "errors": points.errors}  # fmt: skip


def test_evaluate_incidents_are_the_attributed_segments_with_severity_over_the_threshold(run):
    evaluation = run["evaluation"]
    model, segments = evaluation.model, evaluation.attribution.segments
    assert len(evaluation.incidents) == len(segments) > 0
    names = evaluation.attribution.channel_names
    for incident, segment in zip(evaluation.incidents, segments, strict=True):
        assert (incident.start, incident.end, incident.peak_index) == (segment.start, segment.end, segment.peak_index)
        assert incident.entity == "SYNTH" and incident.duration == segment.end - segment.start + 1
        assert incident.peak_score == pytest.approx(segment.peak_score)
        ratios = model.scores[incident.start : incident.end + 1] / model.thresholds[incident.start : incident.end + 1]
        assert incident.severity == pytest.approx(ratios.max())  # the decision rule's threshold at each point
        assert incident.severity > 1  # every flagged point is above the threshold
        expected = [(names[channel], share) for channel, share in segment.top(3)]
        assert [name for name, _ in incident.top_sensors] == [name for name, _ in expected]
        np.testing.assert_allclose([s for _, s in incident.top_sensors], [s for _, s in expected], rtol=1e-9)


def test_streamed_incidents_do_not_depend_on_where_the_series_is_cut(run):
    model, errors = run["evaluation"].model, run["errors"]
    scale = train_error_scale(run["detector"].train_channel_error_)
    names = run["data"].channel_names
    flags, thresholds = model.predictions, model.thresholds
    whole = find_incidents(flags, model.scores, thresholds, errors, names, scale=scale)
    # Cut inside incidents too: at each incident's second point, and at random places.
    cuts = sorted({i.start + 1 for i in whole} | set(np.random.default_rng(0).integers(1, len(flags), 40).tolist()))
    tracker = IncidentTracker(names, scale)
    for start, stop in zip([0, *cuts], [*cuts, len(flags)], strict=True):
        tracker.add(flags[start:stop], model.scores[start:stop], thresholds[start:stop], errors[start:stop])
    streamed = tracker.finish()
    assert [(i.start, i.end, i.peak_index, i.duration, i.error_peak_index) for i in streamed] == [
        (i.start, i.end, i.peak_index, i.duration, i.error_peak_index) for i in whole
    ]
    for a, b in zip(streamed, whole, strict=True):
        assert [n for n, _ in a.top_sensors] == [n for n, _ in b.top_sensors]
        np.testing.assert_allclose([s for _, s in a.top_sensors], [s for _, s in b.top_sensors], rtol=1e-9)


def test_the_error_peak_is_where_the_score_channels_unsmoothed_error_is_highest_over_train():
    names = ["valve", "fan", "flag"]
    errors = np.ones((8, 3))
    errors[3, 2] = 500.0  # a command flag toggling: not a channel the score reads
    errors[5, 1] = 40.0  # the fan's fault: 40 over a TRAIN error of 2 is 20, the valve's 6 over 0.25 is 24
    errors[6, 0] = 6.0
    scale = np.array([0.25, 2.0, 1.0])
    flags = np.array([0, 1, 1, 1, 1, 1, 1, 0], dtype=np.uint8)
    scores = np.array([0, 2, 3, 4, 5, 4, 3, 0], dtype=float)  # a smoothed score peaks at 4, away from the fault
    stamps = np.array([f"t{i}" for i in range(8)])
    (incident,) = find_incidents(flags, scores, 1.0, errors, names, stamps, scale=scale, score_channels=[0, 1])
    # relative sums over valve and fan: point 5 is 4 + 20 = 24, point 6 is 24 + 0.5 = 24.5, the others 4.5
    assert (incident.peak_index, incident.error_peak_index, incident.error_peak_time) == (4, 6, "t6")
    (every,) = find_incidents(flags, scores, 1.0, errors, names, scale=scale)  # all channels: the flag's toggle
    assert every.error_peak_index == 3
    assert incident.to_json()["error_peak_index"] == 6
    errors[:, 2] = np.nan  # the unread channel overflowed everywhere: the peak still reads valve and fan
    (incident,) = find_incidents(flags, scores, 1.0, errors, names, scale=scale, score_channels=[0, 1])
    assert incident.error_peak_index == 6 and incident.top_sensors == ()  # no row with every error finite


def test_a_streams_state_from_before_the_error_peak_resumes_its_open_incident():
    names = ["a", "b"]
    tracker = IncidentTracker(names)
    tracker.add(np.ones(3, np.uint8), np.arange(3.0), 1.0, np.ones((3, 2)))
    state = tracker.to_dict()
    for key in ("error_peak_key", "error_peak_index", "error_peak_time"):  # what older states lack
        del state["open"][key]
    resumed = IncidentTracker(names).restore(state)
    errors = np.ones((2, 2))
    errors[1] = 9.0
    resumed.add(np.array([1, 0], np.uint8), np.array([5.0, 0.0]), 1.0, errors)
    (incident,) = resumed.finish()
    assert (incident.start, incident.end, incident.error_peak_index) == (0, 3, 3)


def test_severity_is_the_peak_of_score_over_a_per_point_threshold(run):
    errors = run["errors"][:6]
    scores = np.array([0.0, 3.0, 5.0, 4.0, 0.0, 9.0])
    thresholds = np.array([1.0, 1.0, 4.0, 1.0, 1.0, -1.0])  # point 3 peaks at 4x; point 2's 5 is only 1.25x
    flags = np.array([0, 1, 1, 1, 0, 1], dtype=np.uint8)
    first, last = find_incidents(flags, scores, thresholds, errors, run["data"].channel_names, entity="plant")
    assert (first.start, first.end, first.duration, first.peak_index, first.severity) == (1, 3, 3, 3, 4.0)
    assert first.entity == "plant" and sum(share for _, share in first.top_sensors) <= 1
    assert last.severity is None  # no ratio to a threshold that is not positive


def test_detect_writes_evaluates_incidents_with_timestamps_whatever_the_chunking(run, tmp_path):
    data, evaluation = run["data"], run["evaluation"]
    stamps = pd.date_range("2024-01-01", periods=len(data.test), freq="min").strftime("%Y-%m-%dT%H:%M")
    frame = pd.DataFrame(data.test, columns=data.channel_names)
    frame.insert(0, "timestamp", stamps)
    source = tmp_path / "day.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    written = []
    for chunk_rows in ("100000", "777"):
        output = tmp_path / f"chunks{chunk_rows}" / "detections.csv"
        output.parent.mkdir()
        assert detect.main(["--checkpoint", str(run["checkpoint"]), "--input", str(source), "--output", str(output),
                            "--chunk-rows", chunk_rows, "--device", "cpu"]) == 0  # fmt: skip
        document = json.loads((output.parent / "detections_incidents.json").read_text())
        with open(output.parent / "detections_incidents.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        report = json.loads(output.with_suffix(".json").read_text())
        assert len(rows) == document["n_incidents"] == report["n_incidents"] and "incidents" not in report
        written.append(document["incidents"])
    assert written[0] == written[1]
    expected = evaluation.incidents
    assert [(i["start"], i["end"], i["peak_index"]) for i in written[0]] == [
        (i.start, i.end, i.peak_index) for i in expected
    ]
    first = written[0][0]
    assert (first["start_time"], first["end_time"]) == (stamps[first["start"]], stamps[first["end"]])
    assert first["severity"] == pytest.approx(expected[0].severity, rel=1e-6)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    data, out = train_tiny_fleet(tmp_path_factory.mktemp("fleet_incidents"))
    return {"data": data, "out": out}


def test_evaluate_per_entity_writes_each_entitys_incidents(fleet, capsys):
    args = ["--dataset", "CUSTOM", "--data-dir", str(fleet["data"]), "--per-entity", "--output-dir", str(fleet["out"]),
            "--baselines", "pca", "--device", "cpu", "--jobs", "1", "--top-sensors", "2"]  # fmt: skip
    assert evaluate.main(args) == 0
    document = json.loads((fleet["out"] / "CUSTOM_fleet_incidents.json").read_text())
    with open(fleet["out"] / "CUSTOM_fleet_incidents.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == document["n_incidents"] > 0 and document["top_k"] == 2
    assert document["threshold_rule"].startswith("each entity's decision rule")  # the key evaluate.py's file uses
    assert {row["entity"] for row in rows} <= {"east", "west"}  # stub was skipped in training
    assert all(float(row["severity"]) > 1 and row["sensor_2"] for row in rows)
    # The injected anomaly is on channel 1 of points 100 to 119: an incident there names it first.
    hit = [row for row in rows if int(row["start"]) <= 119 and int(row["end"]) >= 100]
    assert hit and all(row["sensor_1"] == "ch1" for row in hit)


def test_detect_routed_by_entity_reports_each_entitys_incidents_at_input_rows(fleet, tmp_path):
    source = tmp_path / "mixed.csv"
    rows = write_routed_csv(fleet["data"], source)
    output = tmp_path / "routed.csv"
    assert detect.main(["--checkpoint", str(fleet["out"] / "CUSTOM_fleet.pth"), "--input", str(source),
                        "--output", str(output), "--entity-column", "entity", "--device", "cpu"]) == 0  # fmt: skip
    incidents = json.loads((tmp_path / "routed_incidents.json").read_text())["incidents"]
    assert incidents and {i["entity"] for i in incidents} <= {"east", "west"}
    for incident in incidents:  # start, end and peak are input rows of the incident's own entity
        ends = (incident["start"], incident["end"], incident["peak_index"])
        assert {rows[i][0] for i in ends} == {incident["entity"]}
    # east's injected anomaly (its test points 100 to 119) lies at input rows 100 to 119
    hit = [i for i in incidents if i["entity"] == "east" and i["start"] <= 119 and i["end"] >= 100]
    assert hit and hit[0]["top_sensors"][0]["name"] == "ch1"


def test_the_report_page_draws_the_threshold_each_point_was_judged_by(run):
    model = run["evaluation"].model
    (entity,) = evaluation_page(run["evaluation"]).entities
    assert np.array_equal(entity.scores > entity.thresholds, model.predictions.astype(bool))
    assert np.ptp(entity.thresholds) > 0  # the default rule raises it with the recent scores: no flat line
