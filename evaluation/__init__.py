"""Metrics, thresholds, baselines and the evaluation report: the last stage before artifacts/."""

from evaluation.metrics import detection_metrics, label_segments, point_adjust, precision_recall_f1
from evaluation.panel import metric_panel
from evaluation.report import (
    PROTOCOLS,
    ThresholdSettings,
    evaluate_checkpoint,
    format_table,
    summary,
    write_artifacts,
)
from evaluation.result import Evaluation
from evaluation.thresholds import choose_threshold, percentile_threshold

__all__ = [
    "PROTOCOLS",
    "Evaluation",
    "ThresholdSettings",
    "choose_threshold",
    "detection_metrics",
    "evaluate_checkpoint",
    "format_table",
    "label_segments",
    "metric_panel",
    "percentile_threshold",
    "point_adjust",
    "precision_recall_f1",
    "summary",
    "write_artifacts",
]
