"""Threshold rules. The default uses TRAIN scores only, so no test data shapes the decision."""

from __future__ import annotations

import numpy as np

from data_factory.errors import UserInputError


def percentile_threshold(reference_scores: np.ndarray, percentile: float) -> float:
    """The given percentile of scores the model produced on data without test labels (e.g. TRAIN)."""
    if not 0 < percentile < 100:
        raise UserInputError(f"--threshold-percentile must be between 0 and 100 (exclusive), got {percentile}")
    return float(np.percentile(reference_scores, percentile))
