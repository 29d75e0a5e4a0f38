import numpy as np
import pytest
from sklearn.metrics import f1_score

from evaluation.metrics import point_adjust
from evaluation.range_metrics import event_metrics, pa_k_adjust, pa_k_f1, pa_k_f1_auc, pa_k_f1_curve

# Segments [0, 4) (starts at index 0, length 4) and [7, 9) (length 2). Predicted: 0 (1 of 4 = 25 %
# of the first segment), 5 (a false positive) and 8 (1 of 2 = 50 % of the second). P = 6, FP = 1.
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 0])
PREDICTIONS = np.array([1, 0, 0, 0, 0, 1, 0, 0, 1, 0])
# F1 = 2 TP / (TP + FP + P):
F1_BOTH_ADJUSTED = 2 * 6 / (6 + 1 + 6)  # K < 25: both segments adjusted, TP = 4 + 2 = 6
F1_SECOND_ADJUSTED = 2 * 3 / (3 + 1 + 6)  # 25 <= K < 50: only the 50 % segment, TP = 1 + 2 = 3
F1_POINT = 2 * 2 / (2 + 1 + 6)  # K >= 50: nothing adjusted, TP = 2 (points 0 and 8)


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, F1_BOTH_ADJUSTED), (20, F1_BOTH_ADJUSTED), (25, F1_SECOND_ADJUSTED), (49, F1_SECOND_ADJUSTED)]
    + [(50, F1_POINT), (100, F1_POINT)],
)
def test_pa_k_f1_by_hand_needs_more_than_k_percent(k, expected):
    # At K = 25 the first segment has exactly 25 % predicted: not MORE than K %, so not adjusted.
    assert pa_k_f1(LABELS, PREDICTIONS, k) == pytest.approx(expected)


def test_pa_k_adjust_by_hand_and_k0_is_point_adjust():
    # K = 30: the 25 % segment stays as predicted, the 50 % one is filled.
    np.testing.assert_array_equal(pa_k_adjust(LABELS, PREDICTIONS, 30), [1, 0, 0, 0, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(pa_k_adjust(LABELS, PREDICTIONS, 0), point_adjust(LABELS, PREDICTIONS))
    np.testing.assert_array_equal(pa_k_adjust(LABELS, PREDICTIONS, 100), PREDICTIONS)


def test_pa_k_f1_auc_by_hand_trapezoid_on_the_integer_grid():
    # F1(K) is F1_BOTH for K = 0..24, F1_SECOND for 25..49 and F1_POINT for 50..100. The trapezoid
    # rule on K / 100 with step 0.01: 24 flat steps, one step down, 24 flat, one down, 50 flat.
    area = 0.01 * (
        24 * F1_BOTH_ADJUSTED
        + (F1_BOTH_ADJUSTED + F1_SECOND_ADJUSTED) / 2
        + 24 * F1_SECOND_ADJUSTED
        + (F1_SECOND_ADJUSTED + F1_POINT) / 2
        + 50 * F1_POINT
    )
    assert pa_k_f1_auc(LABELS, PREDICTIONS) == pytest.approx(area)
    curve = pa_k_f1_curve(LABELS, PREDICTIONS)
    assert curve[[0, 24, 25, 49, 50, 100]] == pytest.approx(
        [F1_BOTH_ADJUSTED] * 2 + [F1_SECOND_ADJUSTED] * 2 + [F1_POINT] * 2
    )


def test_pa_k_segment_at_the_end():
    labels, predictions = np.array([0, 0, 1, 1, 1]), np.array([0, 0, 0, 0, 1])
    assert pa_k_f1(labels, predictions, 0) == 1.0  # the last point adjusts the whole final segment
    assert pa_k_f1(labels, predictions, 50) == pytest.approx(2 * 1 / (1 + 0 + 3))  # 1/3 < 50 %: TP = 1


def test_pa_k_no_anomalies_and_everything_anomalous():
    assert pa_k_f1(np.zeros(5), np.array([1, 0, 0, 0, 0]), 0) == 0.0
    assert pa_k_f1_auc(np.zeros(5), np.array([1, 0, 0, 0, 0])) == 0.0
    everything, one_hit = np.ones(5), np.array([0, 0, 1, 0, 0])
    assert pa_k_f1(everything, one_hit, 0) == 1.0
    assert pa_k_f1(everything, one_hit, 100) == pytest.approx(2 * 1 / (1 + 0 + 5))


def test_pa_k_rejects_k_outside_0_100():
    with pytest.raises(ValueError, match="0 <= K <= 100"):
        pa_k_f1(LABELS, PREDICTIONS, 101)


def test_event_metrics_by_hand():
    # Labelled events [0, 2), [4, 7), [10, 11). Predicted runs [1, 4) and [8, 10).
    labels = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0])
    predictions = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    # Recall: only the first labelled event has a predicted point -> 1/3.
    # Precision: run [1, 4) meets label 1, run [8, 10) meets none -> 1/2. F1 = 2 (1/2)(1/3) / (5/6) = 0.4.
    assert event_metrics(labels, predictions) == pytest.approx(
        {"event_precision": 0.5, "event_recall": 1 / 3, "event_f1": 0.4}
    )


def test_event_metrics_one_run_over_two_events_and_segments_at_both_ends():
    # The single predicted run covers both events (one at the start, one at the end): 1 of 1, 2 of 2.
    assert event_metrics(np.array([1, 0, 1]), np.array([1, 1, 1])) == {
        "event_precision": 1.0,
        "event_recall": 1.0,
        "event_f1": 1.0,
    }


def test_event_metrics_edge_cases_are_zero_not_nan():
    zero = {"event_precision": 0.0, "event_recall": 0.0, "event_f1": 0.0}
    assert event_metrics(np.array([0, 1, 1, 0]), np.zeros(4)) == zero  # nothing predicted
    assert event_metrics(np.zeros(4), np.array([1, 0, 0, 1])) == zero  # no labelled event
    assert event_metrics(np.ones(4), np.ones(4))["event_f1"] == 1.0  # everything anomalous


def test_pa_k_cross_check_against_tadpak():
    pak = pytest.importorskip("tadpak.pak")
    rng = np.random.default_rng(0)
    for _ in range(30):
        labels = np.repeat(rng.random(40) < 0.3, rng.integers(1, 8, 40))
        scores = rng.random(len(labels))
        threshold = float(np.quantile(scores, rng.uniform(0.5, 0.95)))
        for k in (0, 20, 50, 100):
            # tadpak flags `scores > threshold` and adjusts when hits > K/100 * length, as the paper says.
            expected = f1_score(labels, pak.pak(scores, labels.astype(int), threshold, k), zero_division=0)
            assert pa_k_f1(labels, scores > threshold, k) == pytest.approx(expected)
