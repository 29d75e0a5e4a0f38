"""The baselines scored beside the model, and `METHODS`, the registry the reports and the CLI read.

Each baseline is a class with the contract of evaluation/baseline_api.py (fit, score, train_scores_,
threshold_, predict). This file holds the project's own five (random, PCA reconstruction error, and
TSB-AD 1.5's IForest, KNN and KMeansAD fitted on TRAIN); the reference ones run as TSB-AD and Sarfraz
et al. (ICML 2024) run them live in evaluation/tsb_baselines.py and evaluation/sarfraz_baselines.py.
Adding a baseline is one `Method` entry in `METHODS` below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from evaluation.baseline_api import FIT_MODES, SERIES, TRAIN, Baseline, FittedOnSeries
from evaluation.sarfraz_baselines import L2Norm, NearestTrainDistance, PcaError, SensorRangeDeviation
from evaluation.tsb_baselines import TsbCnn, TsbPca
from evaluation.windowing import centred_window_scores, flat_windows, mean_over_covering_windows, standardised_windows
from runtime.errors import UserInputError


class RandomScore(Baseline):
    """A seeded uniform score: what any protocol gives a detector that knows nothing. TRAIN draws first,
    then each call of score continues the same seeded stream."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, train: np.ndarray) -> np.ndarray:
        self.generator_ = np.random.default_rng(self.seed)
        return self.generator_.random(len(train))

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self.generator_.random(len(series))


class PcaReconstruction(Baseline):
    """Per-point reconstruction MSE of a PCA fitted on TRAIN keeping `variance` of its variance,
    over `channels` only where given (the model's --score-channels, for a like-for-like comparison)."""

    def __init__(self, variance: float = 0.95, channels: Sequence[int] | None = None) -> None:
        self.variance, self.channels = variance, channels

    def _fit(self, train: np.ndarray) -> np.ndarray:
        self.pca_ = PCA(n_components=self.variance if train.shape[1] > 1 else None, svd_solver="full").fit(train)
        return self.score(train)

    def _score(self, series: np.ndarray) -> np.ndarray:
        kept = slice(None) if self.channels is None else list(self.channels)
        return np.mean(((series - self.pca_.inverse_transform(self.pca_.transform(series))) ** 2)[:, kept], axis=1)


# TSB-AD 1.5's window baselines (TheDatumOrg/TSB-AD, TSB_AD/models/{IForest,KNN,KMeansAD}.py and
# model_wrapper.py), with the hyper-parameters of its multivariate leaderboard
# (TSB_AD/HP_list.py, Optimal_Multi_algo_HP_dict). TSB-AD fits them unsupervised on the whole
# series; the classes fit on TRAIN, and FittedOnSeries runs them TSB-AD's way.
IFOREST_WINDOW = 100  # run_IForest's default slidingWindow: the leaderboard passes no window
IFOREST_TREES = 25  # 'IForest': {'n_estimators': 25, 'max_features': 0.8}
IFOREST_MAX_FEATURES = 0.8
KNN_NEIGHBOURS = 50  # 'KNN': {'n_neighbors': 50, 'method': 'mean'}, on single points (slidingWindow=1)
KMEANS_CLUSTERS = 10  # 'KMeansAD': {'n_clusters': 10, 'window_size': 40}, stride 1
KMEANS_WINDOW = 40


class WindowIForest(Baseline):
    """IsolationForest (Liu et al. 2008) on standardised windows of `window` steps.

    A window's score is Liu et al.'s s(x) = 2 ** (-E[path length] / c(256)) (sklearn's
    -score_samples; TSB-AD reports it shifted by a constant); each point takes the score of the
    window centred on it (`centred_window_scores`). Trees see 256 windows and 80% of the features.
    With one channel TSB-AD z-scores each window position over all windows instead of each
    window; here every series is treated as TSB-AD treats a multivariate one.
    """

    def __init__(self, window: int = IFOREST_WINDOW, n_estimators: int = IFOREST_TREES,
                 max_features: float = IFOREST_MAX_FEATURES, seed: int = 0) -> None:  # fmt: skip
        self.window, self.n_estimators, self.max_features, self.seed = window, n_estimators, max_features, seed

    def _rows(self, series: np.ndarray) -> np.ndarray:
        # float32: the trees compare in float32 anyway. Column-major: each tree copies its 80% of the
        # columns, which is 20 times faster from columns than from rows (3800-wide windows on SMD).
        return standardised_windows(series, self.window, np.float32, "F")

    def _fit(self, train: np.ndarray) -> np.ndarray:
        rows = self._rows(train)  # fitted on, then scored: built once
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples="auto",
                                       max_features=self.max_features, random_state=self.seed).fit(rows)  # fmt: skip
        return centred_window_scores(-self.forest_.score_samples(rows), self.window)

    def _score(self, series: np.ndarray) -> np.ndarray:
        return centred_window_scores(-self.forest_.score_samples(self._rows(series)), self.window)


class PointKnn(Baseline):
    """Mean Euclidean distance to the `n_neighbours` nearest TRAIN points (Ramaswamy et al. 2000),
    each point z-scored across its channels first (TSB-AD's window of 1 step, ddof=1).

    A TRAIN point's neighbours exclude itself, as TSB-AD's fitted scores do. `max_train` keeps a
    seeded random subset of that many TRAIN points as the reference set (None: all of them, about
    10 s on one core for an SMD machine); the TRAIN points outside it are scored like TEST points.
    With one channel every point z-scores to 0 and the score is constant, as in TSB-AD.
    """

    def __init__(self, n_neighbours: int = KNN_NEIGHBOURS, max_train: int | None = None, seed: int = 0) -> None:
        self.n_neighbours, self.max_train, self.seed = n_neighbours, max_train, seed

    def _fit(self, train: np.ndarray) -> np.ndarray:
        reference_size = len(train) if self.max_train is None else min(len(train), self.max_train)
        if reference_size <= self.n_neighbours:
            raise UserInputError(f"KNN needs more than {self.n_neighbours} points to fit on (TRAIN, or in series "
                                 f"mode the scored series), got {reference_size}")  # fmt: skip
        reference = standardised_windows(train, 1)
        chosen = np.arange(len(reference))
        if self.max_train is not None and len(reference) > self.max_train:
            chosen = np.sort(np.random.default_rng(self.seed).choice(len(reference), self.max_train, replace=False))
        self.neighbours_ = NearestNeighbors(n_neighbors=self.n_neighbours).fit(reference[chosen])
        train_scores = np.empty(len(reference))
        train_scores[chosen] = self.neighbours_.kneighbors()[0].mean(axis=1)  # without X: own distance left out
        left_out = np.setdiff1d(np.arange(len(reference)), chosen)
        if len(left_out):
            train_scores[left_out] = self.neighbours_.kneighbors(reference[left_out])[0].mean(axis=1)
        return train_scores

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self.neighbours_.kneighbors(standardised_windows(series, 1))[0].mean(axis=1)


class WindowKMeans(Baseline):
    """KMeansAD (TSB-AD after TimeEval): k-means on TRAIN windows of `window` steps (stride 1), each
    z-scored over its own values unless `standardise` is False (then the level stays in); a window's
    score is its Euclidean distance to the nearest centroid, a point's the mean over the windows that
    cover it."""

    def __init__(self, window: int = KMEANS_WINDOW, n_clusters: int = KMEANS_CLUSTERS, seed: int = 0,
                 standardise: bool = True) -> None:  # fmt: skip
        self.window, self.n_clusters, self.seed, self.standardise = window, n_clusters, seed, standardise

    def _rows(self, series: np.ndarray) -> np.ndarray:
        return standardised_windows(series, self.window) if self.standardise else flat_windows(series, self.window)

    def _fit(self, train: np.ndarray) -> np.ndarray:
        rows = self._rows(train)  # fitted on, then scored: built once
        # n_init=1 is scikit-learn's default since 1.4 ('auto' with k-means++), which TSB-AD 1.5 inherits.
        self.kmeans_ = KMeans(n_clusters=self.n_clusters, n_init=1, random_state=self.seed).fit(rows)
        return self._scores(rows)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(rows - self.kmeans_.cluster_centers_[self.kmeans_.predict(rows)], axis=1)
        return mean_over_covering_windows(distances, self.window)

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self._scores(self._rows(series))


def _pair(baseline: Baseline, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fitted = baseline.fit(train)
    return fitted.train_scores_, fitted.score(test)


def random_baseline_scores(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_scores, test_scores) of RandomScore for series of these lengths."""
    return _pair(RandomScore(seed), np.zeros((n_train, 1)), np.zeros((n_test, 1)))  # it reads only the length


def pca_baseline_scores(
    train: np.ndarray, test: np.ndarray, variance: float = 0.95, channels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_scores, test_scores) of PcaReconstruction fitted on TRAIN."""
    return _pair(PcaReconstruction(variance, channels), train, test)


def iforest_baseline_scores(
    train: np.ndarray, test: np.ndarray, window: int = IFOREST_WINDOW, n_estimators: int = IFOREST_TREES,
    max_features: float = IFOREST_MAX_FEATURES, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(train_scores, test_scores) of WindowIForest fitted on TRAIN."""
    return _pair(WindowIForest(window, n_estimators, max_features, seed), train, test)


def knn_baseline_scores(
    train: np.ndarray, test: np.ndarray, n_neighbours: int = KNN_NEIGHBOURS, max_train: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(train_scores, test_scores) of PointKnn fitted on TRAIN."""
    return _pair(PointKnn(n_neighbours, max_train, seed), train, test)


def kmeans_baseline_scores(
    train: np.ndarray, test: np.ndarray, window: int = KMEANS_WINDOW, n_clusters: int = KMEANS_CLUSTERS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_scores, test_scores) of WindowKMeans fitted on TRAIN."""
    return _pair(WindowKMeans(window, n_clusters, seed), train, test)


@dataclass(frozen=True)
class Method:
    """One registered baseline: `factory(seed=, channels=, **defaults)` builds it; `fit_mode` is the one it
    runs in (train or series); `sets` the named selections of --baselines that include it."""

    factory: Callable[..., Baseline]
    fit_mode: str
    description: str
    defaults: dict = field(default_factory=dict)
    sets: tuple[str, ...] = ()

    def build(self, *, seed: int = 0, channels: Sequence[int] | None = None) -> Baseline:
        return self.factory(seed=seed, channels=channels, **self.defaults)


# Module-level functions bound with partial, not lambdas: a built baseline keeps its factory (FittedOnSeries.make),
# and must pickle like any fitted estimator (joblib, multiprocessing).
def _series(make: Callable[..., Baseline]) -> Callable[..., Baseline]:
    """The factory of `make`'s series fit mode."""
    return partial(_fitted_on_series, make)


def _fitted_on_series(make: Callable[..., Baseline], seed: int, channels: Sequence[int] | None, **settings) -> Baseline:
    return FittedOnSeries(partial(make, seed=seed, channels=channels, **settings))


def _seeded(cls: type[Baseline]) -> Callable[..., Baseline]:
    """The factory of a baseline that takes a seed and reads every channel."""
    return partial(_with_seed, cls)


def _with_seed(cls: type[Baseline], seed: int, channels: Sequence[int] | None, **settings) -> Baseline:
    return cls(seed=seed, **settings)


def _unseeded(cls: type[Baseline]) -> Callable[..., Baseline]:
    """The factory of a deterministic baseline that reads every channel."""
    return partial(_without_seed, cls)


def _without_seed(cls: type[Baseline], seed: int, channels: Sequence[int] | None, **settings) -> Baseline:
    return cls(**settings)


DEFAULT, REFERENCE = "default", "reference"  # the per-entity default set; the full reference set
LEVEL_KMEANS = {"standardise": False}  # the rest as KMeansAD
METHODS: dict[str, Method] = {
    "random": Method(_seeded(RandomScore), TRAIN, "a seeded uniform score (--seed)", sets=(DEFAULT, REFERENCE)),
    "pca": Method(
        lambda seed, channels: PcaReconstruction(channels=channels),
        TRAIN,
        "this project's PCA: reconstruction MSE, 95 % of TRAIN's variance, the model's score channels",
        sets=(DEFAULT,),
    ),
    "iforest": Method(
        _seeded(WindowIForest),
        TRAIN,
        "TSB-AD 1.5 IForest (25 trees, window 100), fitted on TRAIN",
        sets=(DEFAULT, REFERENCE),
    ),
    "knn": Method(
        _seeded(PointKnn),
        TRAIN,
        "TSB-AD 1.5 KNN (mean distance to 50 neighbours), fitted on TRAIN",
        sets=(DEFAULT, REFERENCE),
    ),
    "kmeans": Method(
        _seeded(WindowKMeans),
        TRAIN,
        "TSB-AD 1.5 KMeansAD (k = 10, window 40), fitted on TRAIN",
        sets=(DEFAULT, REFERENCE),
    ),
    "tsb_pca": Method(
        _unseeded(TsbPca),
        TRAIN,
        "TSB-AD 1.5 PCA (window 100, 25 % of the variance), fitted on TRAIN",
        sets=(REFERENCE,),
    ),
    "tsb_pca_series": Method(
        _series(_unseeded(TsbPca)), SERIES, "TSB-AD 1.5 PCA, fitted on the scored series", sets=(REFERENCE,)
    ),
    "iforest_series": Method(
        _series(_seeded(WindowIForest)), SERIES, "TSB-AD 1.5 IForest, fitted on the scored series", sets=(REFERENCE,)
    ),
    "knn_series": Method(
        _series(_seeded(PointKnn)), SERIES, "TSB-AD 1.5 KNN, fitted on the scored series", sets=(DEFAULT, REFERENCE)
    ),
    "kmeans_series": Method(
        _series(_seeded(WindowKMeans)),
        SERIES,
        "TSB-AD 1.5 KMeansAD, fitted on the scored series",
        sets=(DEFAULT, REFERENCE),
    ),
    "kmeans_level_series": Method(
        _series(_seeded(WindowKMeans)),
        SERIES,
        "this project's KMeansAD variant: windows not z-scored (the level stays in), "
        "k = 10, window 40, fitted on the scored series",
        LEVEL_KMEANS,
        sets=(DEFAULT, REFERENCE),
    ),
    "tsb_cnn": Method(
        _seeded(TsbCnn),
        TRAIN,
        "TSB-AD 1.5 CNN forecaster (window 50, channels 32, 32, 40), trained on TRAIN",
        sets=(REFERENCE,),
    ),
    "sarfraz_range": Method(
        _unseeded(SensorRangeDeviation),
        TRAIN,
        "Sarfraz et al.: 1 where a channel leaves TRAIN's range",
        sets=(DEFAULT, REFERENCE),
    ),
    "sarfraz_l2": Method(
        _unseeded(L2Norm), TRAIN, "Sarfraz et al.: L2 norm of the TRAIN-min-max-scaled point", sets=(DEFAULT, REFERENCE)
    ),
    "sarfraz_nn": Method(
        _unseeded(NearestTrainDistance),
        TRAIN,
        "Sarfraz et al.: distance to the nearest TRAIN point",
        sets=(DEFAULT, REFERENCE),
    ),
    "sarfraz_pca": Method(
        _unseeded(PcaError),
        TRAIN,
        "Sarfraz et al.: PCA reconstruction error (10 components, 30 above 50 channels)",
        sets=(DEFAULT, REFERENCE),
    ),
}
assert all(method.fit_mode in FIT_MODES for method in METHODS.values())
DEFAULT_FLEET_BASELINES = tuple(name for name, method in METHODS.items() if DEFAULT in method.sets)
REFERENCE_BASELINES = tuple(name for name, method in METHODS.items() if REFERENCE in method.sets)
SELECTIONS = {"none": (), "all": tuple(METHODS), REFERENCE: REFERENCE_BASELINES}


def baselines_help() -> str:
    """The --baselines choices, for a CLI's help."""
    return f"{', '.join(SELECTIONS)}, or a comma-separated list of {', '.join(METHODS)}"


def parse_baselines(text: str) -> tuple[str, ...]:
    """'none', 'all', 'reference', or a comma-separated list such as 'random,pca,kmeans'."""
    if text in SELECTIONS:
        return SELECTIONS[text]
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        method(name)
    return names


def method(name: str) -> Method:
    """The registered baseline of that name; a one-line UserInputError for any other."""
    if name not in METHODS:
        raise UserInputError(f"unknown baseline {name!r}; use {baselines_help()}")
    return METHODS[name]


def baseline_scores(
    name: str, train: np.ndarray, test: np.ndarray, *, channels: Sequence[int] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_scores, test_scores) of one named baseline on normalised (N, C) series: fitted on TRAIN, then
    TEST scored as its fit mode says. Only `pca` reads `channels` (the model's score channels)."""
    return _pair(method(name).build(seed=seed, channels=channels), train, test)
