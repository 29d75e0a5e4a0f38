"""CUSTOM: a user's folder of train_data, test_data and optional test_labels (.npy or .csv).

An optional entities.csv splits the rows into entities (machines, channels, sites), one row each:
`entity,train_start,train_len,test_start,test_len` (0-based row offsets into train_data and
test_data), as SMAP's and MSL's channels.csv do; `--entity NAME` then loads that entity alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.readers import load_npy, missing_file_reason, read_table
from runtime.errors import UserInputError


def _find(folder: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".npy", ".csv"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
        if candidate.is_symlink() or candidate.exists():  # there, but not a readable file: say what it is
            raise UserInputError(f"{candidate} {missing_file_reason(candidate)}; replace it with the {stem} file")
    if required:
        raise UserInputError(f"{folder} has no {stem}.npy or {stem}.csv; CUSTOM needs train_data and test_data there")
    return None


def read_array(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Load a .npy or .csv file; return the array and the CSV header names, if any."""
    if path.suffix == ".csv":
        return read_table(path)  # the one CSV reader, shared with detect.py
    return load_npy(path), None


ENTITIES_FILE = "entities.csv"
ENTITY_COLUMNS = ("entity", "train_start", "train_len", "test_start", "test_len")


def read_entity_rows(folder: Path) -> list[dict]:
    """The rows of folder/entities.csv, checked: known columns, whole non-negative offsets, unique names."""
    path = folder / ENTITIES_FILE
    if not path.is_file():
        raise UserInputError(f"{folder} has no {ENTITIES_FILE}; add one with columns {','.join(ENTITY_COLUMNS)}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            # A space after a comma is easy to type and means nothing: " train_start" is train_start.
            records = [{(key or "").strip(): value for key, value in record.items()}
                       for record in csv.DictReader(handle)]  # fmt: skip
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"cannot read {path}: {error}") from None
    if not records or any(column not in records[0] for column in ENTITY_COLUMNS):
        found = ",".join(records[0]) if records else "no row"
        raise UserInputError(f"{path} needs the columns {','.join(ENTITY_COLUMNS)} and one row per entity; it has "
                             f"{found}")  # fmt: skip
    rows = []
    for number, record in enumerate(records, start=2):
        try:
            row = {"entity": record["entity"].strip(), **{key: int(record[key]) for key in ENTITY_COLUMNS[1:]}}
        except (TypeError, ValueError):
            raise UserInputError(f"{path} line {number}: offsets and lengths must be whole numbers") from None
        if not row["entity"] or min(row[key] for key in ENTITY_COLUMNS[1:]) < 0:
            raise UserInputError(f"{path} line {number}: an entity needs a name and non-negative offsets")
        rows.append(row)
    names = [row["entity"] for row in rows]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserInputError(f"{path} names {', '.join(twice)} twice; give each entity one row")
    return rows


def _entity_rows(folder: Path, entity: str) -> dict:
    rows = read_entity_rows(folder)
    for row in rows:
        if row["entity"] == entity:
            return row
    shown = ", ".join(row["entity"] for row in rows[:8])
    raise UserInputError(f"unknown CUSTOM entity {entity!r}; {folder / ENTITIES_FILE} lists {shown}")


def _slice(array, start: int, length: int, what: str):
    if start + length > len(array) or length == 0:
        raise UserInputError(
            f"{ENTITIES_FILE}: {what} rows {start}..{start + length - 1} are not inside its {len(array)} rows"
        )
    return array[start : start + length]


def load_custom(data_dir: str | Path | None, entity: str | None = None) -> TimeSeriesDataset:
    if data_dir is None:
        raise UserInputError("--dataset CUSTOM needs --data-dir PATH, a folder with train_data.npy and test_data.npy")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise UserInputError(
            f"--data-dir {folder} {'is a file, not a folder' if folder.is_file() else missing_file_reason(folder)}; "
            "point it at the folder with train_data.npy"
        )
    train_path = _find(folder, "train_data", required=True)
    test_path = _find(folder, "test_data", required=True)
    label_path = _find(folder, "test_labels", required=False)

    train_raw, names = read_array(train_path)
    train = check_series(train_raw, str(train_path), channel_names=names)
    test_raw, test_names = read_array(test_path)
    test = check_series(test_raw, str(test_path), n_channels=train.shape[1], channel_names=test_names)
    labels = None
    if label_path is not None:
        labels = check_labels(read_array(label_path)[0], str(label_path), len(test))
    if entity is not None:
        row = _entity_rows(folder, entity)
        train = _slice(train, row["train_start"], row["train_len"], f"{entity} train")
        test = _slice(test, row["test_start"], row["test_len"], f"{entity} test")
        if labels is not None:
            labels = labels[row["test_start"] : row["test_start"] + row["test_len"]]
    return TimeSeriesDataset(
        name="CUSTOM" if entity is None else f"CUSTOM_{entity}",
        train=train,
        test=test,
        test_labels=labels,
        channel_names=names or [f"ch{index}" for index in range(train.shape[1])],
    )
