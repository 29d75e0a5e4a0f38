"""Properties every metric must keep, checked on random small series (hypothesis), and best_f1."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_curve

from evaluation.affiliation import affiliation_metrics
from evaluation.metrics import best_f1, point_adjust, pr_auc, precision_recall_f1, roc_auc
from evaluation.range_metrics import event_metrics, pa_k_adjust, pa_k_f1, pa_k_f1_auc, pa_k_f1_curve
from evaluation.vus import vus

FEW = settings(max_examples=60, deadline=None)


@st.composite
def series(draw):
    """Labels, predictions and integer-valued scores (ties included) of one length."""
    n = draw(st.integers(1, 40))
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    predictions = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    scores = np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), dtype=float)
    return labels, predictions, scores


def increasing(scores: np.ndarray) -> np.ndarray:
    """A strictly increasing, nonlinear transform (distinct integers stay distinct floats)."""
    return np.exp(scores / 3) + scores**3 - 7


@FEW
@given(series())
def test_point_adjustment_properties(data):
    labels, predictions, _ = data
    point = precision_recall_f1(labels, predictions)["f1"]
    adjusted = precision_recall_f1(labels, point_adjust(labels, predictions))["f1"]
    assert adjusted >= point
    np.testing.assert_array_equal(pa_k_adjust(labels, predictions, 0), point_adjust(labels, predictions))
    assert pa_k_f1(labels, predictions, 0) == adjusted
    assert pa_k_f1(labels, predictions, 100) == point
    curve = pa_k_f1_curve(labels, predictions)
    assert curve[0] == pytest.approx(adjusted) and curve[-1] == pytest.approx(point)
    assert np.all(np.diff(curve) <= 1e-12)  # a larger K never adjusts more
    assert point - 1e-12 <= pa_k_f1_auc(labels, predictions) <= adjusted + 1e-12


@FEW
@given(series())
def test_every_metric_lies_in_0_1_or_is_nan_where_documented(data):
    labels, predictions, scores = data
    values = {
        **precision_recall_f1(labels, predictions),
        **event_metrics(labels, predictions),
        **affiliation_metrics(labels, predictions),
        **vus(labels, scores, max_buffer=6),
        "pa_k_f1_auc": pa_k_f1_auc(labels, predictions),
        "pa_k_f1_20": pa_k_f1(labels, predictions, 20),
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "best_f1": best_f1(labels, scores),
    }
    undefined = set()
    if not labels.any():
        undefined |= {"affiliation_precision", "affiliation_recall", "vus_roc", "vus_pr", "roc_auc", "pr_auc"}
        undefined |= {"best_f1"}
    if labels.all():
        undefined |= {"vus_roc", "roc_auc"}
    if not predictions.any():
        undefined |= {"affiliation_precision"}
    for name, value in values.items():
        if name in undefined:
            assert math.isnan(value), name
        else:
            assert -1e-12 <= value <= 1 + 1e-12, (name, value)


@FEW
@given(series())
def test_threshold_free_metrics_ignore_a_strictly_increasing_transform(data):
    labels, _, scores = data
    transformed = increasing(scores)
    for metric in (roc_auc, pr_auc, best_f1):
        assert metric(labels, transformed) == pytest.approx(metric(labels, scores), nan_ok=True)
    assert vus(labels, transformed, max_buffer=6) == pytest.approx(vus(labels, scores, max_buffer=6), nan_ok=True)


def test_best_f1_by_hand():
    labels, scores = np.array([0, 1, 1, 0, 0]), np.array([0.1, 0.8, 0.3, 0.5, 0.2])
    # scores >= t for t = 0.8, 0.5, 0.3, 0.2, 0.1: (TP, predicted) = (1, 1), (1, 2), (2, 3), (2, 4),
    # (2, 5); F1 = 2 TP / (predicted + 2) = 2/3, 1/2, 4/5, 2/3, 4/7. The oracle picks 0.3: 0.8.
    assert best_f1(labels, scores) == pytest.approx(0.8)


def test_best_f1_edge_cases():
    assert math.isnan(best_f1(np.zeros(4), np.arange(4.0)))  # no positives: undefined
    assert best_f1(np.ones(4), np.full(4, 0.5)) == 1.0  # everything anomalous, constant scores
    # Constant scores: the only threshold predicts everything, F1 = 2 P / (N + P) = 4 / 10.
    assert best_f1(np.array([0, 1, 1, 0, 0, 0, 0, 0]), np.zeros(8)) == pytest.approx(0.4)


@FEW
@given(series())
def test_best_f1_matches_scikit_learn_and_beats_any_fixed_threshold(data):
    labels, _, scores = data
    if not labels.any():
        return
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    assert best_f1(labels, scores) == pytest.approx(f1.max())
    assert best_f1(labels, scores) >= precision_recall_f1(labels, scores >= np.median(scores))["f1"] - 1e-12
