"""The four simple baselines of Sarfraz et al. (ICML 2024, "Quo vadis, unsupervised time series anomaly
detection?"), fitted on TRAIN, on data min-max scaled with TRAIN's range per channel (a constant channel
is only shifted), against the baseline contract (evaluation/baseline_api.py).

Their paper chooses a normalisation of the scores per dataset on the test set; no score is normalised
here. Their PCA error is a per-channel absolute error; its Euclidean norm over the channels is the
point's score here.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from evaluation.baseline_api import Baseline


class TrainMinMaxScaled(Baseline):
    """A baseline that first maps each channel's TRAIN [min, max] onto [0, 1]."""

    def _scale_fit(self, train: np.ndarray) -> np.ndarray:
        self.minimum_ = train.min(axis=0)
        span = train.max(axis=0) - self.minimum_
        self.span_ = np.where(span > 0, span, 1.0)
        return self._scaled(train)

    def _scaled(self, series: np.ndarray) -> np.ndarray:
        return (np.asarray(series, dtype=np.float64) - self.minimum_) / self.span_


class SensorRangeDeviation(TrainMinMaxScaled):
    """1 where any channel lies outside [0, 1], i.e. outside the range it took in TRAIN, else 0. Every
    TRAIN score is 0, so threshold_ is 0 and predict flags exactly the points out of range."""

    def _fit(self, train: np.ndarray) -> np.ndarray:
        self._scale_fit(train)
        return self.score(train)

    def _score(self, series: np.ndarray) -> np.ndarray:
        scaled = self._scaled(series)
        return ((scaled < 0) | (scaled > 1)).any(axis=1).astype(np.float64)


class L2Norm(TrainMinMaxScaled):
    """The Euclidean norm of the scaled point: TRAIN only sets the scaling."""

    def _fit(self, train: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self._scale_fit(train), axis=1)

    def _score(self, series: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self._scaled(series), axis=1)


class NearestTrainDistance(TrainMinMaxScaled):
    """Euclidean distance from the scaled point to the nearest scaled TRAIN point. A TRAIN point's
    own distance is left out of train_scores_ (else every TRAIN score is 0)."""

    def _fit(self, train: np.ndarray) -> np.ndarray:
        self.neighbours_ = NearestNeighbors(n_neighbors=1).fit(self._scale_fit(train))
        return self.neighbours_.kneighbors()[0][:, 0]

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self.neighbours_.kneighbors(self._scaled(series))[0][:, 0]


def pca_dimension(channels: int) -> int:
    """Sarfraz et al.'s choice: 10 components, 30 above 50 channels, 2 for one channel; where that exceeds the
    channels, a fifth of them (at least 2, at most all)."""
    if channels == 1:
        return 1  # their 2 components cannot be fitted on one channel
    wanted = 10 if channels <= 50 else 30
    return wanted if wanted <= channels else min(max(2, channels // 5), channels)


class PcaError(TrainMinMaxScaled):
    """The norm of the scaled point's reconstruction error by a PCA fitted on scaled TRAIN with
    `pca_dimension(C)` components (full SVD, as theirs)."""

    def _fit(self, train: np.ndarray) -> np.ndarray:
        scaled = self._scale_fit(train)
        self.pca_ = PCA(n_components=pca_dimension(scaled.shape[1]), svd_solver="full").fit(scaled)
        return self._errors(scaled)

    def _errors(self, scaled: np.ndarray) -> np.ndarray:
        return np.linalg.norm(scaled - self.pca_.inverse_transform(self.pca_.transform(scaled)), axis=1)

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self._errors(self._scaled(series))
