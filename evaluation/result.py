"""What evaluating a checkpoint gives: each method's scores, threshold, flags and metrics, and the model's
attribution, association maps and incidents."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.association_maps import AssociationMaps
from evaluation.attribution import Attribution
from evaluation.incidents import Incident
from evaluation.thresholds import Threshold
from model.score_settings import ScoreSettings


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

    @property
    def model(self) -> MethodResult:
        return self.methods["model"]
