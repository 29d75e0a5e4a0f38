"""evaluation/grading.py: one method graded on one series, on toys worked out by hand, and the fleet report's
metrics equal to that grading of each entity's own scores."""

import re

import numpy as np
import pytest

import train
from data_factory.registry import load_dataset
from evaluation.fleet_report import EntityScores, FleetEvaluation, evaluate_fleet, format_fleet_table
from evaluation.grading import PER_ENTITY_METRICS, RANKING_METRICS, grade
from evaluation.result import alarm_decision, judge
from evaluation.tsb_vus import dominant_period
from model.alarm_rule import AlarmSettings
from model.fleet import Fleet
from tests.test_fleet import write_fleet_data
from tests.tiny import TINY_TRAIN_FLAGS

TRAIN = np.linspace(0.0, 1.0, 50)  # TRAIN scores that vary: no toy below is degenerate by its TRAIN scores


def toy_labels() -> np.ndarray:
    """20 points, two labelled segments: [5, 8) and [14, 15); 4 anomalous, 16 normal."""
    labels = np.zeros(20, dtype=np.uint8)
    labels[5:8] = labels[14] = 1
    return labels


def test_perfect_scores_rank_perfectly_and_flags_on_the_labels_raise_no_false_alarm():
    labels = toy_labels()
    scores = np.where(labels == 1, 0.9, 0.1) + 0.001 * np.arange(20)  # every anomaly above every normal point
    graded = grade(labels, TRAIN, scores, scores > 0.5, 0.5, panel=True)
    assert graded.degenerate_reason is None and graded.two_classes
    assert graded.ranking["roc_auc"] == 1.0 and graded.ranking["pr_auc"] == 1.0 and graded.ranking["best_f1"] == 1.0
    np.testing.assert_array_equal(graded.flags, labels)
    assert graded.alarms["f1"] == 1.0 and graded.alarms["event_f1"] == 1.0
    assert graded.alarms["false_alarm_rate"] == 0.0 and graded.alarms["missed_alarm_rate"] == 0.0
    assert graded.alarms["flagged_share"] == pytest.approx(4 / 20) and graded.alarms["false_alarm_events_per_10k"] == 0
    assert graded.panel["precision"] == 1.0 and graded.panel["recall"] == 1.0 and graded.panel["pa_f1"] == 1.0


def test_a_rule_flagging_all_but_the_first_point_is_counted_by_hand():
    labels = toy_labels()
    scores = np.arange(20) / 20  # the threshold 0 flags points 1..19: one alarm event over both segments
    graded = grade(labels, TRAIN, scores, scores > 0.0, np.zeros(20))
    alarms = graded.alarms
    assert alarms["flagged_share"] == pytest.approx(19 / 20) and alarms["anomaly_share"] == pytest.approx(4 / 20)
    assert alarms["false_alarm_rate"] == pytest.approx(15 / 16)  # 15 of the 16 normal points flagged
    assert alarms["missed_alarm_rate"] == 0.0
    assert alarms["f1"] == pytest.approx(2 * 4 / (2 * 4 + 15 + 0))  # TP 4, FP 15, FN 0
    assert alarms["event_precision"] == 1.0 and alarms["event_recall"] == 1.0  # its one event overlaps a label
    assert alarms["false_alarm_events_per_10k"] == 0.0
    assert alarms["within_flag_bound"] == 0.0  # 0.95 flagged > 2 * 0.2 + 0.01


def test_a_rule_that_flags_everything_is_degenerate_and_keeps_only_the_shares():
    labels = toy_labels()
    scores = np.arange(20) / 20
    graded = grade(labels, TRAIN, scores, np.ones(20), -1.0, panel=True)
    assert graded.degenerate_reason == "the threshold -1 flags all 20 TEST points"
    assert graded.alarms["flagged_share"] == 1.0 and graded.alarms["anomaly_share"] == pytest.approx(0.2)
    assert graded.alarms["false_alarm_rate"] is None
    assert graded.alarms["within_flag_bound"] == 0.0  # flagging every point floods: 1.0 > 2 * 0.2 + 0.01
    assert graded.panel["flagged_share"] == 1.0 and graded.panel["f1"] is None and graded.panel["pa_f1"] is None
    # The ranking still reads the scores: anomalies 5, 6, 7 beat the 5 normal points 0..4, and 14 beats 11 of them.
    assert graded.panel["roc_auc"] == pytest.approx((5 + 5 + 5 + 11) / (4 * 16))


@pytest.mark.parametrize("labels", [np.zeros(20, dtype=np.uint8), np.ones(20, dtype=np.uint8)], ids=["none", "all"])
def test_labels_of_one_class_leave_every_ranking_metric_undefined(labels):
    scores = np.arange(20) / 20
    graded = grade(labels, TRAIN, scores, scores > 0.9, 0.9, tsb_window=4, panel=True)
    assert not graded.two_classes
    assert all(graded.ranking[key] is None for key in (*RANKING_METRICS, "vus_roc", "vus_pr", "tsb_vus_window"))
    assert all(graded.panel[key] is None for key in ("roc_auc", "pr_auc", "vus_roc", "vus_pr", "best_f1"))
    entity = graded.per_entity()
    assert list(entity) == list(PER_ENTITY_METRICS)  # no TSB-AD window where no VUS was computed
    assert graded.alarms["flagged_share"] == pytest.approx(1 / 20)  # point 19 only


def test_without_anomalies_the_panel_counts_a_zero_f1_and_the_alarm_metrics_none():
    labels = np.zeros(20, dtype=np.uint8)
    scores = np.arange(20) / 20
    graded = grade(labels, TRAIN, scores, scores > 0.85, 0.85, panel=True)  # flags 18 and 19: false alarms
    assert graded.panel["f1"] == 0.0 and graded.alarms["f1"] is None
    assert graded.alarms["false_alarm_rate"] == pytest.approx(2 / 20) and graded.alarms["missed_alarm_rate"] is None


def test_without_labels_only_the_flags_and_the_degeneracy_are_graded():
    graded = grade(None, np.zeros(50), np.arange(20) / 20, np.zeros(20), 2.0)
    assert graded.degenerate_reason == "its TRAIN scores are constant (0)"
    assert graded.ranking == {} and graded.alarms == {} and graded.panel == {}


def test_judge_flags_what_the_streaming_rule_flags_when_scores_go_non_finite():
    rng = np.random.default_rng(0)
    train_scores = rng.gamma(4.0, 0.25, 3000)
    test = rng.gamma(4.0, 0.25, 2000)
    test[500:650] = np.inf  # a stretch the model cannot score (inputs far outside TRAIN's range)
    test[800:810] += 20.0  # a spike after it
    labels = np.zeros(2000, dtype=np.uint8)
    labels[800:810] = 1
    alarm = AlarmSettings()
    result = judge("the model", train_scores, test, labels, alarm_decision(alarm))
    streamed, thresholds, _ = alarm.fit(train_scores).flags(test)  # what detect.py raises on these scores
    np.testing.assert_array_equal(result.predictions, streamed)
    np.testing.assert_array_equal(result.thresholds, thresholds)
    assert result.predictions[500:650].all() and result.predictions[800:810].all()
    assert result.non_finite == 150 and np.isfinite(result.scores).all()  # ranked as the most anomalous


def test_the_panel_of_a_threshold_reads_precision_recall_and_point_adjustment_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.0, 0.05, 0.15])
    panel = grade(labels, TRAIN, scores, scores > 0.5, 0.5, panel=True).panel
    assert panel["precision"] == 1.0 and panel["recall"] == pytest.approx(1 / 3)  # point 3 of 2, 3, 4
    assert panel["pa_precision"] == 1.0 and panel["pa_recall"] == 1.0 and panel["pa_f1"] == 1.0
    assert panel["roc_auc"] == 1.0  # every anomalous score is above every normal one
    assert panel["flagged_share"] == pytest.approx(1 / 8)


def test_the_fleet_table_counts_each_alarm_metric_over_the_entities_whose_labels_define_it():
    # Three entities of 20 points. A: anomalies [5, 10), flags 6, 7 and 15. B: no anomaly, flag 3. C: anomalies
    # [2, 4), no flag. pca's flags are the model's, but on A its TRAIN scores are constant: degenerate, so its rates,
    # F1 and event counts on A are null and its means run over fewer entities than the labels define them on.
    spans, flagged = ((5, 10), None, (2, 4)), ((6, 7, 15), (3,), ())
    entities = []
    for name, span, points in zip("ABC", spans, flagged, strict=True):
        labels, flags = np.zeros(20, dtype=np.uint8), np.zeros(20, dtype=np.uint8)
        if span:
            labels[span[0] : span[1]] = 1
        flags[list(points)] = 1
        scores = flags + np.arange(20) / 2000  # above the threshold 0.5 exactly where flagged
        entity = EntityScores(name, labels, {}, {})
        entity.metrics = {"model": grade(labels, TRAIN, scores, flags, 0.5).per_entity(),
                          "pca": grade(labels, np.zeros(50) if name == "A" else TRAIN, scores, flags,
                                       0.5).per_entity()}  # fmt: skip
        entities.append(entity)
    evaluation = FleetEvaluation("MSL", ["model", "pca"], entities, {}, {}, AlarmSettings())
    lines = format_fleet_table(evaluation).splitlines()
    rows = {line.split()[0]: re.split(r"\s{2,}", line.strip())[1:] for line in lines
            if line.startswith(("model ", "pca "))}  # the ranking rows, then the alarm rows, which overwrite them
    columns = ("f1", "best_f1", "flagged", "anomalous", "false_alarm_rate", "missed_alarm_rate", "event_f1",
               "false_events_per_10k", "not_flooding")  # fmt: skip
    model, pca = dict(zip(columns, rows["model"], strict=True)), dict(zip(columns, rows["pca"], strict=True))
    # False alarm rate, defined on all three (each has normal points): A 1/15 (point 15), B 1/20, C 0/18;
    # mean 7/180 = 0.0389, std sqrt((1/15^2 + 1/20^2) / 3 - 0.0389^2) = 0.0283. pca: B and C only, 0.025 +- 0.025 (2).
    assert model["false_alarm_rate"] == "0.039 ± 0.028" and pca["false_alarm_rate"] == "0.025 ± 0.025 (2)"
    # False alarm events per 10,000 points, defined on all three: A 1 (the run at 15), B 1, C 0 -> 500, 500, 0.
    assert model["false_events_per_10k"] == "333.333 ± 235.702"
    assert pca["false_events_per_10k"] == "250.000 ± 250.000 (2)"
    # F1 and missed alarm rate, defined on A and C (B has no anomaly): A: TP 2, FP 1, P 5 -> 2 * 2 / (2 + 1 + 5) = 0.5,
    # misses 3/5; C: F1 0, misses 2/2. pca: C alone.
    assert model["f1"] == "0.250 ± 0.250" and pca["f1"] == "0.000 ± 0.000 (1)"
    assert model["missed_alarm_rate"] == "0.800 ± 0.200" and pca["missed_alarm_rate"] == "1.000 ± 0.000 (1)"
    # Kept for a degenerate method: flagged 3/20, 1/20, 0; within the bound on A (0.15 <= 0.51) and C, not on B
    # (0.05 > 0.01).
    assert pca["flagged"] == model["flagged"] == "0.067 ± 0.062" and pca["not_flooding"] == "0.667 ± 0.471"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    data = write_fleet_data(root)
    out = root / "out"
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--output-dir", str(out),
                       *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    bundle = out / "CUSTOM_fleet.pth"
    evaluation = evaluate_fleet(bundle, "CUSTOM", data, baselines=("random", "pca"), device="cpu", jobs=1)
    return data, Fleet.load(bundle), evaluation


def test_each_entitys_metrics_in_the_fleet_report_are_the_grading_of_its_own_scores(fleet):
    data, bundle, evaluation = fleet
    assert [entity.entity for entity in evaluation.entities] == ["east", "west"]  # "stub" is too short to train
    for entity in evaluation.entities:
        detector = bundle.detectors[entity.entity]
        test = detector.normalizer_.transform(load_dataset("CUSTOM", data, entity.entity).test)
        window = dominant_period(test[:, 0])
        for method in evaluation.methods:
            train_scores, test_scores = entity.train[method], entity.test[method]
            flags, thresholds, _ = evaluation.alarm.fit(train_scores).flags(test_scores)
            expected = grade(entity.labels, train_scores, test_scores, flags, thresholds, tsb_window=window)
            assert entity.metrics[method] == expected.per_entity()
            assert entity.metrics[method]["tsb_vus_window"] == window


def test_the_whole_series_panel_is_the_grading_of_the_concatenated_train_z_scored_series(fleet):
    _, _, evaluation = fleet
    for method in evaluation.methods:
        parts = []
        for entity in evaluation.entities:
            train_scores, test_scores = entity.train[method], entity.test[method]
            mean, std = float(train_scores.mean()), float(train_scores.std())
            flags, thresholds, _ = evaluation.alarm.fit(train_scores).flags(test_scores)
            parts.append(((train_scores - mean) / std, (test_scores - mean) / std, flags, (thresholds - mean) / std))
        train_z, test_z, flags, thresholds = (np.concatenate(column) for column in zip(*parts, strict=True))
        labels = np.concatenate([entity.labels for entity in evaluation.entities])
        expected = grade(labels, train_z, test_z, flags, thresholds, panel=True).panel
        np.testing.assert_equal(evaluation.whole_series[method], expected)  # NaN where undefined, as in expected
