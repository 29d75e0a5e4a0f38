"""Metrics, thresholds, baselines and the evaluation report: the last stage before artifacts/."""

from evaluation.grading import Grade, grade
from evaluation.metrics import label_segments, point_adjust, precision_recall_f1
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
    "Grade",
    "ThresholdSettings",
    "choose_threshold",
    "evaluate_checkpoint",
    "format_table",
    "grade",
    "label_segments",
    "percentile_threshold",
    "point_adjust",
    "precision_recall_f1",
    "summary",
    "write_artifacts",
]
