"""Metrics, thresholds and the evaluation report: the last stage before artifacts/."""

from evaluation.metrics import detection_metrics, label_segments, point_adjust, precision_recall_f1
from evaluation.report import Evaluation, evaluate_checkpoint, format_table, write_artifacts
from evaluation.thresholds import percentile_threshold

__all__ = [
    "Evaluation",
    "detection_metrics",
    "evaluate_checkpoint",
    "format_table",
    "label_segments",
    "percentile_threshold",
    "point_adjust",
    "precision_recall_f1",
    "write_artifacts",
]
