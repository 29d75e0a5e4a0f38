from pathlib import Path

import numpy as np
import pytest

from evaluation.baselines import (
    METHODS,
    centred_window_scores,
    iforest_baseline_scores,
    kmeans_baseline_scores,
    knn_baseline_scores,
    mean_over_covering_windows,
    parse_baselines,
    standardised_windows,
)
from runtime.errors import UserInputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PATTERN = np.array([0.0, 1.0, 2.0, 3.0])  # every normal point: this shape across 4 channels, at any level


def periodic(length: int) -> np.ndarray:
    """Three channels with period 10: ten distinct windows of 10 steps."""
    t = np.arange(length)
    return np.stack([np.sin(2 * np.pi * t / 10), np.cos(2 * np.pi * t / 10), np.sin(4 * np.pi * t / 10)], axis=1)


def pattern_points(rng: np.random.Generator, count: int) -> np.ndarray:
    return PATTERN + rng.normal(size=(count, 1)) + 0.1 * rng.normal(size=(count, 4))


def test_windows_are_flattened_channel_by_channel_and_z_scored_by_row():
    series = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 10.0], [5.0, 5.0]])
    rows = standardised_windows(series, 2)
    # Window 0 flattened as (channel 0 at t = 0, 1, channel 1 at t = 0, 1) = (0, 1, 10, 10).
    values = np.array([0.0, 1.0, 10.0, 10.0])
    np.testing.assert_allclose(rows[0], (values - values.mean()) / values.std(ddof=1))
    assert rows.shape == (3, 4)
    np.testing.assert_array_equal(standardised_windows(np.ones((5, 2)), 3), np.zeros((3, 6)))  # constant: 0
    with pytest.raises(UserInputError, match="fewer than the baseline's window of 5"):
        standardised_windows(series, 5)


def test_windows_equal_numpys_own_z_score_bit_for_bit():
    # The rows are built without np.std and np.nan_to_num (a third of a fleet evaluation's time went there);
    # they must still be exactly numpy's (x - mean) / std(ddof=1), with 0 for a constant window.
    rng = np.random.default_rng(3)
    series = rng.normal(size=(300, 4)) * [1.0, 1e-3, 50.0, 1.0]
    series[100:160] = 0.25  # constant windows
    for window, dtype, order in ((1, np.float64, "C"), (40, np.float64, "C"), (100, np.float32, "F")):
        views = np.lib.stride_tricks.sliding_window_view(series, window, axis=0).reshape(len(series) - window + 1, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            plain = (views - views.mean(axis=1, keepdims=True)) / views.std(axis=1, ddof=1, keepdims=True)
        expected = np.nan_to_num(plain).astype(dtype)
        rows = standardised_windows(series, window, dtype, order)
        assert rows.dtype == dtype and rows.flags[f"{order}_CONTIGUOUS"]
        np.testing.assert_array_equal(rows, expected)
    assert not standardised_windows(series[:, :1], 1).any()  # one value per window: 0, as a constant


def test_window_scores_are_spread_back_over_points():
    # Centred (IForest): ceil(3 / 2) = 2 copies of the first window's score before, 3 // 2 = 1 after.
    np.testing.assert_array_equal(centred_window_scores(np.array([1.0, 2.0, 3.0]), 4), [1, 1, 1, 2, 3, 3])
    # Mean over covering windows (KMeansAD), window 2: points 0..3 are covered by {0}, {0, 1}, {1, 2}, {2}.
    np.testing.assert_allclose(mean_over_covering_windows(np.array([1.0, 2.0, 4.0]), 2), [1, 1.5, 3, 4])


def test_kmeans_scores_highest_exactly_the_window_unlike_any_training_window():
    rng = np.random.default_rng(0)
    train = periodic(400) + 0.01 * rng.normal(size=(400, 3))
    test = periodic(200) + 0.01 * rng.normal(size=(200, 3))
    start, window = 93, 10
    test[start : start + window] *= -1  # a shape no training window has
    train_scores, test_scores = kmeans_baseline_scores(train, test, window=window, n_clusters=10, seed=0)
    inside = np.zeros(200, dtype=bool)
    inside[start : start + window] = True
    assert test_scores[inside].min() > test_scores[~inside].max()
    assert train_scores.shape == (400,) and test_scores.shape == (200,)


@pytest.mark.parametrize("method", ["knn", "iforest"])
def test_an_injected_outlier_ranks_above_every_normal_point(method):
    rng = np.random.default_rng(0)
    train, test = pattern_points(rng, 500), pattern_points(rng, 30)
    test[7] = PATTERN[::-1] + 0.3  # the reversed shape; its level is normal
    if method == "knn":
        train_scores, test_scores = knn_baseline_scores(train, test)
    else:
        train_scores, test_scores = iforest_baseline_scores(train, test, window=1, seed=0)
    assert np.argmax(test_scores) == 7
    assert test_scores[7] > max(np.delete(test_scores, 7).max(), train_scores.max())


@pytest.mark.parametrize(
    "method",
    [
        lambda train, test, seed: iforest_baseline_scores(train, test, window=5, seed=seed),
        lambda train, test, seed: kmeans_baseline_scores(train, test, window=10, n_clusters=4, seed=seed),
        lambda train, test, seed: knn_baseline_scores(train, test, n_neighbours=5, max_train=100, seed=seed),
    ],
    ids=["iforest", "kmeans", "knn subsampled"],
)
def test_the_same_seed_gives_the_same_scores(method):
    rng = np.random.default_rng(3)
    train, test = periodic(300) + 0.3 * rng.normal(size=(300, 3)), periodic(120) + 0.3 * rng.normal(size=(120, 3))
    first, again, other = method(train, test, 0), method(train, test, 0), method(train, test, 1)
    for part in range(2):
        np.testing.assert_array_equal(first[part], again[part])
    assert not np.array_equal(first[0], other[0])


def test_knn_subsampled_train_points_leave_only_themselves_out():
    rng = np.random.default_rng(0)
    train = pattern_points(rng, 200)
    duplicated = np.vstack([train, train[:1]])  # point 0 twice: each copy is the other's nearest neighbour
    scores = knn_baseline_scores(duplicated, train[:2], n_neighbours=1)[0]
    assert scores[0] == scores[-1] == 0.0
    # In the subset or not, no TRAIN point finds itself at distance 0.
    subsampled = knn_baseline_scores(train, train[:2], n_neighbours=1, max_train=50, seed=0)[0]
    assert subsampled.shape == (200,) and (subsampled > 0).all()


def test_knn_rejects_a_train_split_without_enough_neighbours():
    rng = np.random.default_rng(0)
    with pytest.raises(UserInputError, match=r"KNN needs more than 50 points to fit on \(TRAIN, .*\), got 40"):
        knn_baseline_scores(pattern_points(rng, 40), pattern_points(rng, 5))


def test_the_window_baselines_are_selectable():
    assert {"random", "pca", "iforest", "knn", "kmeans"} <= set(METHODS)
    assert parse_baselines("all") == tuple(METHODS)
    assert parse_baselines("iforest, kmeans") == ("iforest", "kmeans")


def test_every_window_baseline_on_a_real_msl_channel():
    folder = SHARED_DATA / "MSL"
    if not (folder / "channels.csv").exists():
        pytest.skip(f"{folder} is not present")
    train_len, test_len = 2158, 2264  # C-1, the first channel of channels.csv
    train = np.load(folder / "train.npy", mmap_mode="r")[:train_len]
    test = np.load(folder / "test.npy", mmap_mode="r")[:test_len]
    mean, std = train.mean(axis=0), train.std(axis=0)
    train, test = ((part - mean) / np.where(std < 1e-6, 1.0, std) for part in (train, test))
    for method in (iforest_baseline_scores, knn_baseline_scores, kmeans_baseline_scores):
        train_scores, test_scores = method(train, test)
        assert train_scores.shape == (train_len,) and test_scores.shape == (test_len,), method.__name__
        assert np.isfinite(train_scores).all() and np.isfinite(test_scores).all(), method.__name__
