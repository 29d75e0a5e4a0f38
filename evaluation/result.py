"""What evaluating a checkpoint gives: each method's scores, threshold, flags and metrics, and the model's
attribution, association maps and incidents; and `judge`, the one step from a method's TRAIN and TEST
scores to its MethodResult, which evaluate.py's report and the per-entity report both take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evaluation.association_maps import AssociationMaps
from evaluation.attribution import Attribution
from evaluation.grading import grade
from evaluation.incidents import Incident
from evaluation.thresholds import Threshold, detection_rule
from model.alarm_rule import AlarmSettings
from model.detector import Detector
from model.score_settings import ScoreSettings
from runtime.errors import UserInputError

# A method's TRAIN scores and its TEST scores as they came (NaN/Inf included) -> its threshold and each TEST
# point's threshold (N,), finite.
Decision = Callable[[np.ndarray, np.ndarray], tuple[Threshold, np.ndarray]]


@dataclass
class MethodResult:
    train_scores: np.ndarray
    scores: np.ndarray
    threshold: Threshold
    predictions: np.ndarray
    thresholds: np.ndarray  # (N,) each TEST point's threshold: threshold.value, or the decision rule's raised one
    metrics: dict = field(default_factory=dict)  # the whole-series panel (evaluation/grading.py); empty without labels
    degenerate_reason: str | None = None  # set: the flags mean nothing, and the metrics that read them are None
    non_finite: int = 0  # TEST scores that were NaN/Inf: ranked as the most anomalous (see rank_non_finite)


@dataclass
class Evaluation:
    dataset: str
    protocol: str
    scoring: ScoreSettings
    labels: np.ndarray | None
    methods: dict[str, MethodResult]  # "model" first, then the baselines
    attribution: Attribution | None = None  # the model's flagged segments, ranked by sensor
    associations: AssociationMaps | None = None  # only with explain > 0
    incidents: list[Incident] = field(default_factory=list)  # the model's runs of flagged points
    drift: dict | None = None  # TEST against the model's TRAIN statistics (evaluation/drift.py); printed and written
    stamps: np.ndarray | None = None  # (N,) TEST's times as text, where its file has a time column

    @property
    def model(self) -> MethodResult:
        return self.methods["model"]


def rank_non_finite(scores: np.ndarray, train_scores: np.ndarray) -> tuple[np.ndarray, int]:
    """The scores with each NaN/Inf replaced by a value above every finite TRAIN and TEST score, so that it
    ranks as the most anomalous point and is flagged by any TRAIN threshold, instead of breaking the metrics
    or passing as normal; and how many there were."""
    bad = ~np.isfinite(scores)
    if not bad.any():
        return scores, 0
    finite = np.concatenate([scores[~bad], train_scores[np.isfinite(train_scores)]]).astype(np.float64)
    top = float(finite.max()) if finite.size else 0.0
    return np.where(bad, top + max(abs(top), 1.0), scores).astype(scores.dtype), int(bad.sum())


def check_train_scores_finite(name: str, train_scores: np.ndarray) -> None:
    bad = ~np.isfinite(train_scores)
    if bad.any():
        raise UserInputError(
            f"{name} gives {int(bad.sum())} TRAIN points a non-finite score (first at row {int(np.argmax(bad))}), "
            "so no threshold can be read from them; the checkpoint's weights or statistics are broken: retrain it"
        )


def alarm_decision(alarm: AlarmSettings) -> Decision:
    """The decision rule (model/alarm_rule.py) fitted on the method's own TRAIN scores."""

    def decide(train_scores: np.ndarray, scores: np.ndarray) -> tuple[Threshold, np.ndarray]:
        fitted = alarm.fit(train_scores)
        _, thresholds, _ = fitted.flags(scores)
        adaptive = fitted.kind != "train"
        return Threshold(fitted.threshold, fitted.describe(), False, reads_earlier_test_scores=adaptive), thresholds

    return decide


def stored_rule_decision(detector: Detector, alarm: AlarmSettings) -> Decision:
    """The decision rule the checkpoint stores, as detect.py applies it (Detector.decision_rule: for a checkpoint
    written before the rule was stored, its TRAIN percentile with no remembered scores), under `alarm`'s rule,
    percentile and window, so that evaluate.py grades exactly the flags detect.py raises. Only for the scoring the
    rule was fitted with; a TRAIN percentile the checkpoint does not store is read from the TRAIN scores."""

    def decide(train_scores: np.ndarray, scores: np.ndarray) -> tuple[Threshold, np.ndarray]:
        rule = detection_rule(detector, alarm.percentile, None, alarm.kind, alarm.window, train_scores)
        _, thresholds, _ = rule.flags(scores)
        adaptive = rule.kind != "train"
        return Threshold(rule.threshold, rule.describe(), False, reads_earlier_test_scores=adaptive), thresholds

    return decide


def judge(
    owner: str,
    train_scores: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None,
    decide: Decision,
    *,
    panel: bool = True,
    tsb_window: int | None = None,
) -> MethodResult:
    """One method on one series: its TRAIN scores checked (`owner` names it in the error), the decision on the
    scores as they came (the decision rule skips a non-finite one in its recent window, as detect.py's does, and
    flags it), a non-finite TEST score then ranked as the most anomalous, and the grade (evaluation/grading.py):
    the whole-series panel, or with panel=False the per-entity metrics (TSB-AD's VUS over `tsb_window`)."""
    check_train_scores_finite(owner, train_scores)
    threshold, thresholds = decide(train_scores, scores)
    ranked, non_finite = rank_non_finite(scores, train_scores)
    flags = (ranked > thresholds) | ~np.isfinite(scores)
    graded = grade(labels, train_scores, ranked, flags, thresholds, panel=panel, tsb_window=tsb_window)
    metrics = graded.panel if panel else graded.per_entity()
    return MethodResult(train_scores, ranked, threshold, graded.flags, thresholds, metrics, graded.degenerate_reason,
                        non_finite)  # fmt: skip
