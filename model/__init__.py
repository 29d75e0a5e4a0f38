"""The Anomaly Transformer, its minimax solver, scoring and checkpoints."""

from model.checkpoint import build_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from model.discrepancy import SCORE_VARIANTS, anomaly_score, association_discrepancy, minimax_losses
from model.score_settings import ScoreSettings
from model.scoring import resolve_device, score_points, score_series, smooth_scores
from model.solver import TrainConfig, TrainingFailed, TrainResult, train_anomaly_transformer
from model.transformer import AnomalyTransformer, ModelConfig

__all__ = [
    "SCORE_VARIANTS",
    "AnomalyTransformer",
    "ModelConfig",
    "ScoreSettings",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "anomaly_score",
    "association_discrepancy",
    "build_checkpoint",
    "load_checkpoint",
    "minimax_losses",
    "model_from_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "score_points",
    "score_series",
    "smooth_scores",
    "train_anomaly_transformer",
]
