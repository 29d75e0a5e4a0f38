"""Windows of a series (N, C) as the rows that window baselines fit, and the way back from one score
per window to one score per point, as TSB-AD 1.5's models do both."""

from __future__ import annotations

import numpy as np

from runtime.errors import UserInputError

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


def flat_windows(series: np.ndarray, window: int) -> np.ndarray:
    """(N - window + 1, C * window): every window of `series` (N, C) flattened channel by channel, values kept
    (TSB-AD's feature.Window)."""
    if len(series) < window:
        raise UserInputError(f"the series has {len(series)} time steps, fewer than the baseline's window of {window}")
    views = np.lib.stride_tricks.sliding_window_view(np.asarray(series, dtype=np.float64), window, axis=0)
    return views.reshape(len(views), -1)
