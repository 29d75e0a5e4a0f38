"""What train.py does, as one call: load, check, train, and write the checkpoint atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_factory.atomic import ensure_writable_dir
from data_factory.registry import load_dataset
from model.checkpoint import build_checkpoint, save_checkpoint
from model.solver import TrainConfig, train_anomaly_transformer, validate_model_config
from model.transformer import ModelConfig


def train_to_checkpoint(
    dataset_name: str,
    data_dir: str | Path | None,
    model_settings: dict,
    train_config: TrainConfig,
    output_dir: str | Path = "artifacts",
    log: Callable[[str], None] = print,
    progress: bool = True,
    entity: str | None = None,
) -> Path:
    """Train on the dataset's TRAIN split and write {DATASET}_checkpoint.pth into output_dir.

    Every check that can fail (flags, data, output folder) runs before training starts, and the
    checkpoint replaces an older one only once it is completely written.
    """
    train_config.validate()
    folder = ensure_writable_dir(output_dir)
    dataset = load_dataset(dataset_name, data_dir, entity)
    model_config = ModelConfig(n_channels=dataset.n_channels, **model_settings)
    validate_model_config(model_config)
    log(
        f"{dataset.name}: train {dataset.train.shape}, test {dataset.test.shape}; "
        f"d_model {model_config.d_model}, heads {model_config.n_heads}, layers {model_config.e_layers}, "
        f"window {model_config.win_size}"
    )
    result = train_anomaly_transformer(dataset, model_config, train_config, log=log, progress=progress)
    path = save_checkpoint(
        build_checkpoint(result, dataset, model_config, train_config), folder / f"{dataset.name}_checkpoint.pth"
    )
    log(f"saved {path} (best epoch {result.best_epoch})")
    return path
