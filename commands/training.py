"""What train.py does, as one call: load, check, train (resumably, on one or many processes), write checkpoints."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch.distributed as dist
from tqdm import tqdm

from commands.inspection import constant_text
from data_factory.custom import ENTITIES_FILE
from data_factory.dataset import TimeSeriesDataset
from data_factory.entities import entity_names
from data_factory.names import dataset_label
from data_factory.registry import load_dataset
from data_factory.windows import training_starts
from evaluation.outputs import FLEET_OUTPUTS, MODEL_OUTPUTS, left_from_earlier
from model.checkpoint import (
    FORMAT_VERSION,
    learned_from,
    load_last_state,
    save_checkpoint,
    set_aside_model_of_other_data,
)
from model.config import DetectorConfig
from model.detector import Detector
from model.fleet import (
    Fleet,
    ShardWriter,
    entity_problem,
    fleet_path,
    merge_shards,
    prepare_fleet,
    remove_shards,
    shard_path,
    train_claimed,
    train_unfinished,
)
from model.schema import expected_shapes
from model.solver import StopOnSignal, TrainingFailed, check_resume_position, split_validation
from model.transformer import ModelConfig
from runtime.distributed import DistributedContext, init_distributed, own_output_folder, shutdown_distributed
from runtime.errors import UserInputError
from runtime.workers import check_jobs, default_jobs


def best_checkpoint_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir).expanduser() / f"{label}_checkpoint.pth"


def last_checkpoint_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir).expanduser() / f"{label}_last.pth"


def check_free_space(folder: Path, model_config: ModelConfig, copies: int = 1) -> None:
    """Fail before training if the disk cannot hold the checkpoints it will write (`copies` models)."""
    parameters = sum(int(np.prod(shape)) for shape in expected_shapes(model_config).values())
    # _last.pth: weights, best weights, two Adam moments; the best checkpoint: weights; a temp copy of each.
    needed = copies * 2 * (5 * 4 * parameters) + 2**20
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserInputError(
            f"{folder} has {free / 2**20:.1f} MiB free but the checkpoints need about {needed / 2**20:.1f} MiB; "
            "free some space or choose another --output-dir"
        )


def _dataset_record(dataset: TimeSeriesDataset) -> dict:
    return {"name": dataset.name, "n_channels": dataset.n_channels, "fingerprint": dataset.fingerprint(),
            "train_fingerprint": dataset.train_fingerprint()}  # fmt: skip


def _resumes_on(stored: dict, dataset: TimeSeriesDataset) -> bool:
    """Whether a resumable state's dataset record describes these data: the same name, channels and TRAIN (a new
    TEST beside it does not stop a resume; training never reads TEST)."""
    return (stored.get("name"), stored.get("n_channels")) == (dataset.name, dataset.n_channels) and learned_from(
        stored, dataset)


def config_from_state(state: dict) -> DetectorConfig:
    """The stored settings of a resumable run; runs saved before --score-channels and --smooth
    existed scored every channel, unsmoothed, and finish that way."""
    return DetectorConfig.from_dict({"score_channels": "all", "smooth": 0, **state["model_config"],
                                     **state["train_config"]})  # fmt: skip


def train(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    output_dir: str | Path = "artifacts",
    *,
    per_entity: bool = False,
    entity: str | None = None,
    entities: list[str] | None = None,
    jobs: int | None = None,
    normalisation: str = "entity",
    resume: bool = False,
    save_every: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """What train.py does, as one call: learn the dataset's TRAIN split and return the file written.

    One model (default, or `entity` for one channel or machine) writes {LABEL}_checkpoint.pth (best) and
    {LABEL}_last.pth (resumable, every `save_every` steps too); under torchrun each rank trains on its share of
    the windows and only rank 0 logs and writes. With `per_entity` one Detector per entity (or per name in
    `entities`) goes into {DATASET}_fleet.pth, saved after every entity, `jobs` entities at once (default: the
    cores); under torchrun the ranks take entities as they become free, each saving its own shard, and rank 0
    writes the bundle.

    Every check that can fail (flags, data, output folder, free space) runs before training starts, and a file
    replaces an older one only once it is completely written. With resume=True the settings come from the
    resumable file (the bundle, with its shards' finished entities merged, for a fleet).
    """
    _check_mode_flags(per_entity, entity, entities, save_every, jobs)
    if per_entity:
        jobs = default_jobs() if jobs is None else check_jobs(jobs)
        def work(folder: Path, context: DistributedContext) -> Path:
            return _train_fleet_locked(dataset_name, data_dir, config, folder, entities, jobs, normalisation, resume,
                                       log, progress, context)  # fmt: skip
    else:
        def work(folder: Path, context: DistributedContext) -> Path:
            return _train_locked(dataset_name, data_dir, config, folder, dataset_label(dataset_name, entity), log,
                                 progress, entity, resume, save_every, context)  # fmt: skip
    return _in_output_folder(config, output_dir, resume, work)


def _check_mode_flags(
    per_entity: bool, entity: str | None, entities: list[str] | None, save_every: int, jobs: int | None
) -> None:
    """Flags that belong to the other mode would be ignored without a word; they are refused instead."""
    if save_every < 0:
        raise UserInputError(f"--save-every must be 0 or positive, got {save_every}")
    if per_entity and entity:
        raise UserInputError("--per-entity trains every entity; use --entities A,B to choose some")
    if per_entity and save_every:
        raise UserInputError("--save-every applies to one model; a fleet is saved after every entity, so drop it")
    if entities and not per_entity:
        raise UserInputError("--entities chooses the entities of a fleet: add --per-entity, or train one entity "
                             "with --entity NAME")  # fmt: skip
    if jobs is not None and not per_entity:
        raise UserInputError("--jobs is for --per-entity (entities trained at once); one model trains in one "
                             "process, or on many with torchrun")  # fmt: skip


def _in_output_folder(
    config: DetectorConfig,
    output_dir: str | Path,
    resume: bool,
    work: Callable[[Path, DistributedContext], Path],
) -> Path:
    """A training run's frame, the same for one model and for a fleet: the settings checked before anything
    is created on disk (a resumed run's come from its file and are checked there), then `work(folder,
    context)` under torchrun's context (if any) and the output folder's lock."""
    if not resume:
        config.validate()
    context = init_distributed(config.device)
    try:
        folder = Path(output_dir).expanduser()
        with contextlib.ExitStack() as stack:
            own_output_folder(folder, context, stack)
            return work(folder, context)
    finally:
        shutdown_distributed()


def _train_locked(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    folder: Path,
    label: str,
    log: Callable[[str], None],
    progress: bool,
    entity: str | None,
    resume: bool,
    save_every: int,
    context: DistributedContext,
) -> Path:
    last_path = last_checkpoint_path(folder, label)
    best_path = best_checkpoint_path(folder, label)
    state = None
    if resume:
        state = load_last_state(last_path)
        if state["finished"] and best_path.is_file():
            raise UserInputError(
                f"the run in {last_path} already finished and wrote {best_path}; start a new run without --resume"
            )
        config = config_from_state(state).validate()  # the resumed run's settings, read from the file
    dataset = load_dataset(dataset_name, data_dir, entity)
    fit_part, _ = split_validation(dataset.train, config, dataset.name)  # a window too long fails before any model
    problem = entity_problem(dataset, config)  # what makes a fleet skip an entity stops one model too
    if problem is not None:
        raise UserInputError(f"{dataset.name}: {problem}, so there is nothing to learn; check the TRAIN file")
    model_config = config.model_config(dataset.n_channels)
    if state is not None and not _resumes_on(state["dataset"], dataset):
        raise UserInputError(f"{last_path} was trained on other data than {dataset.name} here; resume is impossible")
    if state is not None:
        windows = len(training_starts(len(fit_part), config.win_size, config.train_stride))
        check_resume_position(state, windows, config, context, f"resumable state {last_path}")
    if context.is_main:
        check_free_space(folder, model_config)
        log(
            f"{dataset.name}: train {dataset.train.shape}, test {dataset.test.shape}; "
            f"d_model {model_config.d_model}, heads {model_config.n_heads}, layers {model_config.e_layers}, "
            f"window {model_config.win_size}" + (f"; {context.world_size} processes" if context.enabled else "")
        )
        if entity is None and dataset.name == "CUSTOM" and (Path(data_dir).expanduser() / ENTITIES_FILE).is_file():
            log(f"note: {ENTITIES_FILE} lists {len(entity_names('CUSTOM', data_dir))} entities; this one model learns "
                "them as one series, its windows crossing from one to the next; --per-entity trains one per entity")
    metadata = {
        "format_version": FORMAT_VERSION,
        "kind": "last",
        "model_config": model_config.to_dict(),
        "train_config": config.to_dict(),
        "dataset": _dataset_record(dataset),
    }

    def save_last(training_state: dict) -> None:
        save_checkpoint({**metadata, **training_state}, last_path)

    # From here to the saved checkpoint a first SIGINT/SIGTERM never loses the run: inside the epoch
    # loop it stops after the step with a resumable state; after the last epoch the final TRAIN
    # scoring and the save go on, and a second signal stops them, leaving _last.pth marked finished.
    with StopOnSignal(second_stops=True) as stop:
        detector = Detector(config).fit(
            dataset,
            log=log,
            progress=progress,
            resume=state,
            save_state=save_last,
            save_every=save_every,
            context=context,
            config_checked=True,
        )
        if context.is_main:
            kept = set_aside_model_of_other_data(best_path, dataset)
            detector.save(best_path)
    if context.is_main:
        log(_saved_line(best_path, last_path, detector, dataset.name, kept, stop.signal_number))
        _note_constant_channels(detector, log)
        _note_earlier_evaluation(folder, {label: MODEL_OUTPUTS, f"{label}_shared": FLEET_OUTPUTS}, log)
    context.barrier()
    return best_path


def _saved_line(best_path: Path, last_path: Path, detector: Detector, dataset_name: str, kept: Path | None,
                signal_number: int | None) -> str:
    """What one model's run wrote: the two files, the older model set aside, a signal that came after training."""
    saved = f"saved {best_path} (best epoch {detector.best_epoch_}) and {last_path}"
    if kept is not None:
        saved += f"; the model of other {dataset_name} data that was there is kept as {kept}"
    if signal_number is not None:
        saved = (f"{signal.Signals(signal_number).name} arrived after the last epoch: finished the final TRAIN "
                 f"scoring first and {saved}; the run is complete")  # fmt: skip
    return saved


def _note_earlier_evaluation(folder: Path, outputs: dict[str, dict[str, str]], log: Callable[[str], None]) -> None:
    """A model saved where an evaluation of the one before it lies: its files no longer describe the new model."""
    earlier = [path.name for stem, names in outputs.items() for path in left_from_earlier(folder, stem, names)]
    if earlier:
        log(f"note: {', '.join(earlier)} in {folder} are from an evaluation of the model before this run; "
            "run evaluate.py to write them for this one")  # fmt: skip


def _train_fleet_locked(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    folder: Path,
    entities: list[str] | None,
    jobs: int,
    normalisation: str,
    resume: bool,
    log: Callable[[str], None],
    progress: bool,
    context: DistributedContext,
) -> Path:
    path = fleet_path(folder, dataset_name)
    fleet, names, failure = None, [], None
    if context.is_main:  # under torchrun rank 0 alone reads the bundle: the other ranks need no model of it
        try:
            fleet, names = _open_fleet(dataset_name, data_dir, config, path, entities, normalisation, resume, jobs, log,
                                       context)  # fmt: skip
        except UserInputError as error:
            failure = error
    if context.enabled:
        fleet = _train_sharded(dataset_name, data_dir, path, fleet, names, jobs, log, progress, context, failure)
    elif failure is not None:
        raise failure
    else:
        train_unfinished(fleet, dataset_name, data_dir, names, jobs=jobs, save=lambda current: current.save(path),
                         progress=progress)  # fmt: skip
    if context.is_main:
        for entity, reason in fleet.skipped.items():
            log(f"skipped {entity}: {reason}")
        log(f"saved {path}: {len(fleet.detectors)} entities trained, {len(fleet.skipped)} skipped")
        _note_constant_channels_per_entity(fleet, log)
        _note_earlier_evaluation(folder, {f"{dataset_name.upper()}_fleet": FLEET_OUTPUTS}, log)
    context.barrier()
    if context.is_main and not fleet.detectors:  # rank 0 alone holds the merged fleet
        raise TrainingFailed(f"no entity of {dataset_name.upper()} could train (each one skipped, for the reason "
                             "logged above); fix their data or choose others with --entities")  # fmt: skip
    return path


def _note_constant_channels(detector: Detector, log: Callable[[str], None]) -> None:
    """The channels that never moved in TRAIN: the model never saw them move, so any movement later scores high."""
    constant = detector.constant_channels
    if constant:
        log(f"note: {constant_text(constant)}, so any movement of theirs later scores as anomalous; if one is a "
            "stuck or disconnected sensor, mend it and retrain")  # fmt: skip


def _note_constant_channels_per_entity(fleet: Fleet, log: Callable[[str], None]) -> None:
    """The entities with channels that never moved in their TRAIN: their models never saw those move."""
    counts = {name: len(detector.constant_channels) for name, detector in fleet.detectors.items()}
    counts = {name: count for name, count in counts.items() if count}
    if counts:
        shown = ", ".join(f"{name} {count}" for name, count in list(counts.items())[:5]) + (
            ", ..." if len(counts) > 5 else "")  # fmt: skip
        log(f"note: channels constant in TRAIN, which the entity's model never saw move, in {len(counts)} of "
            f"{len(fleet.detectors)} entities ({shown}: how many); inspect_checkpoint.py --json names them")


def _ranks_lost(error: RuntimeError, bundle: Path, rank: int) -> UserInputError:
    """One line for a rank whose peers went away (killed, their machine lost): its own entities are saved."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    reason = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # without gloo's source location
    return UserInputError(
        f"rank {rank} lost the other ranks ({reason}); what it finished is in {shard_path(bundle, rank, '*')}: "
        "finish the fleet with --resume"
    )


def _open_fleet(
    dataset_name: str,
    data_dir: str | Path | None,
    config: DetectorConfig,
    path: Path,
    entities: list[str] | None,
    normalisation: str,
    resume: bool,
    jobs: int,
    log: Callable[[str], None],
    context: DistributedContext,
) -> tuple[Fleet, list[str]]:
    """The fleet to train (on resume: the bundle with its shards merged) and the entities asked for."""
    previous, merged = None, 0
    if resume:
        if not path.is_file():
            raise UserInputError(f"{path} does not exist, so there is nothing to resume; start without --resume")
        previous = Fleet.load(path)
        merged = merge_shards(previous, path)
        config, normalisation = previous.config.validate(), previous.normalisation  # the bundle's settings
    names = entity_names(dataset_name, data_dir)
    if entities:
        unknown = [name for name in entities if name not in names]
        if unknown:
            raise UserInputError(f"{dataset_name} has no entity {unknown[0]!r}; it has {', '.join(names[:8])}, ...")
        names = [name for name in names if name in entities]
    folder = path.parent
    check_free_space(folder, config.model_config(_channels(dataset_name, data_dir, names)), copies=len(names))
    fleet = prepare_fleet(dataset_name, data_dir, names, config, normalisation, previous)
    kept = sum(fleet.finished(name) for name in fleet.order)
    ranks = f"; {context.world_size} processes" if context.enabled else ""
    log(
        f"{dataset_name.upper()}: {len(names)} entities, {kept} already done"
        + (f" ({merged} of them from the shards in {folder})" if merged else "")
        + f"; d_model {config.d_model}, layers {config.e_layers}, window {config.win_size}; {jobs} worker(s)"
        + f"{' per process' if context.enabled else ''}; {normalisation} normalisation{ranks}"
    )
    if merged or context.enabled:  # the bundle now holds what the shards held, and names this run's shards
        fleet.save(path)
    if resume or context.enabled:  # shards merged just now, or left by a run whose bundle was since replaced
        remove_shards(path)
    return fleet, names


def _channels(dataset_name: str, data_dir: str | Path | None, names: list[str]) -> int:
    """The channel count of the first entity that loads: one with bad data is skipped later, with its reason."""
    for name in names:
        with contextlib.suppress(UserInputError):
            return max(load_dataset(dataset_name, data_dir, name).n_channels, 1)
    return 1


def _train_sharded(
    dataset_name: str,
    data_dir: str | Path | None,
    path: Path,
    fleet: Fleet | None,
    names: list[str],
    jobs: int,
    log: Callable[[str], None],
    progress: bool,
    context: DistributedContext,
    failure: UserInputError | None,
) -> Fleet | None:
    """Every rank takes the next entity left from a shared counter whenever it is free, trains it and
    rewrites its shard; at the end rank 0 gathers the shards and writes the bundle (returned there)."""
    plan = None
    if context.is_main and failure is None:
        todo = [name for name in names if not fleet.finished(name)]
        plan = (fleet.without_entities().to_bundle(), todo, uuid.uuid4().hex)
        fleet = None  # on disk now; rank 0 reads it back at the end instead of holding it while it trains
    try:
        plan = context.broadcast(plan)
    except RuntimeError as error:  # gloo and nccl report a rank gone as a RuntimeError
        raise _ranks_lost(error, path, context.rank) from None
    if plan is None:
        raise failure or UserInputError("rank 0 could not start the fleet; see its error")
    head, todo, key = plan
    shard = Fleet.from_bundle(head)
    take = context.counter(f"anomaly-transformer/fleet/{key}")

    def claim() -> int:
        try:
            return take()
        except dist.DistError as error:  # the store went with the launcher
            raise _ranks_lost(error, path, context.rank) from None

    bar = tqdm(desc=f"{shard.dataset} entities on rank 0", disable=not (progress and context.is_main))
    train_claimed(shard, dataset_name, data_dir, todo, claim, jobs=jobs, save=ShardWriter(path, context.rank),
                  bar=bar, rank=context.rank)  # fmt: skip
    try:
        parts = context.gather_to_main(shard.to_bundle())
    except RuntimeError as error:
        raise _ranks_lost(error, path, context.rank) from None
    if context.is_main:
        fleet = Fleet.load(path)
        counts = [fleet.merge(Fleet.from_bundle(part)) for part in parts]
        fleet.save(path)
        log(f"{len(todo)} entities trained this run: " + ", ".join(f"rank {rank} took {count}"
                                                                    for rank, count in enumerate(counts)))  # fmt: skip
    context.barrier()  # the bundle holds every shard's entities: each rank's shard can go
    remove_shards(path, context.rank)
    return fleet
