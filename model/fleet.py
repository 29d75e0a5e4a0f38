"""A fleet: one Detector per entity (SMAP/MSL channel, SMD machine, CUSTOM entity), stored as one bundle.

Entities train in parallel worker processes, one thread each, so a fleet's model for an entity is
bit for bit the Detector that entity gives when trained alone on one thread. The bundle,
{DATASET}_fleet.pth, holds the config once and each entity's weights, normaliser, TRAIN-score
statistics and threshold; it loads with torch.load(weights_only=True), is written atomically after
every finished entity, and so lets `--resume` keep the entities already done.

Under torchrun the ranks take the entities one at a time from a shared counter as they become free,
and each saves what it finished after every entity, in its own shards
{DATASET}_fleet.shard-{rank}-{part}.pth (bundles of up to SHARD_SIZE of its entities); at the end
rank 0 gathers them and writes the bundle. A fleet stopped before that keeps its shards, and
`--resume` merges them, with any number of ranks.
"""

from __future__ import annotations

import glob
import itertools
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_factory.dataset import TimeSeriesDataset
from data_factory.entities import entity_names
from data_factory.registry import load_dataset
from data_factory.windows import Normalizer
from model.checkpoint import FORMAT_VERSION, check_checkpoint_matches, load_checkpoint, save_checkpoint
from model.config import DetectorConfig
from model.detector import Detector, package_versions
from model.solver import StopOnSignal, TrainingFailed, TrainingInterrupted
from runtime.atomic import remove_stale_temps
from runtime.errors import UserInputError
from runtime.workers import check_jobs, one_thread, spawn_pool

# What one entity's record in the bundle leaves out: written once for the whole fleet.
SHARED_KEYS = ("train_config", "versions")
NORMALISATIONS = ("entity", "global")
# Entities per shard file under torchrun: a save after each entity rewrites at most this many (see ShardWriter).
SHARD_SIZE = 16


@dataclass
class Fleet:
    """Detectors by entity, in the dataset's order, with the entities that could not train."""

    dataset: str
    config: DetectorConfig
    normalisation: str = "entity"  # entity: each entity's own TRAIN statistics; global: the whole dataset's
    shared_normaliser: Normalizer | None = None  # global: fitted once on every entity's TRAIN, kept for resume
    detectors: dict[str, Detector] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # entity -> why it could not train
    order: list[str] = field(default_factory=list)  # every entity asked for, in order
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each entity's training
    run: str = field(default_factory=lambda: uuid.uuid4().hex)  # shared by the bundle and its shards, kept on resume
    single: bool = False  # opened from one model's checkpoint (open_fleet), not from a bundle
    shared: bool = False  # that one model lent to every entity of its dataset (lent_to), not one trained per entity

    @property
    def complete(self) -> bool:
        return all(self.finished(name) for name in self.order)

    def finished(self, entity: str) -> bool:
        return entity in self.detectors or entity in self.skipped

    def without_entities(self) -> Fleet:
        """The same fleet with no entity finished: what a rank needs to train its share into a shard."""
        return Fleet(self.dataset, self.config, self.normalisation, self.shared_normaliser, order=list(self.order),
                     run=self.run)  # fmt: skip

    def merge(self, part: Fleet) -> int:
        """Take the entities another part of this fleet (a rank's shard) finished and this one lacks; how many."""
        new = [name for name in [*part.detectors, *part.skipped] if not self.finished(name)]
        for name in new:
            if name in part.detectors:
                self.detectors[name], self.seconds[name] = part.detectors[name], part.seconds.get(name, 0.0)
            else:
                self.skipped[name] = part.skipped[name]
        known = set(self.order)
        self.order += [name for name in part.order if name not in known]
        self.detectors = {name: self.detectors[name] for name in self.order if name in self.detectors}
        return len(new)

    def detector(self, entity: str) -> Detector:
        if entity in self.detectors:
            return self.detectors[entity]
        if entity in self.skipped:
            raise UserInputError(f"entity {entity!r} was skipped in training ({self.skipped[entity]}); it has no model")
        shown = ", ".join(list(self.detectors)[:8]) + (", ..." if len(self.detectors) > 8 else "")
        raise UserInputError(
            f"unknown entity {entity!r} in the {self.dataset} fleet (it has {shown}): a fleet scores only the entities "
            "it was trained on; leave that entity's rows out, or train a fleet with it (train.py --per-entity)"
        )

    def to_bundle(self) -> dict:
        entities = {}
        for name, detector in self.detectors.items():
            record = {key: value for key, value in detector.to_checkpoint().items() if key not in SHARED_KEYS}
            entities[name] = {**record, "seconds": self.seconds.get(name, 0.0)}
        return {
            "format_version": FORMAT_VERSION,
            "kind": "fleet",
            "dataset": self.dataset,
            "config": self.config.to_dict(),
            "normalisation": self.normalisation,
            "shared_normalization": None if self.shared_normaliser is None else self.shared_normaliser.to_record(),
            "order": list(self.order),
            "entities": entities,
            "skipped": dict(self.skipped),
            "complete": self.complete,
            "run": self.run,
            "versions": package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(self.to_bundle(), path)

    @classmethod
    def from_bundle(cls, bundle: dict) -> Fleet:
        config = DetectorConfig.from_dict(bundle["config"])
        fleet = cls(bundle["dataset"], config, bundle.get("normalisation", "entity"))
        shared = bundle.get("shared_normalization")
        if shared is not None:
            fleet.shared_normaliser = Normalizer.from_record(shared)
        for name, record in bundle["entities"].items():
            fleet.detectors[name] = Detector.from_checkpoint({**record, "train_config": bundle["config"]})
            fleet.detectors[name].versions_ = dict(bundle.get("versions", {}))
            fleet.seconds[name] = float(record.get("seconds", 0.0))
        fleet.skipped = dict(bundle.get("skipped", {}))
        fleet.order = list(bundle.get("order", list(fleet.detectors)))
        fleet.run = str(bundle.get("run", ""))  # bundles from before shards have none, and no shards
        return fleet

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> Fleet:
        """One model's checkpoint as a fleet of one, whose entity is the label of the data it was trained on
        (SYNTH, SMAP_A-1)."""
        detector = Detector.from_checkpoint(checkpoint)
        label = detector.dataset_["name"]
        return cls(label, detector.config, detectors={label: detector}, order=[label], run="", single=True)

    def lent_to(self, entities: list[str]) -> Fleet:
        """One model's fleet of one lent to each of `entities`: the same Detector scores every entity's own
        series, so that one model of a whole dataset is graded per entity as a fleet is."""
        (detector,) = self.detectors.values()
        return Fleet(self.dataset, self.config, detectors=dict.fromkeys(entities, detector), order=list(entities),
                     run="", single=True, shared=True)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Fleet:
        return cls.from_bundle(load_checkpoint(path, kind="fleet"))


def open_fleet(path: str | Path) -> Fleet:
    """Any model file train.py writes, as a fleet: a bundle as it is, one model's checkpoint as a fleet of one."""
    checkpoint = load_checkpoint(path, kind=None)
    return Fleet.from_bundle(checkpoint) if checkpoint.get("kind") == "fleet" else Fleet.from_checkpoint(checkpoint)


def fleet_path(output_dir: str | Path, dataset_name: str) -> Path:
    return Path(output_dir).expanduser() / f"{dataset_name.upper()}_fleet.pth"


def shard_path(bundle: Path, rank: int, part: int | str = 0) -> Path:
    """Where a torchrun rank keeps the entities it finished, beside the bundle:
    {DATASET}_fleet.shard-{rank}-{part}.pth, SHARD_SIZE entities per part (part "*": the glob of them all)."""
    return bundle.with_name(f"{bundle.stem}.shard-{rank}-{part}{bundle.suffix}")


def _shard_keys(bundle: Path) -> list[tuple[int, int]]:
    """(rank, part) of each shard, or shard temp file, beside the bundle."""
    name = re.compile(rf"\.?{re.escape(bundle.stem)}\.shard-(\d+)-(\d+){re.escape(bundle.suffix)}(\..+\.tmp)?")
    matches = (name.fullmatch(path.name) for path in bundle.parent.glob(f"*{glob.escape(bundle.stem)}.shard-*"))
    return sorted({(int(match.group(1)), int(match.group(2))) for match in matches if match})


def merge_shards(fleet: Fleet, bundle: Path) -> int:
    """Merge into `fleet` the entities in its shards beside `bundle` (a torchrun fleet stopped before its end);
    how many were new. Shards of another run (one whose bundle has since been replaced) are left out."""
    merged = 0
    for key in _shard_keys(bundle):
        path = shard_path(bundle, *key)
        if path.is_file():
            part = Fleet.load(path)
            merged += fleet.merge(part) if part.run == fleet.run else 0
    return merged


def remove_shards(bundle: Path, rank: int | None = None) -> None:
    """Delete the shards beside `bundle` (only `rank`'s, if given) and the temp files of shard writers that died."""
    for key in _shard_keys(bundle):
        if rank is None or key[0] == rank:
            path = shard_path(bundle, *key)
            remove_stale_temps(path)
            path.unlink(missing_ok=True)


class ShardWriter:
    """A rank's save after each entity: the entities it finished, `size` to a file in the order they finished,
    so that one save rewrites at most `size` of them (a single growing file would cost ever more per entity)."""

    def __init__(self, bundle: Path, rank: int, size: int = SHARD_SIZE) -> None:
        self.bundle, self.rank, self.size = bundle, rank, size
        self.finished: list[str] = []

    def __call__(self, fleet: Fleet) -> None:
        known = set(self.finished)
        self.finished += [name for name in fleet.order if fleet.finished(name) and name not in known]
        part = max(len(self.finished) - 1, 0) // self.size
        piece = fleet.without_entities()
        for name in self.finished[part * self.size : (part + 1) * self.size]:
            if name in fleet.detectors:
                piece.detectors[name], piece.seconds[name] = fleet.detectors[name], fleet.seconds.get(name, 0.0)
            else:
                piece.skipped[name] = fleet.skipped[name]
        piece.save(shard_path(self.bundle, self.rank, part))


def global_normaliser(dataset_name: str, data_dir: str | Path | None) -> Normalizer:
    """One z-score over the TRAIN rows of every entity of the dataset, as one shared model would see them."""
    parts = [load_dataset(dataset_name, data_dir, entity).train for entity in entity_names(dataset_name, data_dir)]
    return Normalizer.fit(np.concatenate(parts))


def entity_problem(data: TimeSeriesDataset, config: DetectorConfig) -> str | None:
    """Why an entity cannot train, before any work is spent on it; None when it can."""
    if len(data.train) < config.win_size:
        return f"TRAIN has {len(data.train)} rows, fewer than the window of {config.win_size}"
    if np.ptp(data.train, axis=0).max() == 0:
        return "TRAIN is constant in every channel"
    return None


def train_entity(
    dataset_name: str, data_dir: str | None, entity: str, config: dict, normalizer: tuple | None
) -> tuple[str, dict | None, str | None, float]:
    """Train one entity's Detector on one thread: (entity, checkpoint or None, why it was skipped, seconds).

    Runs in a worker process, so it takes and returns plain values.
    """
    started = time.perf_counter()
    settings = DetectorConfig.from_dict(config)
    try:
        with one_thread():
            data = load_dataset(dataset_name, data_dir, entity)
            problem = entity_problem(data, settings)
            if problem is not None:
                return entity, None, problem, 0.0
            given = None if normalizer is None else Normalizer(*normalizer)
            detector = Detector(settings, normalizer=given).fit(data, config_checked=True)  # checked by the parent
    except (UserInputError, TrainingFailed) as error:
        return entity, None, str(error), time.perf_counter() - started
    return entity, detector.to_checkpoint(), None, time.perf_counter() - started


class FleetInterrupted(Exception):
    """SIGINT or SIGTERM stopped a fleet; the bundle (under torchrun: with the shards) holds every entity
    finished before it. rank: the torchrun rank that stopped, whose `done` counts its own entities."""

    def __init__(self, signal_number: int, done: int, total: int, rank: int | None = None) -> None:
        self.signal_number, self.done, self.total, self.rank = signal_number, done, total, rank
        super().__init__(signal_number, done, total, rank)

    def __str__(self) -> str:
        name = signal.Signals(self.signal_number).name
        if self.rank is None:
            return f"{name} after {self.done} of {self.total} entities"
        return f"{name} on rank {self.rank} after it finished {self.done} of the {self.total} entities left"


def _results(
    tasks: Iterator[tuple], jobs: int, stop: StopOnSignal
) -> Iterator[tuple[str, dict | None, str | None, float]]:
    """train_entity over the tasks: in this process for jobs == 1, else in `jobs` spawned workers.

    A task is taken from `tasks` only when a worker is free for it. After a signal no new entity
    starts; the ones running finish and are yielded.
    """
    if jobs == 1:
        while stop.signal_number is None and (task := next(tasks, None)) is not None:
            yield train_entity(*task)
        return
    with spawn_pool(jobs) as pool:  # the parent finishes the running entities and saves after a signal
        queued = iter(tasks)
        # At most `jobs` entities in flight, so that after a signal only the running ones finish.
        pending: set[Future] = {pool.submit(train_entity, *task) for task in itertools.islice(queued, jobs)}
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
            if stop.signal_number is None:
                pending |= {pool.submit(train_entity, *task) for task in itertools.islice(queued, len(done))}


def prepare_fleet(
    dataset_name: str,
    data_dir: str | Path | None,
    entities: list[str],
    config: DetectorConfig,
    normalisation: str = "entity",
    resume_from: Fleet | None = None,
) -> Fleet:
    """The fleet to train `entities` into: `resume_from` (its finished entities kept) or a new one, with
    the new entities in its order and, for global normalisation, the shared statistics fitted.

    `config` has passed config.validate() already: the entity workers do not check it again."""
    if normalisation not in NORMALISATIONS:
        raise UserInputError(f"--normalisation must be one of {', '.join(NORMALISATIONS)}")
    fleet = resume_from or Fleet(dataset_name.upper(), config, normalisation)
    # A resumed fleet keeps every entity it holds; the new ones join in the dataset's order.
    known = set(fleet.order)
    fleet.order = [*fleet.order, *(name for name in entities if name not in known)]
    if normalisation == "global" and fleet.shared_normaliser is None:
        fleet.shared_normaliser = global_normaliser(dataset_name, data_dir)
    return fleet


def train_fleet(
    dataset_name: str,
    data_dir: str | Path | None,
    entities: list[str],
    config: DetectorConfig,
    *,
    jobs: int = 1,
    normalisation: str = "entity",
    resume_from: Fleet | None = None,
    save: Callable[[Fleet], None] | None = None,
    progress: bool = True,
) -> Fleet:
    """Train one Detector per entity in this process (and its `jobs` workers); an entity that cannot train
    is recorded as skipped, never fatal.

    resume_from: a fleet whose finished entities are kept. save: called after every entity.
    """
    config.validate()
    check_jobs(jobs)
    fleet = prepare_fleet(dataset_name, data_dir, entities, config, normalisation, resume_from)
    train_unfinished(fleet, dataset_name, data_dir, entities, jobs=jobs, save=save, progress=progress)
    return fleet


def train_unfinished(
    fleet: Fleet,
    dataset_name: str,
    data_dir: str | Path | None,
    entities: list[str],
    *,
    jobs: int = 1,
    save: Callable[[Fleet], None] | None = None,
    progress: bool = True,
) -> None:
    """Train into a prepared `fleet` (prepare_fleet) the entities it has not finished, one after another
    in this process and its `jobs` workers."""
    todo = [name for name in entities if not fleet.finished(name)]
    bar = tqdm(total=len(todo), desc=f"{fleet.dataset} entities", disable=not progress)
    train_claimed(fleet, dataset_name, data_dir, todo, itertools.count().__next__, jobs=jobs, save=save, bar=bar)


def train_claimed(
    fleet: Fleet,
    dataset_name: str,
    data_dir: str | Path | None,
    todo: list[str],
    claim: Callable[[], int],
    *,
    jobs: int = 1,
    save: Callable[[Fleet], None] | None = None,
    bar: tqdm | None = None,
    rank: int | None = None,
) -> None:
    """Train into `fleet` the entities of `todo` that this process claims, each when it has a worker free:
    claim() gives the index in `todo` of the next entity nobody has taken (past the end: none left).

    save(fleet) runs after every entity. After SIGINT/SIGTERM the running entities finish, the fleet is
    saved and FleetInterrupted raised. rank: the torchrun rank, named in that exception.
    """
    shared = fleet.shared_normaliser
    shared = None if shared is None else (shared.mean, shared.std, shared.constant)
    settings, folder = fleet.config.to_dict(), None if data_dir is None else str(data_dir)

    def tasks() -> Iterator[tuple]:
        while (index := claim()) < len(todo):
            yield dataset_name, folder, todo[index], settings, shared

    bar = tqdm(disable=True) if bar is None else bar
    bar.update(0)
    with StopOnSignal() as stop:
        try:
            for entity, checkpoint, problem, seconds in _results(tasks(), jobs, stop):
                _record(fleet, entity, checkpoint, problem, seconds)
                bar.update(1)
                if save is not None:
                    save(fleet)
        except TrainingInterrupted as interrupted:  # jobs == 1: the signal reached the entity's own training
            stop.signal_number = interrupted.signal_number
        bar.close()
        if stop.signal_number is not None:
            if save is not None:
                save(fleet)
            if rank is None:
                done = sum(fleet.finished(name) for name in fleet.order)
                raise FleetInterrupted(stop.signal_number, done, len(fleet.order))
            raise FleetInterrupted(stop.signal_number, len(fleet.detectors) + len(fleet.skipped), len(todo), rank)


def _record(fleet: Fleet, entity: str, checkpoint: dict | None, problem: str | None, seconds: float) -> None:
    if checkpoint is None:
        fleet.skipped[entity] = problem or "could not train"
        return
    fleet.detectors[entity] = Detector.from_checkpoint(checkpoint)
    fleet.seconds[entity] = seconds
    fleet.detectors = {name: fleet.detectors[name] for name in fleet.order if name in fleet.detectors}


def load_detector(
    path: str | Path, entity: str | None = None, dataset: TimeSeriesDataset | None = None, device: str = "cpu"
) -> Detector:
    """The Detector in a checkpoint, or an entity's Detector in a fleet bundle; with `dataset`, first
    check that it was trained on those data."""
    fleet = open_fleet(path)
    if not fleet.single:
        if entity is None:
            raise UserInputError(f"{path} is a fleet bundle (one model per entity); pass --entity NAME to use one of "
                                 "its models (evaluate.py: or --per-entity for every entity; detect.py: or "
                                 "--entity-column COLUMN to route rows of several entities)")  # fmt: skip
        detector = fleet.detector(entity)
    elif entity is not None and dataset is None:
        raise UserInputError(f"{path} holds one model, not a fleet bundle; drop --entity or pass the bundle")
    else:
        (detector,) = fleet.detectors.values()
    if dataset is not None:
        check_checkpoint_matches({"dataset": detector.dataset_}, dataset, Path(path))
    return detector.to(device)
