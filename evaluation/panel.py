"""The full metric panel of one method: every number evaluate.py reports, under fixed names."""

from __future__ import annotations

import numpy as np

from evaluation.metrics import detection_metrics

# Metrics whose value depends on test labels beyond scoring: the threshold is chosen with them.
ORACLE_METRICS = ("best_f1",)


def metric_panel(labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray) -> dict:
    return detection_metrics(labels, scores, predictions)
