"""One entry point for every dataset: load_dataset(name, data_dir)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_factory.custom import load_custom
from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.local_files import reject_entity
from data_factory.psm import load_psm
from data_factory.smd import load_smd
from data_factory.synthetic import SynthSpec, generate_synthetic
from data_factory.telemanom import load_msl, load_smap
from runtime.errors import UserInputError


def load_synth(
    data_dir: str | Path | None = None, entity: str | None = None, spec: SynthSpec | None = None
) -> TimeSeriesDataset:
    """The embedded dataset: generated from a seed, nothing to download."""
    reject_entity("SYNTH", entity)
    generated = generate_synthetic(spec or SynthSpec())
    train = check_series(generated["train"], "SYNTH train")
    return TimeSeriesDataset(
        name="SYNTH",
        train=train,
        test=check_series(generated["test"], "SYNTH test", n_channels=train.shape[1]),
        test_labels=check_labels(generated["test_labels"], "SYNTH labels", len(generated["test"])),
        channel_names=[f"sensor_{index:02d}" for index in range(train.shape[1])],
        anomalies=generated["anomalies"],
    )


LOADERS: dict[str, Callable[..., TimeSeriesDataset]] = {
    "SYNTH": load_synth,
    "CUSTOM": load_custom,
    "SMAP": load_smap,
    "MSL": load_msl,
    "SMD": load_smd,
    "PSM": load_psm,
}
DATASET_NAMES = tuple(LOADERS)


def load_dataset(name: str, data_dir: str | Path | None = None, entity: str | None = None) -> TimeSeriesDataset:
    """Load a registered dataset by name (case-insensitive); `entity` selects one channel or machine.

    Loaders take (data_dir, entity) and return a TimeSeriesDataset named dataset_label(name, entity).
    """
    loader = LOADERS.get(name.upper())
    if loader is None:
        raise UserInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return loader(data_dir, entity)
