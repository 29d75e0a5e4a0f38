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

from evaluation.thresholds import percentile_threshold

TRAIN, SERIES = "train", "series"
FIT_MODES = (TRAIN, SERIES)
DEFAULT_THRESHOLD_PERCENTILE = 99.0


class Baseline:
    """A baseline fitted on TRAIN (fit mode `train`); subclasses write `_fit` and `score`."""

    fit_mode = TRAIN
    threshold_percentile = DEFAULT_THRESHOLD_PERCENTILE

    def fit(self, train: np.ndarray) -> Self:
        self.train_scores_ = self._fit(np.asarray(train))
        self.threshold_ = percentile_threshold(self.train_scores_, self.threshold_percentile)
        return self

    def _fit(self, train: np.ndarray) -> np.ndarray:
        """Learn from TRAIN (N_train, C); return the scores on it (N_train,) (PyOD's decision_scores_)."""
        raise NotImplementedError

    def score(self, series: np.ndarray) -> np.ndarray:
        """(N,) scores of `series` (N, C)."""
        raise NotImplementedError

    def predict(self, series: np.ndarray) -> np.ndarray:
        """(N,) uint8: 1 where the score exceeds threshold_."""
        return (self.score(series) > self.threshold_).astype(np.uint8)


class FittedOnSeries(Baseline):
    """Fit mode `series` of a TRAIN-fitted baseline: every scored series gets its own fit of `make()`."""

    fit_mode = SERIES

    def __init__(self, make: Callable[[], Baseline]) -> None:
        self.make = make

    def _fit(self, train: np.ndarray) -> np.ndarray:
        return self.make().fit(train).train_scores_

    def score(self, series: np.ndarray) -> np.ndarray:
        return self.make().fit(series).train_scores_
