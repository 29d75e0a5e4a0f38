import numpy as np
import pytest

from data_factory import UserInputError
from evaluation.metrics import label_segments, point_adjust, precision_recall_f1
from evaluation.thresholds import percentile_threshold


def test_point_precision_recall_f1_by_hand():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 0])
    predictions = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    # TP = 2 (indices 1, 6), FP = 1 (index 0), FN = 2 (indices 2, 3)
    result = precision_recall_f1(labels, predictions)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_no_predictions_give_zero_not_nan():
    assert precision_recall_f1(np.array([0, 1]), np.array([0, 0])) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_segments_include_one_that_starts_at_index_zero_and_one_at_the_end():
    labels = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(label_segments(labels), [[0, 2], [4, 5], [6, 9]])


def test_point_adjust_fills_hit_segments_including_the_first_one():
    labels = np.array([1, 1, 1, 0, 0, 1, 1, 0, 1, 1])
    predictions = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 1])
    adjusted = point_adjust(labels, predictions)
    np.testing.assert_array_equal(adjusted, [1, 1, 1, 0, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(predictions, [0, 0, 1, 0, 1, 0, 0, 0, 0, 1])  # input untouched


def test_percentile_threshold_and_its_range():
    assert percentile_threshold(np.arange(101.0), 99) == pytest.approx(99.0)
    with pytest.raises(UserInputError, match="between 0 and 100"):
        percentile_threshold(np.arange(10.0), 100)


def test_labels_of_another_length_are_refused_by_every_metric_that_indexes_one_by_the_other():
    from evaluation.affiliation import affiliation_metrics
    from evaluation.metrics import best_f1
    from evaluation.range_metrics import event_metrics

    labels = np.zeros(100, dtype=int)
    labels[40:50] = 1
    predictions = np.zeros(90, dtype=int)  # a label file one segment longer than the scored series
    predictions[45] = 1
    scores = np.linspace(0, 1, 90)
    for metric, values in [(point_adjust, predictions), (event_metrics, predictions),
                           (affiliation_metrics, predictions), (best_f1, scores)]:  # fmt: skip
        with pytest.raises(ValueError, match=r"labels \(100,\) and .* \(90,\) differ in shape"):
            metric(labels, values)
