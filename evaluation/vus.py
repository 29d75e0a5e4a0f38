"""Range-AUC and Volume Under the Surface (Paparrizos et al., VLDB 2022), vectorised over thresholds.

For a buffer length l, each labelled range (a maximal run of 1s, [s, e] inclusive) gets a soft
border: a point at distance d = 1, ..., l // 2 before s or after e is labelled sqrt(1 - d / l).
Where borders of two ranges meet, their values add up, capped at 1; labelled points stay 1.
With this soft label w (and the binary label y, P = sum(y)), for the prediction `scores >= t`:

- TP = sum of w over predicted points; FP = (number predicted) - TP.
- P_l = (sum(y) + sum(w)) / 2 and N_l = N - P_l: the paper averages the hard and soft positives
  so that a wide border around a short range does not swamp it.
- Existence = share of the ranges of w (its maximal nonzero runs, borders included, touching
  ones merged) that hold at least one predicted point: the existence reward of Tatbul et al.
- TPR = recall = min(TP / P_l, 1) * existence (the cap keeps it a rate: TP may exceed P_l when
  many border points are predicted); FPR = FP / N_l; precision = TP / (number predicted).

Range-AUC-ROC is the trapezoid area under (FPR, TPR) from (0, 0) through every threshold to
(1, 1); range-AUC-PR is the step area sum (R_k - R_{k-1}) * precision_k from R_0 = 0, the
average-precision rule of `pr_auc`. VUS-ROC / VUS-PR are their means over l = 0, 1, ..., L.

Thresholds are ALL distinct score values: the curves are exact, not subsampled. The scores are
sorted once. Between two thresholds where a border point or a new range enters the prediction,
the soft hits and the existence ratio stay constant, so each area there is a difference of
prefix sums computed once for all buffer lengths; only the few thousand thresholds where they
change are evaluated one by one. Only the order of the scores matters, so the values do not
change under a strictly increasing transform of the scores.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import descending_thresholds, label_segments

# The Anomaly Transformer's window: anomalies are scored in windows of 100 points.
DEFAULT_MAX_BUFFER = 100


def _borders(labels: np.ndarray, segments: np.ndarray, buffer: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the unlabelled points that the soft border reaches, and their soft label."""
    distances = np.arange(1, buffer // 2 + 1)
    weights = np.tile(np.sqrt(1 - distances / buffer), 2 * len(segments))
    positions = np.concatenate([segments[:, :1] - distances, segments[:, 1:] - 1 + distances], axis=1).ravel()
    inside = (positions >= 0) & (positions < len(labels))
    # Overlapping borders add up, capped at 1; a border over a labelled point changes nothing.
    unique, where = np.unique(positions[inside], return_inverse=True)
    soft = np.minimum(np.bincount(where, weights=weights[inside], minlength=len(unique)), 1.0)
    unlabelled = ~labels[unique]
    return unique[unlabelled], soft[unlabelled]


def soft_labels(labels: np.ndarray, buffer: int) -> np.ndarray:
    """The binary labels with sqrt(1 - d / buffer) borders of buffer // 2 points on each side."""
    labels = np.asarray(labels).astype(bool)
    soft = labels.astype(float)
    positions, weights = _borders(labels, label_segments(labels), buffer)
    soft[positions] = weights
    return soft


class _SortedScores:
    """What every buffer length shares. With T distinct scores t_1 > ... > t_T, state s = 1..T
    predicts `scores >= t_s` and state 0 predicts nothing; the curves are read at the states."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray, max_buffer: int):
        order, ends = descending_thresholds(scores)
        self.labels, self.n_states = labels, len(ends)
        # The state from which each point is predicted.
        self.entry = np.empty(len(scores), dtype=np.int64)
        self.entry[order] = np.repeat(np.arange(1, len(ends) + 1), np.diff(ends, prepend=-1))
        self.predicted = np.concatenate([[0], ends + 1]).astype(float)
        self.hits = np.concatenate([[0], np.cumsum(labels[order])[ends]]).astype(float)  # labelled only
        self.false = self.predicted - self.hits  # unlabelled points predicted
        # Prefix sums over the steps s-1 -> s, for the stretches where the soft part stays fixed.
        new_false, new_hits = np.diff(self.false), np.diff(self.hits)
        self.roc_sum = np.concatenate([[0], np.cumsum(new_false * (self.hits[1:] + self.hits[:-1]))])
        self.pr_sum = np.concatenate([[0], np.cumsum(new_hits * self.hits[1:] / self.predicted[1:])])
        self.pr_rate = np.concatenate([[0], np.cumsum(new_hits / self.predicted[1:])])
        # Earliest state reaching each labelled segment, and reaching its k nearest points on
        # either side (k = 1..max_buffer // 2), so each buffer's ranges cost no pass over the data.
        self.segments = label_segments(labels)
        never = self.n_states + 1
        self.segment_entry = np.minimum.reduceat(np.where(labels, self.entry, never), self.segments[:, 0])
        self.left_entry = self._running_entry(self.segments[:, :1] - np.arange(1, max_buffer // 2 + 1))
        self.right_entry = self._running_entry(self.segments[:, 1:] - 1 + np.arange(1, max_buffer // 2 + 1))

    def _running_entry(self, positions: np.ndarray) -> np.ndarray:
        inside = (positions >= 0) & (positions < len(self.labels))
        entry = np.where(inside, self.entry[np.clip(positions, 0, len(self.labels) - 1)], self.n_states + 1)
        return np.minimum.accumulate(entry, axis=1)

    def range_entries(self, buffer: int) -> np.ndarray:
        """Sorted state at which each range of the soft label first holds a predicted point
        (segments whose borders touch merge into one range)."""
        half = buffer // 2
        entry = self.segment_entry
        if half:
            entry = np.minimum(entry, np.minimum(self.left_entry[:, half - 1], self.right_entry[:, half - 1]))
        starts = np.maximum(self.segments[:, 0] - half, 0)
        stops = np.minimum(self.segments[:, 1] + half, len(self.labels))
        opens = np.flatnonzero(np.concatenate([[True], starts[1:] > stops[:-1]]))
        return np.sort(np.minimum.reduceat(entry, opens))

    def areas(self, buffer: int) -> dict:
        """Both range-AUC areas for one buffer length."""
        positions, weights = _borders(self.labels, self.segments, buffer)
        by_entry = np.argsort(self.entry[positions], kind="stable")
        border_entry = self.entry[positions][by_entry]
        border_sum = np.concatenate([[0.0], np.cumsum(weights[by_entry])])
        range_entry = self.range_entries(buffer)
        n_ranges, last = len(range_entry), self.n_states
        positive = self.hits[-1] + weights.sum() / 2  # (sum of hard labels + sum of soft labels) / 2
        negative = len(self.labels) - positive

        def soft_and_found(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Soft hits of the border points, and ranges found, at the given states."""
            soft = border_sum[np.searchsorted(border_entry, states, side="right")]
            return soft, np.searchsorted(range_entry, states, side="right")

        def recall_and_hits(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            soft, found = soft_and_found(states)
            hits = self.hits[states] + soft
            return np.minimum(hits / positive, 1.0) * found / n_ranges, hits

        # Stretches of states with a constant soft part, and the first state whose recall is capped.
        changes = np.union1d(border_entry, range_entry)
        starts, stops = np.concatenate([[0], changes]), np.append(changes, last + 1)
        first_capped = np.maximum(np.searchsorted(self.hits, positive - soft_and_found(starts)[0]), starts)
        capped_from = first_capped[first_capped < stops].min(initial=last + 1)
        # Steps s-1 -> s evaluated one by one: where the soft part or the cap changes.
        steps = np.union1d(changes, [capped_from])
        steps = steps[(steps >= 1) & (steps <= last)]
        tpr, hits = recall_and_hits(steps)
        tpr_before, hits_before = recall_and_hits(steps - 1)
        # Every other step lies in a run p -> q of constant soft part c, found ranges and capping.
        # There TPR = rate * (hits + c) / P_l (rate alone once capped) and FPR = (false - c) / N_l,
        # so the sums of its trapezoids and of its PR steps are differences of prefix sums.
        p, q = np.concatenate([[0], steps]), np.append(steps, last + 1) - 1
        soft, found = soft_and_found(p)
        rate, capped = found / n_ranges, p >= capped_from

        pr = np.sum((tpr - tpr_before) * hits / self.predicted[steps])
        pr_free = (self.pr_sum[q] - self.pr_sum[p] + soft * (self.pr_rate[q] - self.pr_rate[p])) / positive
        pr += np.sum(np.where(capped, 0.0, rate * pr_free))
        if negative <= 0:  # every point labelled: no false positive rate
            return {"range_auc_roc": float("nan"), "range_auc_pr": float(pr)}

        fpr = (self.predicted[steps] - hits) / negative
        fpr_before = (self.predicted[steps - 1] - hits_before) / negative
        roc = np.sum((fpr - fpr_before) * (tpr + tpr_before)) / 2
        roc_free = (self.roc_sum[q] - self.roc_sum[p] + 2 * soft * (self.false[q] - self.false[p])) / (2 * positive)
        roc += np.sum(rate * np.where(capped, self.false[q] - self.false[p], roc_free)) / negative
        tpr_end, hits_end = recall_and_hits(np.array([last]))
        fpr_end = (self.predicted[last] - hits_end[0]) / negative
        roc += (1 - fpr_end) * (tpr_end[0] + 1) / 2  # the closing step to (1, 1)
        return {"range_auc_roc": float(roc), "range_auc_pr": float(pr)}


def range_auc(labels: np.ndarray, scores: np.ndarray, buffer: int) -> dict:
    """Range-AUC-ROC and range-AUC-PR for one buffer length (see the module docstring).

    NaN without labelled points; the ROC area is also NaN when every point is labelled (N_l = 0).
    Returns {"range_auc_roc", "range_auc_pr"}.
    """
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return {"range_auc_roc": float("nan"), "range_auc_pr": float("nan")}
    return _SortedScores(labels, np.asarray(scores, dtype=float), buffer).areas(buffer)


def vus(labels: np.ndarray, scores: np.ndarray, max_buffer: int = DEFAULT_MAX_BUFFER) -> dict:
    """VUS-ROC and VUS-PR: the means of range-AUC-ROC and range-AUC-PR over the buffer lengths
    0, 1, ..., `max_buffer` (default 100, the default window, whatever window the model has). Returns {"vus_roc",
    "vus_pr"}."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return {"vus_roc": float("nan"), "vus_pr": float("nan")}
    shared = _SortedScores(labels, np.asarray(scores, dtype=float), max_buffer)
    areas = [shared.areas(buffer) for buffer in range(max_buffer + 1)]
    return {
        "vus_roc": float(np.mean([a["range_auc_roc"] for a in areas])),
        "vus_pr": float(np.mean([a["range_auc_pr"] for a in areas])),
    }
