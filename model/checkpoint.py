"""Checkpoints as plain tensors, numbers, strings, lists and dicts: safe to open with weights_only=True."""

from __future__ import annotations

import pickle
import platform
import zipfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from data_factory.atomic import atomic_path
from data_factory.dataset import TimeSeriesDataset
from data_factory.errors import UserInputError
from data_factory.windows import Normalizer
from model.score_settings import ScoreSettings
from model.solver import TrainConfig, TrainResult, train_score_statistics
from model.transformer import AnomalyTransformer, ModelConfig

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_state", "model_config", "dataset", "normalization")


def package_versions() -> dict:
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }


def build_checkpoint(
    result: TrainResult, dataset: TimeSeriesDataset, model_config: ModelConfig, train_config: TrainConfig
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model_state": {name: tensor.detach().cpu() for name, tensor in result.model.state_dict().items()},
        "model_config": model_config.to_dict(),
        "train_config": asdict(train_config),
        "dataset": {
            "name": dataset.name,
            "n_channels": dataset.n_channels,
            "channel_names": list(dataset.channel_names),
            "train_length": len(dataset.train),
            "test_length": len(dataset.test),
            "fingerprint": dataset.fingerprint(),
        },
        "normalization": {
            "mean": torch.from_numpy(result.normalizer.mean.copy()),
            "std": torch.from_numpy(result.normalizer.std.copy()),
        },
        "train_scores": train_score_statistics(result.train_scores),
        "scoring": result.scoring.to_dict(),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "versions": package_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),  # UTC, for inspect_checkpoint.py
    }


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write atomically: an interrupted save never replaces a good checkpoint with a broken one."""
    path = Path(path)
    with atomic_path(path) as temp:
        torch.save(checkpoint, temp)
    return path


def load_checkpoint(path: str | Path, dataset: TimeSeriesDataset | None = None) -> dict:
    """Load with weights_only=True and check it against the dataset it will score, if given."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist; train first (./train.sh) or pass --checkpoint PATH")
    checkpoint = _safe_load(path, "retrain it")
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise UserInputError(f"checkpoint {path} is not an Anomaly Transformer checkpoint of this tool; retrain it")
    if dataset is not None:
        check_checkpoint_matches(checkpoint, dataset, path)
    return checkpoint


def _safe_load(path: Path, fix: str) -> object:
    """torch.load with weights_only=True: a pickle that would run code is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserInputError(
            f"checkpoint {path} is corrupt or not a safe checkpoint of this tool ({_reason(error)}); {fix}"
        ) from None


def _reason(error: Exception) -> str:
    """The informative line of a torch.load error (the unpickler's complaint, when there is one)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    unpickler = [line for line in lines if "WeightsUnpickler error" in line]
    return (unpickler or lines or [type(error).__name__])[0][:200]


def check_checkpoint_matches(checkpoint: dict, dataset: TimeSeriesDataset, path: Path) -> None:
    trained_on = checkpoint["dataset"]
    if trained_on["name"] != dataset.name:
        raise UserInputError(
            f"checkpoint {path} was trained on {trained_on['name']}, not {dataset.name}; "
            f"pass --dataset {trained_on['name']} or the {dataset.name} checkpoint"
        )
    if trained_on["n_channels"] != dataset.n_channels:
        raise UserInputError(
            f"checkpoint {path} expects {trained_on['n_channels']} channels but {dataset.name} data have "
            f"{dataset.n_channels}; retrain on these data"
        )
    if trained_on["fingerprint"] != dataset.fingerprint():
        raise UserInputError(
            f"checkpoint {path} was trained on different {dataset.name} data (fingerprint mismatch); "
            "retrain on these data or point --data-dir at the data it was trained on"
        )


def model_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu") -> AnomalyTransformer:
    """Rebuild the model from the checkpoint alone."""
    model = AnomalyTransformer(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval()


def scoring_from_checkpoint(checkpoint: dict) -> ScoreSettings:
    """How the checkpoint's TRAIN scores were made; checkpoints from before --score-channels and
    --smooth scored every channel, unsmoothed."""
    if "scoring" in checkpoint:
        return ScoreSettings.from_dict(checkpoint["scoring"])
    trained_with = checkpoint.get("train_config", {})
    return ScoreSettings(trained_with.get("score_variant", "paper"), trained_with.get("temperature", 50.0))


def normalizer_from_checkpoint(checkpoint: dict) -> Normalizer:
    stats = checkpoint["normalization"]
    return Normalizer(stats["mean"].numpy(), stats["std"].numpy())


def load_last_state(path: Path) -> dict:
    """The resumable state of an unfinished run, or a clear error saying why it cannot resume."""
    if not path.is_file():
        raise UserInputError(f"{path} does not exist, so there is nothing to resume; start without --resume")
    state = _safe_load(path, "start without --resume")
    if not isinstance(state, dict) or state.get("kind") != "last":
        raise UserInputError(f"{path} is not a resumable state of this tool; start without --resume")
    if state["finished"]:
        raise UserInputError(f"the run in {path} already finished; start a new run without --resume")
    return state
