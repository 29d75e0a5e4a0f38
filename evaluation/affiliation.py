"""Affiliation precision and recall (Huet, Navarro & Rossi, KDD 2022), exact in continuous time.

Time is continuous: point i of a binary (N,) array is the interval [i, i + 1), the series is
[0, N), and events are maximal runs of 1s (`label_segments`), as half-open intervals.

- Zones: each labelled event G_j owns its affiliation zone I_j, the part of [0, N) closer to G_j
  than to any other labelled event; consecutive zones meet at the midpoint of the gap between
  two events. Predictions are cut along the zones, and each zone is scored on its own.
- Precision of zone j: for every predicted instant y in I_j, the probability that a point X drawn
  uniformly in I_j lies at least as far from G_j as y does, P(dist(X, G_j) >= dist(y, G_j)),
  averaged over the predicted part of I_j (1 inside G_j). Undefined for a zone without predictions.
- Recall of zone j: for every instant x of G_j, with d = distance from x to the nearest
  prediction in I_j, the probability that a single prediction Z drawn uniformly in I_j lies at
  least d away from x, P(|Z - x| >= d), averaged over G_j (1 where x is predicted). A zone
  without predictions has recall 0.
- Precision averages the zones that hold predictions; recall averages all labelled events.
  Both are NaN without labelled events; precision is NaN when nothing is predicted.

Random flags get a precision near 0.5, not 0 (each prediction is compared with a uniformly
random one in the same zone), and a recall that rises towards 1 as they get denser. The integrals
are evaluated exactly, piece by piece, through the antiderivatives below; loops run over labelled
events only.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import check_aligned, label_segments


def _ramp_integral(u: np.ndarray, c: float | np.ndarray) -> np.ndarray:
    """Integral of max(0, c - t) for t from 0 to u (u, c >= 0)."""
    m = np.minimum(u, c)
    return c * m - m * m / 2


def _capped_integral(d: np.ndarray, c: float | np.ndarray) -> np.ndarray:
    """Integral of min(2 t, c) for t from 0 to d (d, c >= 0)."""
    return np.where(d <= c / 2, d * d, c * d - c * c / 4)


def _zone_precision(c0: np.ndarray, c1: np.ndarray, s: float, e: float, a: float, b: float) -> float:
    """Mean of P(dist(X, G) >= dist(y, G)), X ~ U[a, b), over the predicted pieces [c0, c1) of the
    zone [a, b) of event G = [s, e). For u > 0 that survival is (max(0, L - u) + max(0, R - u)) / |I|
    with L = s - a and R = b - e the room left and right of G."""
    inside = np.clip(np.minimum(c1, e) - np.maximum(c0, s), 0, None)
    room_left, room_right = s - a, b - e
    total = inside.sum()
    # Distances covered by the part of each piece left of G, then right of G: u runs over [lo, hi].
    for lo, hi in ((np.maximum(s - c1, 0), np.maximum(s - c0, 0)), (np.maximum(c0 - e, 0), np.maximum(c1 - e, 0))):
        survival = sum(_ramp_integral(hi, room) - _ramp_integral(lo, room) for room in (room_left, room_right))
        total += survival.sum() / (b - a)
    return float(total / np.sum(c1 - c0))


def _zone_recall(c0: np.ndarray, c1: np.ndarray, s: float, e: float, a: float, b: float) -> float:
    """Mean over x in G = [s, e) of P(|Z - x| >= d(x)), Z ~ U[a, b), d(x) the distance from x to the
    nearest predicted piece [c0, c1) of the zone. With that piece to the right of x the survival is
    1 - min(2 d, c0 - a) / |I|; to the left, 1 - min(2 d, b - c1) / |I|."""
    # Split G by which piece is nearest: the cells of the pieces meet halfway between them.
    middles = (c1[:-1] + c0[1:]) / 2
    x_lo = np.maximum(s, np.concatenate([[-np.inf], middles]))
    x_hi = np.maximum(np.minimum(e, np.concatenate([middles, [np.inf]])), x_lo)
    total = np.clip(np.minimum(x_hi, c1) - np.maximum(x_lo, c0), 0, None).sum()
    for lo, hi, room in (
        (np.maximum(c0 - x_hi, 0), np.maximum(c0 - x_lo, 0), c0 - a),  # part of the cell before the piece
        (np.maximum(x_lo - c1, 0), np.maximum(x_hi - c1, 0), b - c1),  # part of the cell after it
    ):
        total += np.sum((hi - lo) - (_capped_integral(hi, room) - _capped_integral(lo, room)) / (b - a))
    return float(total / (e - s))


def affiliation_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Affiliation precision and recall of binary predictions; see the module docstring."""
    check_aligned(labels, predictions, "predictions")
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    events = label_segments(labels).astype(float)
    if len(events) == 0:
        return {"affiliation_precision": float("nan"), "affiliation_recall": float("nan")}
    pieces = label_segments(predictions).astype(float)
    middles = (events[:-1, 1] + events[1:, 0]) / 2
    zones = np.column_stack([np.concatenate([[0.0], middles]), np.concatenate([middles, [float(len(labels))]])])
    precisions, recalls = [], []
    for (s, e), (a, b) in zip(events, zones, strict=True):
        # The predicted pieces that meet the zone, cut to it (pieces are sorted and disjoint).
        first = np.searchsorted(pieces[:, 1], a, side="right")
        last = np.searchsorted(pieces[:, 0], b, side="left")
        c0, c1 = np.clip(pieces[first:last, 0], a, b), np.clip(pieces[first:last, 1], a, b)
        c0, c1 = c0[c1 > c0], c1[c1 > c0]
        if len(c0) == 0:
            recalls.append(0.0)
            continue
        precisions.append(_zone_precision(c0, c1, s, e, a, b))
        recalls.append(_zone_recall(c0, c1, s, e, a, b))
    precision = float(np.mean(precisions)) if precisions else float("nan")
    return {"affiliation_precision": precision, "affiliation_recall": float(np.mean(recalls))}
