"""The Anomaly Transformer, its minimax solver, the scores and the Detector that ties them together."""

from model.config import PRESETS, DetectorConfig
from model.detector import Detector
from model.discrepancy import association_discrepancy, minimax_losses
from model.score_settings import ScoreSettings
from model.scores import DEFAULT_SCORE, SCORES, Score
from model.scoring import resolve_device
from model.solver import TrainingFailed, TrainingInterrupted
from model.transformer import AnomalyTransformer, ModelConfig

__all__ = [
    "DEFAULT_SCORE",
    "PRESETS",
    "SCORES",
    "AnomalyTransformer",
    "Detector",
    "DetectorConfig",
    "ModelConfig",
    "Score",
    "ScoreSettings",
    "TrainingFailed",
    "TrainingInterrupted",
    "association_discrepancy",
    "minimax_losses",
    "resolve_device",
]
