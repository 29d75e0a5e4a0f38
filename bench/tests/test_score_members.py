"""bench/score_members.py: overlapping windows and the mean over seeds, on toys worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.score_members import mean_rows, min_sides, overlapped, window_mean


def position_in_window(window: int):
    """A toy score: each point's position inside its non-overlapping window, counted from the series' start."""
    return lambda series: (np.arange(len(series)) % window).astype(float)


def test_each_point_averages_the_offsets_whose_windows_cover_it():
    series = np.zeros((10, 1))
    scores = overlapped(position_in_window(4), series, window=4, offsets=(0, 1, 2, 3))
    # Point 0 lies only in offset 0's first window (position 0); point 1 in offset 0's (1) and offset 1's (0);
    # from point 3 on, the four offsets put it at positions 3, 2, 1 and 0: the position effect is gone.
    assert scores.tolist() == pytest.approx([0.0, 0.5, 1.0] + [1.5] * 7)


def test_an_offset_leaving_less_than_a_window_is_skipped():
    series = np.zeros((5, 1))
    scores = overlapped(position_in_window(4), series, window=4, offsets=(0, 2))
    assert scores.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 0.0])  # offset 2 leaves 3 points


def test_the_seed_mean_averages_each_part_and_keeps_the_labels():
    first = {"a": {"labels": np.array([0, 1]), "window": 7, "train": {"model": np.array([1.0, 3.0])},
                   "test": {"model": np.array([2.0, 2.0])}}}  # fmt: skip
    second = {"a": {"labels": np.array([0, 1]), "window": 7, "train": {"model": np.array([3.0, 5.0])},
                    "test": {"model": np.array([0.0, 6.0])}}}  # fmt: skip
    joined = mean_rows([first, second])["a"]
    assert joined["train"]["model"].tolist() == [2.0, 4.0]
    assert joined["test"]["model"].tolist() == [1.0, 4.0]
    assert joined["labels"].tolist() == [0, 1] and joined["window"] == 7


def test_the_one_sided_means_cut_the_smear_of_a_fault_and_keep_its_inside():
    errors = np.zeros(12)
    errors[5:7] = 6.0  # a two-point fault
    trailing = window_mean(errors, 2, 0)  # mean over t-2 .. t, over the points that exist
    assert trailing[:8].tolist() == pytest.approx([0, 0, 0, 0, 0, 2, 4, 4])
    sides = min_sides(errors)  # min of the 25-point trailing and leading means
    # Before the fault only the leading mean sees it, after it only the trailing one: both stay 0 there.
    assert sides[:5].tolist() == [0.0] * 5 and sides[7:].tolist() == [0.0] * 5
    assert sides[5] == pytest.approx(min(6 / 6, 12 / 7)) and sides[6] == pytest.approx(min(12 / 7, 6 / 6))
