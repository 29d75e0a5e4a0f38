"""Segment-aware metrics over binary predictions: PA%K and event-wise precision/recall/F1.

Conventions as in `evaluation.metrics`: `labels` and `predictions` are binary (N,) arrays,
1 = anomalous; a segment is a maximal run of 1s (`label_segments`), a run that starts at index 0
or ends at the last point included. A ratio with an empty denominator is 0, as in
`precision_recall_f1`.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import check_aligned, label_segments, precision_recall_f1

# PA%K area: F1 at K = 0, 1, ..., 100 (the integers), trapezoid rule over K / 100.
PA_K_GRID = np.arange(101)


def _segment_hits(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled segments, their lengths, and how many of their points are predicted."""
    segments = label_segments(labels)
    flagged = np.concatenate([[0], np.cumsum(predictions, dtype=np.int64)])
    return segments, segments[:, 1] - segments[:, 0], flagged[segments[:, 1]] - flagged[segments[:, 0]]


def pa_k_adjust(labels: np.ndarray, predictions: np.ndarray, k: float) -> np.ndarray:
    """PA%K (Kim et al., AAAI 2022): predict a whole labelled segment when MORE than K % of its
    points are predicted, i.e. hits / length > K / 100 (compared as 100 * hits > K * length, exact).

    K = 0 is plain point adjustment (one hit suffices, as `point_adjust`); K = 100 never adjusts,
    since no segment has more than all of its points predicted, so the predictions stay point-wise.
    """
    if not 0 <= k <= 100:
        raise ValueError(f"PA%K needs 0 <= K <= 100, got {k}")
    predictions = np.asarray(predictions).astype(bool)
    segments, lengths, hits = _segment_hits(labels, predictions)
    adjusted = predictions.copy()
    # Mark every point of each adjusted segment through a +1/-1 difference array: no per-point loop.
    chosen = segments[100 * hits > k * lengths]
    delta = np.zeros(len(adjusted) + 1, dtype=np.int64)
    np.add.at(delta, chosen[:, 0], 1)
    np.add.at(delta, chosen[:, 1], -1)
    adjusted |= np.cumsum(delta[:-1]) > 0
    return adjusted


def pa_k_f1(labels: np.ndarray, predictions: np.ndarray, k: float) -> float:
    """Point-wise F1 of the PA%K-adjusted predictions (see `pa_k_adjust`). K = 0 gives the PA F1,
    K = 100 the plain point-wise F1."""
    return precision_recall_f1(labels, pa_k_adjust(labels, predictions, k))["f1"]


def pa_k_f1_curve(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """F1 of PA%K at every K of `PA_K_GRID`, computed from counts for all K at once."""
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    _, lengths, hits = _segment_hits(labels, predictions)
    # Adjusting a segment turns its missed points into true positives; FP and P never change.
    adjusted = 100 * hits[:, None] > PA_K_GRID[None, :] * lengths[:, None]
    true_positives = int(np.sum(labels & predictions)) + ((lengths - hits) @ adjusted)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P).
    denominator = true_positives + int(np.sum(predictions & ~labels)) + int(labels.sum())
    return np.divide(2 * true_positives, denominator, out=np.zeros(len(PA_K_GRID)), where=denominator > 0)


def pa_k_f1_auc(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Area under the PA%K F1 curve over K in [0, 100], normalised to [0, 1]: the trapezoid rule
    on F1 at the integer K = 0, 1, ..., 100 with K / 100 on the x axis (Kim et al. propose the
    area; this fixes its grid). It lies between the point-wise F1 and the PA F1."""
    return float(np.trapezoid(pa_k_f1_curve(labels, predictions), PA_K_GRID / 100))


def event_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Event-wise (segment-level) precision, recall and F1.

    - A labelled event is a labelled segment; it is a true positive (detected) when at least one
      of its points is predicted. Recall = detected labelled events / labelled events.
    - A predicted event is a maximal run of predicted points; it is a true positive when it
      overlaps at least one labelled point, else a false positive. Precision = true predicted
      events / predicted events.
    - F1 is their harmonic mean. Each event counts once whatever its length, so a long
      false-alarm run costs as much as a single flagged point.
    """
    check_aligned(labels, predictions, "predictions")
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    _, _, label_hits = _segment_hits(labels, predictions)
    _, _, prediction_hits = _segment_hits(predictions, labels)
    recall = float(np.mean(label_hits > 0)) if len(label_hits) else 0.0
    precision = float(np.mean(prediction_hits > 0)) if len(prediction_hits) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"event_precision": precision, "event_recall": recall, "event_f1": f1}
