"""The entities of a dataset: SMAP / MSL channels, SMD machines, or the rows of a CUSTOM entities.csv.

An operator watches one machine or one spacecraft channel at a time, and the honest benchmarks
(TSB-AD, Sarfraz et al.) score each entity as its own series. `entity_names` lists them in the
dataset's order; each loads with `load_dataset(name, data_dir, entity)`.
"""

from __future__ import annotations

from pathlib import Path

from data_factory.custom import read_entity_rows
from data_factory.local_files import data_folder
from data_factory.smd import MACHINES, smd_root
from data_factory.telemanom import prepare_telemanom, read_index
from runtime.errors import UserInputError

ENTITY_DATASETS = ("SMAP", "MSL", "SMD", "CUSTOM")


def entity_names(name: str, data_dir: str | Path | None = None) -> list[str]:
    """The dataset's entities in order. SMD: the machines present in the data folder (all 28 are
    downloaded when none is)."""
    name = name.upper()
    folder = data_folder(data_dir)
    if name in ("SMAP", "MSL"):
        cache = prepare_telemanom(name, folder)
        index = read_index(cache)
        if index is None:
            raise UserInputError(f"the {name} cache in {cache} changed while loading; run again")
        return [row["chan_id"] for row in index]
    if name == "SMD":
        present = [machine for machine in MACHINES if (smd_root(folder) / "train" / f"{machine}.txt").is_file()]
        return present or list(MACHINES)
    if name == "CUSTOM":
        if data_dir is None:
            raise UserInputError("--dataset CUSTOM needs --data-dir PATH, a folder with train_data and test_data")
        return [row["entity"] for row in read_entity_rows(folder)]
    raise UserInputError(f"{name} has no entities; per-entity training needs one of {', '.join(ENTITY_DATASETS)}")
