import math

import numpy as np
import pytest

from evaluation.affiliation import affiliation_metrics

# Point i is the interval [i, i + 1); the series is [0, N). Expected values are the paper's
# integrals worked out by hand in each comment.


def test_perfect_prediction_scores_one():
    labels = np.array([0, 1, 1, 0, 0, 1, 0])
    assert affiliation_metrics(labels, labels) == {"affiliation_precision": 1.0, "affiliation_recall": 1.0}


def test_one_event_one_distant_prediction_by_hand():
    # N = 10, event G = [4, 6), zone I = [0, 10) (|I| = 10): 4 units of room on each side of G.
    labels = np.zeros(10)
    labels[4:6] = 1
    predictions = np.zeros(10)
    predictions[0] = 1  # the piece [0, 1)
    # Precision: the piece lies at distances u in (3, 4] from G. A uniform X in I is at least u
    # from G with probability (max(0, 4 - u) + max(0, 4 - u)) / 10, so the mean over the piece is
    # the integral of 2 (4 - u) / 10 for u from 3 to 4 = 0.1.
    # Recall: x in G is d = x - 1 in [3, 5) from the piece. A uniform Z in I falls within d of x
    # over min(2 d, 10 - 1) = min(2 d, 9) units (it cannot pass the piece's end at 1 on the left),
    # so the survival is 1 - min(2 d, 9) / 10: integral over d in [3, 4.5) of 1 - d / 5 = 0.375,
    # plus over [4.5, 5) of 0.1 = 0.05; divided by |G| = 2 -> 0.2125.
    result = affiliation_metrics(labels, predictions)
    assert result["affiliation_precision"] == pytest.approx(0.1)
    assert result["affiliation_recall"] == pytest.approx(0.2125)


def test_two_events_one_found_averages_recall_over_all_events():
    # N = 20, events [2, 4) and [14, 16): the zones meet at (4 + 14) / 2 = 9, so I1 = [0, 9).
    labels = np.zeros(20)
    labels[[2, 3, 14, 15]] = 1
    predictions = np.zeros(20)
    predictions[3] = 1  # the piece [3, 4), inside the first event
    # Zone 1 precision: the piece is inside G1 -> 1. Zone 2 has no prediction: no precision, recall 0.
    # Zone 1 recall: x in [2, 3) is d = 3 - x in (0, 1] from the piece; the survival is
    # 1 - min(2 d, 3 - 0) / 9 = 1 - 2 d / 9, integral over d in (0, 1] = 8/9; x in [3, 4) is
    # predicted -> 1. Mean over |G1| = 2: (8/9 + 1) / 2 = 17/18. Overall recall (17/18 + 0) / 2.
    result = affiliation_metrics(labels, predictions)
    assert result["affiliation_precision"] == pytest.approx(1.0)
    assert result["affiliation_recall"] == pytest.approx(17 / 36)


def test_event_at_the_end_with_a_prediction_just_before_it():
    # N = 8, event G = [6, 8) at the end: zone [0, 8), room 6 on the left and 0 on the right.
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    predictions = np.array([0, 0, 0, 0, 0, 1, 0, 0])  # the piece [5, 6)
    # Precision: u in (0, 1], survival (max(0, 6 - u) + max(0, 0 - u)) / 8 = (6 - u) / 8,
    # integral over (0, 1] = 5.5 / 8 = 0.6875.
    # Recall: x in [6, 8) is d = x - 6 from the piece; survival 1 - min(2 d, 8 - 6) / 8:
    # integral of 1 - d / 4 over [0, 1) = 0.875, plus 0.75 over [1, 2) -> 1.625 / 2 = 0.8125.
    result = affiliation_metrics(labels, predictions)
    assert result["affiliation_precision"] == pytest.approx(0.6875)
    assert result["affiliation_recall"] == pytest.approx(0.8125)


def test_everything_anomalous_half_predicted():
    # N = 4, one event G = I = [0, 4) starting at index 0; predicted piece [0, 2) inside it -> precision 1.
    # Recall: [0, 2) predicted -> 2; x in [2, 4) is d = x - 2 from the piece, survival
    # 1 - min(2 d, 4 - 2) / 4: integral of 1 - d / 2 over [0, 1) = 0.75, plus 0.5 over [1, 2).
    # (2 + 0.75 + 0.5) / 4 = 0.8125.
    result = affiliation_metrics(np.ones(4), np.array([1, 1, 0, 0]))
    assert result == pytest.approx({"affiliation_precision": 1.0, "affiliation_recall": 0.8125})


def test_edge_conventions():
    no_event = affiliation_metrics(np.zeros(6), np.array([0, 1, 0, 0, 0, 0]))
    assert math.isnan(no_event["affiliation_precision"]) and math.isnan(no_event["affiliation_recall"])
    nothing_predicted = affiliation_metrics(np.array([0, 1, 1, 0]), np.zeros(4))
    assert math.isnan(nothing_predicted["affiliation_precision"])
    assert nothing_predicted["affiliation_recall"] == 0.0


def test_cross_check_against_the_authors_implementation():
    # The `vus` package ships the affiliation authors' code. Its declared dependencies include
    # tensorflow, so it is not in requirements-dev.txt: `pip install --no-deps vus==0.0.6` to run this.
    generics = pytest.importorskip("vus.affiliation.generics")
    reference = pytest.importorskip("vus.affiliation.metrics")
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 80))
        labels = np.repeat(rng.random(n) < 0.2, rng.integers(1, 6, n))[:n].astype(int)
        predictions = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(int)
        if not labels.any() or not predictions.any():
            continue
        expected = reference.pr_from_events(
            generics.convert_vector_to_events(predictions), generics.convert_vector_to_events(labels), (0, n)
        )
        result = affiliation_metrics(labels, predictions)
        assert result["affiliation_precision"] == pytest.approx(expected["Affiliation_Precision"], abs=1e-12)
        assert result["affiliation_recall"] == pytest.approx(expected["Affiliation_Recall"], abs=1e-12)
