import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.vus import range_auc, soft_labels, vus

W1, W2 = math.sqrt(1 - 1 / 4), math.sqrt(1 - 2 / 4)  # border labels at d = 1, 2 for buffer 4


def test_soft_labels_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(soft_labels(labels, 4), [0, 0, W2, W1, 1, 1, W1, W2, 0, 0])
    np.testing.assert_array_equal(soft_labels(labels, 1), labels)  # 1 // 2 = 0: no border
    # Borders are cut at both ends of the series (segments at the start and at the end).
    np.testing.assert_allclose(soft_labels(np.array([1, 0, 0, 0, 0, 0, 1]), 4), [1, W1, W2, 0, W2, W1, 1])
    # Overlapping borders add up, capped at 1: W1 + W2 > 1 at both points between the segments.
    np.testing.assert_allclose(soft_labels(np.array([1, 0, 0, 1]), 4), [1, 1, 1, 1])


def test_range_auc_without_buffer_by_hand():
    labels, scores = np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.2, 0.3])
    # Thresholds 0.9, 0.3, 0.2, 0.1 give (FPR, TPR, precision) = (0, .5, 1), (.5, .5, .5),
    # (.5, 1, 2/3), (1, 1, .5); one range, found from the first threshold on.
    # ROC: 0.5 * 0.5 (from FPR .5 at TPR .5) + 0.5 * 1 = 0.75.  PR: 0.5 * 1 + 0.5 * 2/3 = 5/6.
    assert range_auc(labels, scores, 0) == pytest.approx({"range_auc_roc": 0.75, "range_auc_pr": 5 / 6})


def test_range_auc_with_a_buffer_by_hand():
    # N = 5, one labelled point at 2; buffer 2 gives borders at 1 and 3 of w = sqrt(1 - 1/2).
    w = math.sqrt(0.5)
    labels, scores = np.array([0, 0, 1, 0, 0]), np.array([0.0, 0.8, 0.6, 0.1, 0.3])
    positive = (1 + (1 + 2 * w)) / 2  # (sum of labels + sum of soft labels) / 2 = 1 + w
    negative = 5 - positive
    # Predicted in order 1 (soft w), 2 (1), 4 (0), 3 (w), 0 (0); the one range [1, 4) is found at once.
    tpr1, fpr1, precision1 = w / positive, (1 - w) / negative, w
    # From the second threshold on, TP = 1 + w >= P_l: recall is capped at 1, precision (1 + w) / 2.
    fpr2 = (2 - (1 + w)) / negative
    assert fpr2 == pytest.approx(fpr1)  # point 2 is labelled: FPR does not move while TPR jumps to 1
    roc = fpr1 * tpr1 / 2 + (1 - fpr1) * 1  # then TPR stays 1 up to (1, 1)
    pr = tpr1 * precision1 + (1 - tpr1) * (1 + w) / 2  # later thresholds add no recall
    assert range_auc(labels, scores, 2) == pytest.approx({"range_auc_roc": roc, "range_auc_pr": pr})


def test_constant_scores():
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    # One threshold predicts everything: TPR = FPR = 1 -> ROC 0.5; precision = P / N = 2/8.
    assert vus(labels, np.full(8, 0.3), max_buffer=0) == pytest.approx({"vus_roc": 0.5, "vus_pr": 0.25})


def test_no_anomalies_and_everything_anomalous():
    nothing = vus(np.zeros(6), np.arange(6.0))
    assert math.isnan(nothing["vus_roc"]) and math.isnan(nothing["vus_pr"])
    everything = vus(np.ones(6), np.arange(6.0), max_buffer=4)
    assert math.isnan(everything["vus_roc"])  # no negatives: no false positive rate
    assert everything["vus_pr"] == pytest.approx(1.0)  # every prediction is right


def test_vus_is_the_mean_of_range_auc_over_buffers_0_to_max():
    rng = np.random.default_rng(3)
    labels = np.repeat(rng.random(30) < 0.3, 4)
    scores = rng.random(len(labels))
    areas = [range_auc(labels, scores, buffer) for buffer in range(9)]
    assert vus(labels, scores, max_buffer=8) == pytest.approx(
        {"vus_roc": np.mean([a["range_auc_roc"] for a in areas]), "vus_pr": np.mean([a["range_auc_pr"] for a in areas])}
    )


def test_one_segment_without_buffer_equals_scikit_learn():
    # One labelled range and no buffer: existence is 1 exactly when TP > 0, so the range curves are
    # the point-wise ones, and the areas are scikit-learn's ROC-AUC and average precision.
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = np.zeros(200, dtype=int)
        start = int(rng.integers(0, 180))
        labels[start : start + int(rng.integers(1, 20))] = 1
        scores = rng.integers(0, 30, 200).astype(float)  # with ties
        result = range_auc(labels, scores, 0)
        assert result["range_auc_roc"] == pytest.approx(roc_auc_score(labels, scores))
        assert result["range_auc_pr"] == pytest.approx(average_precision_score(labels, scores))


def test_cross_check_against_the_vus_package():
    # The authors' `vus` package (0.0.6). Its declared dependencies include tensorflow, so it is not
    # in requirements-dev.txt: `pip install --no-deps vus==0.0.6` to run this.
    # Deliberate differences, both following the VLDB 2022 paper rather than that code:
    # - its `RangeAUC` integrates PR with trapezoids from a precision of 1 at recall 0; we use the
    #   step rule (average precision), as its own VUS code does. Its curve points are compared here.
    # - its VUS (`RangeAUC_volume_opt`) counts a border point in P_l only once it is predicted, and
    #   samples 250 thresholds; we use P_l = (sum(label) + sum(label_l)) / 2 and every threshold.
    # It samples 250 thresholds by rank: below 250 points that is every threshold, so results match.
    metrics = pytest.importorskip("vus.utils.metrics")
    rng = np.random.default_rng(2)
    for _ in range(60):
        n = int(rng.integers(10, 250))
        labels = np.repeat(rng.random(n) < 0.15, rng.integers(1, 9, n))[:n].astype(int)
        if not labels.any() or labels.all():
            continue
        scores = rng.random(n) if rng.random() < 0.5 else rng.integers(0, 12, n).astype(float)
        buffer = int(rng.integers(0, 30))
        grader = metrics.metricor()
        np.testing.assert_allclose(soft_labels(labels, buffer), grader.extend_postive_range(labels, window=buffer))
        roc, _, _, tpr, precision = grader.RangeAUC(labels=labels, score=scores, window=buffer, plot_ROC=True)
        result = range_auc(labels, scores, buffer)
        assert result["range_auc_roc"] == pytest.approx(roc, abs=1e-12)
        step_pr = np.sum(np.diff(tpr[:-1]) * precision[1:])  # tpr[0] = 0; tpr[-1] is the closing 1
        assert result["range_auc_pr"] == pytest.approx(step_pr, abs=1e-12)
