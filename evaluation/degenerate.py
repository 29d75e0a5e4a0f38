"""Degenerate methods: scores that a threshold cannot turn into meaningful flags.

Example: on SMAP's channel A-1 the telemetry barely moves over TRAIN (std 1.8e-5, under the
normaliser's floor, so it is only centred). The PCA baseline reconstructs that channel exactly:
every TRAIN score is 0, the 99th-percentile threshold is 0, and every TEST point, whose error is
at least 1e-6, is flagged. Its F1, PA F1 and the like would describe the threshold, not the method,
so the reports leave them out (evaluation/grading.py). The threshold-free metrics (ROC-AUC, PR-AUC,
VUS, best F1) read the scores alone and stay.
"""

from __future__ import annotations

import numpy as np

CONSTANT_RTOL = 1e-6  # a spread below this fraction of the largest |score| is float32 round-off


def is_constant(scores: np.ndarray) -> bool:
    """True when every score equals the others up to round-off (all zeros included)."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(np.ptp(scores) <= CONSTANT_RTOL * np.max(np.abs(scores)))


def degenerate_reason(train_scores: np.ndarray, test_scores: np.ndarray, threshold: np.ndarray | float) -> str | None:
    """Why flags `test_scores > threshold` (one threshold, or one per point) mean nothing, or None when they can.

    Degenerate: the TRAIN scores are constant (a threshold read from them has nothing to
    separate), the TEST scores are constant, or the threshold flags every TEST point.
    """
    reasons = []
    if is_constant(train_scores):
        reasons.append(f"its TRAIN scores are constant ({float(train_scores[0]):.6g})")
    if is_constant(test_scores):
        reasons.append(f"its TEST scores are constant ({float(test_scores[0]):.6g})")
    if (test_scores > threshold).all():
        shown = f"{threshold:.6g}" if np.ndim(threshold) == 0 else f"from {np.min(threshold):.6g}"
        reasons.append(f"the threshold {shown} flags all {len(test_scores)} TEST points")
    return "; ".join(reasons) or None

