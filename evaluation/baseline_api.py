"""The contract every baseline meets, in scikit-learn and PyOD terms, so that a report loops over them.

- `fit(train) -> self` learns from TRAIN (N_train, C) and sets `train_scores_` (N_train,), the
  method's scores on that TRAIN, and `threshold_`, their `threshold_percentile`-th percentile;
- `score(series) -> (N,)` one score per point, higher is more anomalous;
- `predict(series) -> (N,)` 1 where the score exceeds `threshold_`.

Fit mode `train`: `score` uses what `fit` learnt from TRAIN. Fit mode `series` (`FittedOnSeries`):
`score` fits the method afresh on the series it scores and returns that fit's own scores, as
TSB-AD's leaderboard runs its unsupervised methods; its `train_scores_` are the method fitted on
TRAIN scoring TRAIN, so that a TRAIN-percentile threshold exists without test data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import numpy as np

from data_factory.dataset import numeric_array
from evaluation.thresholds import percentile_threshold
from runtime.errors import UserInputError

TRAIN, SERIES = "train", "series"
FIT_MODES = (TRAIN, SERIES)
DEFAULT_THRESHOLD_PERCENTILE = 99.0


def checked_input(series: np.ndarray, what: str, n_channels: int | None = None) -> np.ndarray:
    """`series` as an array (its dtype kept), or a UserInputError naming what is wrong: not (N, C), empty, a
    NaN/Inf, another channel count than TRAIN's. The reports pass normalised, finite data; this is for a caller
    of the contract itself."""
    array = numeric_array(series)  # a DataFrame of nullable numbers as floats, NA as NaN
    if array.ndim != 2 or 0 in array.shape:
        raise UserInputError(f"{what} must be a non-empty 2-D array (time, channels), got shape {array.shape}")
    if n_channels is not None and array.shape[1] != n_channels:
        raise UserInputError(f"{what} has {array.shape[1]} channels but the baseline was fitted on {n_channels}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserInputError(f"{what} holds NaN/Inf or non-numbers (in a report: a value so far outside TRAIN's "
                             "range that normalising it overflowed); fill or clip them first")  # fmt: skip
    return array


class Baseline:
    """A baseline fitted on TRAIN (fit mode `train`); subclasses write `_fit` and `_score`, and the contract's
    `fit`, `score` and `predict` check what they are given before calling them."""

    fit_mode = TRAIN
    threshold_percentile = DEFAULT_THRESHOLD_PERCENTILE

    def fit(self, train: np.ndarray) -> Self:
        train = checked_input(train, f"the TRAIN given to {type(self).__name__}.fit")
        self.n_channels_ = train.shape[1]  # _fit may score TRAIN through score(), which checks against it
        try:
            self.train_scores_ = self._fit(train)
        except BaseException:
            del self.n_channels_  # a failed fit leaves the baseline unfitted, not half-fitted
            raise
        self.threshold_ = percentile_threshold(self.train_scores_, self.threshold_percentile)
        return self

    def _fit(self, train: np.ndarray) -> np.ndarray:
        """Learn from TRAIN (N_train, C); return the scores on it (N_train,) (PyOD's decision_scores_)."""
        raise NotImplementedError

    def score(self, series: np.ndarray) -> np.ndarray:
        """(N,) scores of `series` (N, C), the channels of TRAIN: higher is more anomalous."""
        if self.fit_mode == TRAIN and not hasattr(self, "n_channels_"):
            raise UserInputError(f"this {type(self).__name__} is not fitted yet; call fit(train) first")
        return self._score(checked_input(series, "the series to score", getattr(self, "n_channels_", None)))

    def _score(self, series: np.ndarray) -> np.ndarray:
        """(N,) scores of a checked `series` (N, C)."""
        raise NotImplementedError

    def predict(self, series: np.ndarray) -> np.ndarray:
        """(N,) uint8: 1 where the score exceeds threshold_."""
        if not hasattr(self, "threshold_"):
            raise UserInputError(f"this {type(self).__name__} is not fitted yet; call fit(train) first")
        return (self.score(series) > self.threshold_).astype(np.uint8)


class FittedOnSeries(Baseline):
    """Fit mode `series` of a TRAIN-fitted baseline: every scored series gets its own fit of `make()`."""

    fit_mode = SERIES

    def __init__(self, make: Callable[[], Baseline]) -> None:
        self.make = make

    def _fit(self, train: np.ndarray) -> np.ndarray:
        return self.make().fit(train).train_scores_

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self.make().fit(series).train_scores_
