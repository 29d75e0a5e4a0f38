"""Detection metrics over numpy arrays: point-wise, threshold-free and point-adjusted.

Conventions: `labels` and `predictions` are binary (N,) arrays, 1 = anomalous; `scores` are
(N,) floats where larger means more anomalous.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def check_aligned(labels: np.ndarray, values: np.ndarray, what: str) -> None:
    """Refuse labels and predictions or scores of different shapes: several metrics index one by the other
    and would otherwise grade a label file of another length silently against the wrong points."""
    if np.shape(labels) != np.shape(values):
        raise ValueError(
            f"labels {np.shape(labels)} and {what} {np.shape(values)} differ in shape; give one label per point"
        )


def precision_recall_f1(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Point-wise precision, recall and F1; 0 where a ratio has an empty denominator."""
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    true_positives = int(np.sum(labels & predictions))
    predicted, actual = int(predictions.sum()), int(labels.sum())
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def label_segments(labels: np.ndarray) -> np.ndarray:
    """Maximal runs of 1s as (n_segments, 2) [start, end) pairs; a run may start at index 0."""
    padded = np.concatenate([[0], np.asarray(labels).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges.reshape(-1, 2)


def point_adjust(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """If any point of a labelled segment is predicted, predict the whole segment.

    Unlike the reference code, whose backward scan stops before index 0, a segment that starts
    at the first point is adjusted like any other.
    """
    check_aligned(labels, predictions, "predictions")
    adjusted = np.asarray(predictions).astype(bool).copy()
    for start, end in label_segments(labels):
        if adjusted[start:end].any():
            adjusted[start:end] = True
    return adjusted


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC, or NaN when the labels hold a single class and the area is undefined."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives."""
    labels = np.asarray(labels)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def descending_thresholds(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort once for every threshold: `order` lists the points by decreasing score, and `ends[j]`
    is the last position in `order` of the j-th distinct score (from the largest). Predicting
    `scores >= t` for the j-th distinct value t flags exactly `order[: ends[j] + 1]`, so cumulative
    sums over `order` read at `ends` give each threshold's counts without a loop.
    """
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    return order, ends


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """ORACLE best point-wise F1 over every threshold. It USES THE TEST LABELS to pick the
    threshold, so no deployed detector can claim it; it bounds every fixed threshold, not a rule whose
    threshold moves with time (the decision rule's can beat it), and is never a result.

    Thresholds are all distinct score values, predicting `scores >= t`; F1 = 2 TP / (TP + FP + P)
    at each. Invariant under any strictly increasing transform of the scores. NaN without
    positive labels (like `pr_auc`), where every threshold gives F1 = 0.
    """
    check_aligned(labels, scores, "scores")
    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order, ends = descending_thresholds(scores)
    true_positives = np.cumsum(labels[order])[ends]
    return float(np.max(2 * true_positives / (ends + 1 + positives)))
