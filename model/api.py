"""What train.py does, as one call: load, check, train (resumably, on one or many processes), write checkpoints."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from data_factory.atomic import ensure_writable_dir
from data_factory.dataset import TimeSeriesDataset
from data_factory.entities import entity_names
from data_factory.errors import UserInputError
from data_factory.registry import dataset_label, load_dataset
from model.checkpoint import FORMAT_VERSION, load_last_state, save_checkpoint
from model.config import DetectorConfig
from model.detector import Detector
from model.distributed import init_distributed, shutdown_distributed
from model.fleet import Fleet, fleet_path, train_fleet
from model.transformer import AnomalyTransformer, ModelConfig


def best_checkpoint_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir).expanduser() / f"{label}_checkpoint.pth"


def last_checkpoint_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir).expanduser() / f"{label}_last.pth"


def check_free_space(folder: Path, model_config: ModelConfig, copies: int = 1) -> None:
    """Fail before training if the disk cannot hold the checkpoints it will write (`copies` models)."""
    parameters = sum(p.numel() for p in AnomalyTransformer(model_config).parameters())
    # _last.pth: weights, best weights, two Adam moments; the best checkpoint: weights; a temp copy of each.
    needed = copies * 2 * (5 * 4 * parameters) + 2**20
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserInputError(
            f"{folder} has {free / 2**20:.1f} MiB free but the checkpoints need about {needed / 2**20:.1f} MiB; "
            "free some space or choose another --output-dir"
        )


def _dataset_record(dataset: TimeSeriesDataset) -> dict:
    return {"name": dataset.name, "n_channels": dataset.n_channels, "fingerprint": dataset.fingerprint()}


def config_from_state(state: dict) -> DetectorConfig:
    """The stored settings of a resumable run; runs saved before --score-channels and --smooth
    existed scored every channel, unsmoothed, and finish that way."""
    return DetectorConfig.from_dict({"score_channels": "all", "smooth": 0, **state["model_config"],
                                     **state["train_config"]})  # fmt: skip


def train_to_checkpoint(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    output_dir: str | Path = "artifacts",
    log: Callable[[str], None] = print,
    progress: bool = True,
    entity: str | None = None,
    resume: bool = False,
    save_every: int = 0,
) -> Path:
    """Train on the dataset's TRAIN split; write {LABEL}_checkpoint.pth (best) and {LABEL}_last.pth (resumable).

    Every check that can fail (flags, data, output folder, free space) runs before training
    starts, and a checkpoint replaces an older one only once it is completely written. With
    resume=True every model and training setting comes from {LABEL}_last.pth. Under torchrun
    each rank trains on its share of the data and only rank 0 logs and writes.
    """
    if save_every < 0:
        raise UserInputError(f"--save-every must be 0 or positive, got {save_every}")
    context = init_distributed(config.device)
    try:
        label = dataset_label(dataset_name, entity)
        folder = Path(output_dir).expanduser()
        if context.is_main:
            ensure_writable_dir(folder)
        last_path = last_checkpoint_path(folder, label)
        state = None
        if resume:
            state = load_last_state(last_path)
            config = config_from_state(state)
        config.validate()
        dataset = load_dataset(dataset_name, data_dir, entity)
        model_config = config.model_config(dataset.n_channels)
        if state is not None and state["dataset"] != _dataset_record(dataset):
            raise UserInputError(
                f"{last_path} was trained on other data than {dataset.name} here; resume is impossible"
            )
        if context.is_main:
            check_free_space(folder, model_config)
            log(
                f"{dataset.name}: train {dataset.train.shape}, test {dataset.test.shape}; "
                f"d_model {model_config.d_model}, heads {model_config.n_heads}, layers {model_config.e_layers}, "
                f"window {model_config.win_size}" + (f"; {context.world_size} processes" if context.enabled else "")
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "kind": "last",
            "model_config": model_config.to_dict(),
            "train_config": config.to_dict(),
            "dataset": _dataset_record(dataset),
        }

        def save_last(training_state: dict) -> None:
            save_checkpoint({**metadata, **training_state}, last_path)

        detector = Detector(config).fit(
            dataset,
            log=log,
            progress=progress,
            resume=state,
            save_state=save_last,
            save_every=save_every,
            context=context,
        )
        best_path = best_checkpoint_path(folder, label)
        if context.is_main:
            detector.save(best_path)
            log(f"saved {best_path} (best epoch {detector.best_epoch_}) and {last_path}")
        context.barrier()
        return best_path
    finally:
        shutdown_distributed()


def train_fleet_to_bundle(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    output_dir: str | Path = "artifacts",
    *,
    entities: list[str] | None = None,
    jobs: int = 1,
    normalisation: str = "entity",
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """Train one Detector per entity into {DATASET}_fleet.pth, saved after every entity.

    With resume=True the bundle's config and finished entities are kept and the rest trained.
    """
    context = init_distributed(config.device)
    try:
        folder = Path(output_dir).expanduser()
        if context.is_main:
            ensure_writable_dir(folder)
        path = fleet_path(folder, dataset_name)
        previous = None
        if resume:
            if not path.is_file():
                raise UserInputError(f"{path} does not exist, so there is nothing to resume; start without --resume")
            previous = Fleet.load(path)
            config, normalisation = previous.config, previous.normalisation
        config.validate()
        names = entity_names(dataset_name, data_dir)
        if entities:
            unknown = [name for name in entities if name not in names]
            if unknown:
                raise UserInputError(
                    f"{dataset_name} has no entity {unknown[0]!r}; it has {', '.join(names[:8])}, ..."
                )
            names = [name for name in names if name in entities]
        if context.is_main:
            widest = max(load_dataset(dataset_name, data_dir, names[0]).n_channels, 1) if names else 1
            check_free_space(folder, config.model_config(widest), copies=len(names))
            kept = 0 if previous is None else len(previous.detectors) + len(previous.skipped)
            log(
                f"{dataset_name.upper()}: {len(names)} entities, {kept} already done; d_model {config.d_model}, "
                f"layers {config.e_layers}, window {config.win_size}; {jobs} worker(s); {normalisation} normalisation"
            )
        fleet = train_fleet(
            dataset_name, data_dir, names, config, jobs=jobs, normalisation=normalisation, resume_from=previous,
            save=lambda current: current.save(path), progress=progress, context=context,
        )  # fmt: skip
        if context.is_main:
            for entity, reason in fleet.skipped.items():
                log(f"skipped {entity}: {reason}")
            log(f"saved {path}: {len(fleet.detectors)} entities trained, {len(fleet.skipped)} skipped")
        context.barrier()
        return path
    finally:
        shutdown_distributed()
