"""VUS-ROC and VUS-PR as TSB-AD 1.5 computes them for its leaderboard (Liu and Paparrizos, NeurIPS 2024).

This is not `evaluation.vus` ("today's VUS", exact over every threshold): TSB-AD's 'opt' volume
(`basic_metricor.RangeAUC_volume_opt`, reached through `get_metrics(..., version='opt', thre=250)`)
differs in its thresholds, its positives and its ranges. Its definition, with n points, binary
labels y (P = sum(y)), and labelled ranges [s, e] (maximal runs of 1s, e inclusive):

- Window W: TSB-AD's benchmark passes `slidingWindow = find_length_rank(data[:, 0], rank=1)`, the
  dominant period of the FIRST CHANNEL OF THE DATA (never of the score), over the whole series it
  scores (for TSB-AD a file's train prefix and test together): see `dominant_period`.
- Buffers w = 0, 1, ..., W (W + 1 of them); VUS is the plain mean of the W + 1 areas.
- Soft labels for buffer w: an unlabelled point at distance d = 1, ..., w // 2 before s or after e
  gets sqrt(1 - d / w); borders of several ranges add up, capped at 1; labelled points stay 1
  (`evaluation.vus.soft_labels`, the same label as today's VUS).
- Thresholds: 250 of them, t_k = (scores sorted decreasingly)[floor(linspace(0, n - 1, 250))_k];
  the prediction is `scores >= t_k`. Ties and repeated indices are kept as TSB-AD keeps them.
- For buffer w and threshold t_k, with B = sum of the soft labels of the PREDICTED border points
  and H = number of predicted labelled points: TP = H + B; P_w = (P + (P + B)) / 2 = P + B / 2
  (the positives count only the predicted part of the border, unlike `evaluation.vus`);
  recall = min(TP / P_w, 1); FPR = (n_predicted - TP) / (n - P_w); precision = TP / n_predicted.
- Existence: the ranges [s - w // 2, e + w // 2] cut to [0, n - 1], merged when they OVERLAP
  (e_i + w // 2 >= s_{i+1} - w // 2; ranges that only touch stay apart); existence = share of
  these ranges holding at least one predicted point; TPR = recall * existence.
- Range-AUC-ROC: trapezoids over (FPR, TPR) from (0, 0) through the 250 thresholds to (1, 1).
  Range-AUC-PR: sum over k of (TPR_k - TPR_{k-1}) * precision_k, with TPR_0 = 0.

Only the order of the scores matters: a strictly increasing transform changes nothing. Every
prediction is a prefix of one order, so each point enters at one threshold index; all counts are
cumulative sums over those indices, one bincount per buffer.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import label_segments
from evaluation.vus import soft_labels

# TSB-AD's constants: get_metrics(thre=250); find_length_rank's ACF over 400 lags of the first
# 20000 points, lags below 3 dropped ("base"), and 125 when no period lies in [6, 303].
N_THRESHOLDS = 250
ACF_POINTS = 20_000
ACF_LAGS = 400
ACF_BASE = 3
FALLBACK_PERIOD = 125
_INDEX_RANGE = (3, 300)  # of the local maximum in the ACF after the base: period = index + base


def _autocorrelation(series: np.ndarray, lags: int) -> np.ndarray:
    """Biased sample ACF at lags 0..lags (statsmodels' acf(fft=True)); NaN for a constant series."""
    centred = series - series.mean()
    size = 1 << int(2 * len(centred)).bit_length()  # zero padding >= 2n: no circular wrap-around
    spectrum = np.fft.rfft(centred, size)
    autocovariance = np.fft.irfft(spectrum * np.conj(spectrum), size)[: min(lags + 1, len(centred))]
    with np.errstate(invalid="ignore", divide="ignore"):
        return autocovariance / autocovariance[0]


def dominant_period(series: np.ndarray) -> int:
    """TSB-AD's `find_length_rank(series, rank=1)`: the lag of the highest local maximum of the ACF.

    The ACF of the first 20000 points is taken at lags 0..400 and lags 0..2 are dropped; the
    highest strict local maximum (ties: the longer lag) at lag L is the period if 6 <= L <= 303,
    otherwise, or without a local maximum (e.g. a constant series), the period is 125. Give it one
    channel: TSB-AD's benchmark gives column 0 of the data. A per-channel affine normalisation does
    not change it.
    """
    series = np.asarray(series, dtype=float).squeeze()
    if series.ndim != 1 or len(series) == 0:
        raise ValueError(f"dominant_period takes one non-empty channel, got shape {np.shape(series)}")
    tail = _autocorrelation(series[:ACF_POINTS], ACF_LAGS)[ACF_BASE:]
    inner = tail[1:-1]
    maxima = np.flatnonzero((inner > tail[:-2]) & (inner > tail[2:])) + 1  # NaN compares False
    if len(maxima) == 0:
        return FALLBACK_PERIOD
    best = maxima[np.argsort(tail[maxima], kind="stable")[-1]]
    if not _INDEX_RANGE[0] <= best <= _INDEX_RANGE[1]:
        return FALLBACK_PERIOD
    return int(best) + ACF_BASE


def _entry_indices(scores: np.ndarray, n_thresholds: int) -> np.ndarray:
    """For each point, the first threshold index k at which `scores >= t_k` predicts it."""
    descending = -np.sort(-scores)
    thresholds = descending[np.linspace(0, len(scores) - 1, n_thresholds).astype(int)]  # non-increasing
    # Point j is predicted from the first k with t_k <= s_j: k = number of thresholds above s_j.
    return np.searchsorted(-thresholds, -scores, side="left")


def _existence_ranges(segments: np.ndarray, half: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """TSB-AD's `new_sequence`: [s - half, e + half] cut to the series, merged where they overlap."""
    starts, ends = segments[:, 0] - half, segments[:, 1] - 1 + half  # inclusive ends
    apart = ends[:-1] < starts[1:]
    first = np.concatenate([[True], apart])
    last = np.concatenate([apart, [True]])
    return np.maximum(starts[first], 0), np.minimum(ends[last], length - 1)


def _range_minimum(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """min(values[s : e + 1]) for each of the disjoint, sorted inclusive ranges [s, e]."""
    bounds = np.stack([starts, ends + 1], axis=1).ravel()
    if bounds[-1] == len(values):
        bounds = bounds[:-1]
    return np.minimum.reduceat(values, bounds)[::2]


def _cumulative_counts(indices: np.ndarray, n_thresholds: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.cumsum(np.bincount(indices, weights=weights, minlength=n_thresholds))


def tsb_vus(
    labels: np.ndarray,
    scores: np.ndarray,
    window: int | None = None,
    series: np.ndarray | None = None,
    n_thresholds: int = N_THRESHOLDS,
) -> dict:
    """VUS-PR and VUS-ROC of TSB-AD 1.5's leaderboard (see the module docstring).

    The largest buffer is `window`, or else `dominant_period(series)`: pass the data channel the
    window comes from, as TSB-AD does (`series=data[:, 0]` of the series being scored, e.g. an
    entity's normalised test stretch), never the score. NaN without labelled points (where
    TSB-AD raises); VUS-ROC is NaN when every point is labelled (TSB-AD's 0 / 0).
    Returns {"vus_pr", "vus_roc", "window"}.
    """
    if (window is None) == (series is None):
        raise ValueError("tsb_vus needs exactly one of window (an int) or series (the data channel to take it from)")
    if window is None:
        window = dominant_period(series)
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {len(labels)} and {len(scores)}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if window < 0 or n_thresholds < 1:
        raise ValueError(f"window must be >= 0 and n_thresholds >= 1, got {window} and {n_thresholds}")
    if not labels.any():
        return {"vus_pr": float("nan"), "vus_roc": float("nan"), "window": int(window)}

    n, positives = len(labels), float(labels.sum())
    entry = _entry_indices(scores, n_thresholds)
    predicted = _cumulative_counts(entry, n_thresholds)  # (T,) n_predicted at each threshold
    labelled_hits = _cumulative_counts(entry[labels], n_thresholds)  # (T,) H
    segments = label_segments(labels)
    roc_areas, pr_areas = np.empty(window + 1), np.empty(window + 1)
    for buffer in range(window + 1):
        border = soft_labels(labels, buffer)
        border[labels] = 0.0
        on_border = np.flatnonzero(border)
        soft_hits = _cumulative_counts(entry[on_border], n_thresholds, border[on_border])  # (T,) B
        starts, ends = _existence_ranges(segments, buffer // 2, n)
        found = _cumulative_counts(_range_minimum(entry, starts, ends), n_thresholds)
        true_positives = labelled_hits + soft_hits
        positives_w = positives + soft_hits / 2
        tpr = np.minimum(true_positives / positives_w, 1.0) * found / len(starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            fpr = (predicted - true_positives) / (n - positives_w)
        precision = true_positives / predicted
        tpr_path, fpr_path = np.concatenate([[0.0], tpr, [1.0]]), np.concatenate([[0.0], fpr, [1.0]])
        roc_areas[buffer] = np.sum(np.diff(fpr_path) * (tpr_path[1:] + tpr_path[:-1]) / 2)
        pr_areas[buffer] = np.sum(np.diff(tpr_path[:-1]) * precision)
    return {"vus_pr": float(pr_areas.mean()), "vus_roc": float(roc_areas.mean()), "window": int(window)}
