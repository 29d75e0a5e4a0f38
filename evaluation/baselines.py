"""Simple baselines scored on the same data as the model, so its numbers have context.

Sarfraz et al. (ICML 2024) show such baselines match deep detectors on SMAP, MSL, SMD and PSM.
Each returns (train_scores, test_scores) over the normalised series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from data_factory.errors import UserInputError

BASELINE_NAMES = ("random", "pca", "iforest", "knn", "kmeans")


def random_baseline_scores(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform score: what any protocol gives a detector that knows nothing."""
    rng = np.random.default_rng(seed)
    return rng.random(n_train), rng.random(n_test)


def pca_baseline_scores(
    train: np.ndarray, test: np.ndarray, variance: float = 0.95, channels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point reconstruction MSE of a PCA fitted on TRAIN keeping `variance` of its variance,
    over `channels` only where given (the model's --score-channels, for a like-for-like comparison)."""
    pca = PCA(n_components=variance if train.shape[1] > 1 else None, svd_solver="full").fit(train)
    kept = slice(None) if channels is None else list(channels)

    def error(series: np.ndarray) -> np.ndarray:
        return np.mean(((series - pca.inverse_transform(pca.transform(series))) ** 2)[:, kept], axis=1)

    return error(train), error(test)


def parse_baselines(text: str) -> tuple[str, ...]:
    """'none', 'all', or a comma-separated list such as 'random,pca,kmeans'."""
    if text == "none":
        return ()
    if text == "all":
        return BASELINE_NAMES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise UserInputError(
            f"unknown baseline {unknown[0]!r}; use none, all, or a list of {', '.join(BASELINE_NAMES)}"
        )
    return names


# TSB-AD 1.5's window baselines (TheDatumOrg/TSB-AD, TSB_AD/models/{IForest,KNN,KMeansAD}.py and
# model_wrapper.py), with the hyper-parameters of its multivariate leaderboard
# (TSB_AD/HP_list.py, Optimal_Multi_algo_HP_dict). TSB-AD fits them unsupervised on the whole
# series; here they are fitted on TRAIN only and score TRAIN and TEST with the same model.
IFOREST_WINDOW = 100  # run_IForest's default slidingWindow: the leaderboard passes no window
IFOREST_TREES = 25  # 'IForest': {'n_estimators': 25, 'max_features': 0.8}
IFOREST_MAX_FEATURES = 0.8
KNN_NEIGHBOURS = 50  # 'KNN': {'n_neighbors': 50, 'method': 'mean'}, on single points (slidingWindow=1)
KMEANS_CLUSTERS = 10  # 'KMeansAD': {'n_clusters': 10, 'window_size': 40}, stride 1
KMEANS_WINDOW = 40
_ROWS_PER_CHUNK = 4096


def standardised_windows(series: np.ndarray, window: int, dtype: type = np.float64, order: str = "C") -> np.ndarray:
    """(N - window + 1, C * window): every window of `series` (N, C) flattened channel by channel
    and z-scored over its own values (ddof=1; a constant window becomes 0), as TSB-AD's models do.
    `dtype` and memory `order` ("C" or "F") are those of the result."""
    if len(series) < window:
        raise UserInputError(f"the series has {len(series)} time steps, fewer than the baseline's window of {window}")
    views = np.lib.stride_tricks.sliding_window_view(np.asarray(series, dtype=np.float64), window, axis=0)
    rows = np.empty((len(views), views.shape[1] * window), dtype=dtype, order=order)  # (M, C * window)
    for start in range(0, len(views), _ROWS_PER_CHUNK):  # in chunks: SMD's 100-step windows are 3800 wide
        centred = views[start : start + _ROWS_PER_CHUNK].reshape(-1, rows.shape[1])
        centred = centred - centred.mean(axis=1, keepdims=True)
        # numpy's std(ddof=1), from the centred values it would compute again itself
        std = np.sqrt(np.square(centred).sum(axis=1, keepdims=True) / max(rows.shape[1] - 1, 1))
        # std is 0 only where every value equals the mean, so dividing by 1 there gives the 0 of a constant window
        np.divide(centred, np.where(std == 0, 1.0, std), out=rows[start : start + _ROWS_PER_CHUNK], casting="unsafe")
    return rows


def centred_window_scores(window_scores: np.ndarray, window: int) -> np.ndarray:
    """One score per point from one per window: TSB-AD pads with the first window's score
    ceil((window - 1) / 2) times and the last one's (window - 1) // 2 times."""
    return np.pad(window_scores, ((window - 1) - (window - 1) // 2, (window - 1) // 2), mode="edge")


def mean_over_covering_windows(window_scores: np.ndarray, window: int) -> np.ndarray:
    """One score per point from one per window (stride 1): the mean over the windows that cover
    the point, as TSB-AD's KMeansAD spreads them back."""
    covering = np.ones(window)
    return np.convolve(window_scores, covering) / np.convolve(np.ones(len(window_scores)), covering)


def iforest_baseline_scores(
    train: np.ndarray,
    test: np.ndarray,
    window: int = IFOREST_WINDOW,
    n_estimators: int = IFOREST_TREES,
    max_features: float = IFOREST_MAX_FEATURES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """IsolationForest (Liu et al. 2008) on standardised windows of `window` steps, fitted on TRAIN.

    A window's score is Liu et al.'s s(x) = 2 ** (-E[path length] / c(256)) (sklearn's
    -score_samples; TSB-AD reports it shifted by a constant); each point takes the score of the
    window centred on it (`centred_window_scores`). Trees see 256 windows and 80% of the features.
    With one channel TSB-AD z-scores each window position over all windows instead of each
    window; here every series is treated as TSB-AD treats a multivariate one.
    """
    # float32: the trees compare in float32 anyway. Column-major: each tree copies its 80% of the
    # columns, which is 20 times faster from columns than from rows (3800-wide windows on SMD).
    train_rows = standardised_windows(train, window, np.float32, "F")  # fitted on, then scored: built once
    forest = IsolationForest(
        n_estimators=n_estimators, max_samples="auto", max_features=max_features, random_state=seed
    ).fit(train_rows)

    def score(rows: np.ndarray) -> np.ndarray:
        return centred_window_scores(-forest.score_samples(rows), window)

    return score(train_rows), score(standardised_windows(test, window, np.float32, "F"))


def knn_baseline_scores(
    train: np.ndarray,
    test: np.ndarray,
    n_neighbours: int = KNN_NEIGHBOURS,
    max_train: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean Euclidean distance to the `n_neighbours` nearest TRAIN points (Ramaswamy et al. 2000),
    each point z-scored across its channels first (TSB-AD's window of 1 step, ddof=1).

    A TRAIN point's neighbours exclude itself, as TSB-AD's fitted scores do. `max_train` keeps a
    seeded random subset of that many TRAIN points as the reference set (None: all of them, about
    10 s on one core for an SMD machine); the TRAIN points outside it are scored like TEST points.
    With one channel every point z-scores to 0 and the score is constant, as in TSB-AD.
    """
    reference_size = len(train) if max_train is None else min(len(train), max_train)
    if reference_size <= n_neighbours:
        raise UserInputError(f"KNN needs more than {n_neighbours} TRAIN points, got {reference_size}")
    reference = standardised_windows(train, 1)
    queries = standardised_windows(test, 1)
    chosen = np.arange(len(reference))
    if max_train is not None and len(reference) > max_train:
        chosen = np.sort(np.random.default_rng(seed).choice(len(reference), max_train, replace=False))
    neighbours = NearestNeighbors(n_neighbors=n_neighbours).fit(reference[chosen])
    train_scores = np.empty(len(reference))
    train_scores[chosen] = neighbours.kneighbors()[0].mean(axis=1)  # without X: each point's own distance left out
    left_out = np.setdiff1d(np.arange(len(reference)), chosen)
    if len(left_out):
        train_scores[left_out] = neighbours.kneighbors(reference[left_out])[0].mean(axis=1)
    return train_scores, neighbours.kneighbors(queries)[0].mean(axis=1)


def kmeans_baseline_scores(
    train: np.ndarray,
    test: np.ndarray,
    window: int = KMEANS_WINDOW,
    n_clusters: int = KMEANS_CLUSTERS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """KMeansAD (TSB-AD after TimeEval): k-means on standardised TRAIN windows of `window` steps
    (stride 1); a window's score is its Euclidean distance to the nearest centroid, and a point's
    score the mean over the windows that cover it."""
    # n_init=1 is scikit-learn's default since 1.4 ('auto' with k-means++), which TSB-AD 1.5 inherits.
    train_rows = standardised_windows(train, window)  # fitted on, then scored: built once
    kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(train_rows)

    def score(rows: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(rows - kmeans.cluster_centers_[kmeans.predict(rows)], axis=1)
        return mean_over_covering_windows(distances, window)

    return score(train_rows), score(standardised_windows(test, window))


def baseline_scores(
    name: str, train: np.ndarray, test: np.ndarray, *, channels: Sequence[int] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_scores, test_scores) of one named baseline on normalised (N, C) series, fitted on TRAIN.

    PCA reads the model's score channels, for a like-for-like comparison; the window baselines
    (iforest, knn, kmeans) read every channel, as TSB-AD runs them.
    """
    if name == "random":
        return random_baseline_scores(len(train), len(test), seed)
    if name == "pca":
        return pca_baseline_scores(train, test, channels=channels)
    scorers = {"iforest": iforest_baseline_scores, "knn": knn_baseline_scores, "kmeans": kmeans_baseline_scores}
    if name not in scorers:
        raise UserInputError(f"unknown baseline {name!r}; use one of {', '.join(BASELINE_NAMES)}")
    return scorers[name](train, test, seed=seed)
