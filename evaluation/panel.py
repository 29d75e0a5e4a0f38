"""The full metric panel of one method: every number evaluate.py reports, under fixed names."""

from __future__ import annotations

import numpy as np

from evaluation.affiliation import affiliation_metrics
from evaluation.metrics import best_f1, detection_metrics
from evaluation.range_metrics import event_metrics, pa_k_f1, pa_k_f1_auc
from evaluation.vus import DEFAULT_MAX_BUFFER, vus

# Metrics that pick their own threshold with the test labels: upper bounds, never results.
ORACLE_METRICS = ("best_f1",)
# Metrics that read the scores alone; every other one reads the flags (the predictions).
THRESHOLD_FREE_METRICS = ("roc_auc", "pr_auc", "vus_roc", "vus_pr", "best_f1")


def metric_panel(
    labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray, max_buffer: int = DEFAULT_MAX_BUFFER
) -> dict:
    """Point-wise, point-adjusted, PA%K, event-wise, affiliation, VUS and the oracle best F1.

    `predictions` come from the caller's threshold; the threshold-free metrics (ROC-AUC,
    PR-AUC, VUS, best F1) read `scores` only.
    """
    return {
        **detection_metrics(labels, scores, predictions),
        "pa_k20_f1": pa_k_f1(labels, predictions, 20),
        "pa_k100_f1": pa_k_f1(labels, predictions, 100),
        "pa_k_f1_auc": pa_k_f1_auc(labels, predictions),
        **event_metrics(labels, predictions),
        **affiliation_metrics(labels, predictions),
        **vus(labels, scores, max_buffer),
        "best_f1": best_f1(labels, scores),
    }
