"""bench/score_scales.py: the time-scale candidates of the default score, on toys worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.score_scales import candidate_scores


def test_one_span_is_the_centred_moving_average():
    errors = np.array([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    train, test = candidate_scores("s3", errors, errors)
    # Interior points average their neighbours; the edges average what exists (model/scoring.py).
    assert test[1:4] == pytest.approx([1.0, 1.0, 1.0])
    assert train.tolist() == test.tolist()


def test_joined_spans_are_z_scored_with_train_alone():
    train = np.array([1.0, 3.0, 1.0, 3.0])  # mean 2, std 1 at span 1
    test = np.array([2.0, 6.0])
    joined_train, joined_test = candidate_scores("sum1+1", train, test)
    assert joined_train.tolist() == [-2.0, 2.0, -2.0, 2.0]  # the same span twice: twice its z-score
    assert joined_test.tolist() == [0.0, 8.0]
    _, maxed = candidate_scores("max1+1", train, test)
    assert maxed.tolist() == [0.0, 4.0]


def test_a_constant_train_scale_does_not_divide_by_zero():
    _, test = candidate_scores("sum1+1", np.ones(5), np.array([1.0, 2.0]))
    assert np.isfinite(test).all() and test.tolist() == [0.0, 2.0]
