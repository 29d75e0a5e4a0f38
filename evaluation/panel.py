"""The full metric panel of one method: every number evaluate.py reports, under fixed names."""

from __future__ import annotations

import numpy as np

from evaluation.affiliation import affiliation_metrics
from evaluation.alarm_metrics import alarm_metrics
from evaluation.metrics import best_f1, detection_metrics
from evaluation.range_metrics import event_metrics, pa_k_f1, pa_k_f1_auc
from evaluation.vus import DEFAULT_MAX_BUFFER, vus

# Metrics that pick their own threshold with the test labels: upper bounds, never results.
ORACLE_METRICS = ("best_f1",)
# Metrics that read the scores alone; every other one reads the flags (the predictions).
THRESHOLD_FREE_METRICS = ("roc_auc", "pr_auc", "vus_roc", "vus_pr", "best_f1")
# Read the labels alone.
LABEL_METRICS = ("anomaly_share",)
# The alarm metrics the point-wise and event-wise ones do not already give (evaluation/alarm_metrics.py).
ALARM_COUNTS = ("anomaly_share", "false_alarm_rate", "missed_alarm_rate", "false_alarm_events_per_10k")


def metric_panel(
    labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray, max_buffer: int = DEFAULT_MAX_BUFFER
) -> dict:
    """Point-wise, point-adjusted, PA%K, event-wise, affiliation, the alarm counts, VUS and the oracle best F1.

    `predictions` come from the caller's threshold; the threshold-free metrics (ROC-AUC,
    PR-AUC, VUS, best F1) read `scores` only.
    """
    alarms = alarm_metrics(labels, predictions)
    return {
        **detection_metrics(labels, scores, predictions),
        **{key: alarms[key] for key in ALARM_COUNTS},
        "pa_k20_f1": pa_k_f1(labels, predictions, 20),
        "pa_k100_f1": pa_k_f1(labels, predictions, 100),
        "pa_k_f1_auc": pa_k_f1_auc(labels, predictions),
        **event_metrics(labels, predictions),
        **affiliation_metrics(labels, predictions),
        **vus(labels, scores, max_buffer),
        "best_f1": best_f1(labels, scores),
    }
