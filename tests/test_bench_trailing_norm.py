"""bench/trailing_norm.py: the trailing statistics match a direct loop, and the floor holds."""

from __future__ import annotations

import numpy as np

from bench.trailing_norm import normalised, trailing_moments


def test_trailing_moments_match_a_direct_loop_with_the_prefill() -> None:
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.0, size=300)
    window, fill = 37, 1.5
    mean, std = trailing_moments(scores, window, fill)
    for t in (0, 1, 20, 36, 37, 38, 150, 299):
        past = np.concatenate([np.full(window, fill), scores])[t : t + window]  # the window points before t
        assert np.isclose(mean[t], past.mean()) and np.isclose(std[t], past.std(), atol=1e-7)
    assert mean[0] == fill and std[0] == 0.0  # nothing seen yet: only the TRAIN fill


def test_a_quiet_stretch_makes_a_small_bump_stand_out_and_the_floor_bounds_it() -> None:
    scores = np.concatenate([np.full(500, 1.0), np.full(500, 0.01), [0.2]])
    ratio = normalised(scores, mu=1.0, sigma=0.5, form="ratio", window=100)
    assert ratio[-1] == 0.2 / 0.1  # trailing mean 0.01 is below the floor 0.1 * mu
    assert ratio[-1] > ratio[499]  # the bump in the quiet stretch outranks the loud stretch's normal points
    z = normalised(scores, mu=1.0, sigma=0.5, form="z", window=100)
    assert np.isclose(z[-1], (0.2 - 0.01) / 0.05)  # zero trailing spread: floor 0.1 * sigma
