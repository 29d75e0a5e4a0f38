"""bench/score_scales.py: candidates over time scales and scores, on toys worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.score_scales import candidate_scores, scores_needed
from runtime.errors import UserInputError


def test_one_span_is_the_centred_moving_average():
    errors = np.array([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    train, test = candidate_scores("s3", {"reconstruction": errors}, {"reconstruction": errors})
    # Interior points average their neighbours; an edge averages the points that exist on its side.
    assert test.tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    assert train.tolist() == test.tolist()


def test_joined_spans_are_each_z_scored_with_their_own_train_statistics():
    train = np.array([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    # Span 1: TRAIN mean 0.5, std sqrt(1.25). Span 3: TRAIN [0, 1, 1, 1, 0, 0], mean 0.5, std 0.5.
    test = np.array([0.0, 0.0, 6.0, 0.0, 0.0, 0.0])  # span 3 of it: [0, 2, 2, 2, 0, 0]
    raw_z = (test - 0.5) / np.sqrt(1.25)
    smoothed_z = (np.array([0.0, 2.0, 2.0, 2.0, 0.0, 0.0]) - 0.5) / 0.5
    _, summed = candidate_scores("sum1+3", {"reconstruction": train}, {"reconstruction": test})
    assert summed == pytest.approx(raw_z + smoothed_z)
    joined_train, maxed = candidate_scores("max1+3", {"reconstruction": train}, {"reconstruction": test})
    assert maxed == pytest.approx(np.maximum(raw_z, smoothed_z))
    assert joined_train.max() == pytest.approx((3.0 - 0.5) / np.sqrt(1.25))  # TRAIN's own spike, span 1


def test_a_constant_train_scale_does_not_divide_by_zero():
    _, test = candidate_scores("sum1+1", {"reconstruction": np.ones(5)}, {"reconstruction": np.array([1.0, 2.0])})
    assert np.isfinite(test).all() and test.tolist() == [0.0, 2.0]


def test_a_letter_picks_the_score_a_term_smooths():
    scores = {"reconstruction": np.array([0.0, 0.0, 3.0, 0.0]), "discrepancy": np.array([1.0, 3.0, 1.0, 3.0]),
              "paper": np.array([5.0, 5.0, 5.0, 5.0])}  # fmt: skip
    _, discrepancy = candidate_scores("d1", scores, scores)
    assert discrepancy.tolist() == [1.0, 3.0, 1.0, 3.0]
    _, paper = candidate_scores("p3", scores, scores)
    assert paper.tolist() == [5.0, 5.0, 5.0, 5.0]
    # r1: mean 0.75, std sqrt(1.6875); d1: mean 2, std 1. The join adds the two z-scores point by point.
    _, joined = candidate_scores("sum1+d1", scores, scores)
    expected = (scores["reconstruction"] - 0.75) / np.sqrt(1.6875) + (scores["discrepancy"] - 2.0)
    assert joined == pytest.approx(expected)
    assert scores_needed(["s50", "sum50+d50"]) == {"reconstruction", "discrepancy"}
    assert scores_needed(["p1"]) == {"paper"}


@pytest.mark.parametrize("candidate", ["avg1+50", "sum1+x", "model", "sd50", "sum1+q5"])
def test_an_unknown_candidate_is_refused_in_one_line(candidate):
    with pytest.raises(UserInputError, match="unknown candidate"):
        candidate_scores(candidate, {"reconstruction": np.ones(5)}, {"reconstruction": np.ones(5)})
