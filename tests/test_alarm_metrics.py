import numpy as np
import pytest

from evaluation.alarm_metrics import ALARM_METRICS, alarm_metrics, false_alarm_events, within_alarm_budget


def test_alarm_metrics_count_points_and_events_as_an_operator_would():
    # 20 points; labelled segments [2, 5) and [12, 14); alarms [3, 4), [8, 10) and [13, 16).
    labels = np.zeros(20, dtype=np.uint8)
    labels[2:5] = labels[12:14] = 1
    flags = np.zeros(20, dtype=np.uint8)
    flags[3] = 1
    flags[8:10] = 1
    flags[13:16] = 1
    result = alarm_metrics(labels, flags)
    assert set(result) == set(ALARM_METRICS)
    assert result["flagged_share"] == pytest.approx(6 / 20)
    assert result["anomaly_share"] == pytest.approx(5 / 20)
    # Normal points flagged: 8, 9, 14, 15 of 15 normal points; anomalous points missed: 2, 4, 12 of 5.
    assert result["false_alarm_rate"] == pytest.approx(4 / 15)
    assert result["missed_alarm_rate"] == pytest.approx(3 / 5)
    # Point F1: TP 2, FP 4, FN 3 -> 2 * 2 / (2 * 2 + 4 + 3).
    assert result["f1"] == pytest.approx(4 / 11)
    # Both segments are found; 2 of the 3 alarm events overlap a segment; [8, 10) is a false alarm event.
    assert result["event_recall"] == pytest.approx(1.0)
    assert result["event_precision"] == pytest.approx(2 / 3)
    assert result["event_f1"] == pytest.approx(0.8)
    assert result["false_alarm_events_per_10k"] == pytest.approx(1 / 20 * 1e4)
    # Flagged 6 / 20 = 0.30 is within the bound 2 * 5 / 20 + 0.01 = 0.51.
    assert result["within_flag_bound"] == 1.0


def test_an_entity_without_anomalies_has_no_miss_rate_but_counts_its_false_alarms():
    labels = np.zeros(10, dtype=np.uint8)
    flags = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 0], dtype=np.uint8)
    result = alarm_metrics(labels, flags)
    assert result["missed_alarm_rate"] is None and result["f1"] is None and result["event_recall"] is None
    assert result["false_alarm_rate"] == pytest.approx(0.3)
    assert false_alarm_events(labels, flags) == 2
    assert result["event_precision"] == 0.0


def test_no_flags_means_no_event_precision_and_every_anomaly_missed():
    labels = np.array([0, 1, 1, 0], dtype=np.uint8)
    result = alarm_metrics(labels, np.zeros(4, dtype=np.uint8))
    assert result["event_precision"] is None and result["missed_alarm_rate"] == 1.0 and result["event_f1"] == 0.0


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        alarm_metrics(np.zeros(3), np.zeros(4))


def test_the_flood_bound_is_twice_the_anomaly_share_plus_one_point():
    # (flagged, anomalous, points): 21 % flagged beside 10 % anomalous is on the bound 2 * 10 % + 1 %; 21.01 % is over.
    assert within_alarm_budget(21, 10, 100) and not within_alarm_budget(2101, 1000, 10_000)
    assert within_alarm_budget(1, 0, 100) and not within_alarm_budget(11, 0, 1000)


def test_a_flagged_share_exactly_on_the_flood_bound_is_within_it():
    # 100 points, 3 anomalous (3 %): the bound is 2 * 3 % + 1 % = 7 %, so 7 flags are within it and 8 are not.
    # In floats 7 / 100 = 0.07 > 2 * 0.03 + 0.01 = 0.06999999999999999, which counted 7 flags as a flood.
    labels = np.zeros(100, dtype=np.uint8)
    labels[50:53] = 1
    flags = np.zeros(100, dtype=np.uint8)
    flags[10:17] = 1
    assert alarm_metrics(labels, flags)["within_flag_bound"] == 1.0
    flags[17] = 1
    assert alarm_metrics(labels, flags)["within_flag_bound"] == 0.0


def test_an_entity_anomalous_throughout_has_no_false_alarm_rate_and_one_event_found():
    # 10 points, all anomalous (one segment); flags 2, 3, 4. No normal point: the false alarm rate is undefined.
    # Missed 7 of 10; F1 = 2 TP / (TP + FP + P) = 6 / (3 + 0 + 10); the one alarm event overlaps the one segment.
    flags = np.zeros(10, dtype=np.uint8)
    flags[2:5] = 1
    result = alarm_metrics(np.ones(10, dtype=np.uint8), flags)
    assert result["false_alarm_rate"] is None and result["missed_alarm_rate"] == pytest.approx(0.7)
    assert result["f1"] == pytest.approx(6 / 13)
    assert result["event_precision"] == 1.0 and result["event_recall"] == 1.0 and result["event_f1"] == 1.0
    assert result["false_alarm_events_per_10k"] == 0.0 and result["within_flag_bound"] == 1.0  # 0.3 <= 2 * 1 + 0.01
