"""CUSTOM: a user's folder of train_data, test_data and optional test_labels (.npy, .csv or .parquet).

An optional entities.csv splits the rows into entities (machines, channels, sites), one row each:
`entity,train_start,train_len,test_start,test_len` (0-based row offsets into train_data and
test_data), as SMAP's and MSL's channels.csv do; `--entity NAME` then loads that entity alone.
"""

from __future__ import annotations

import csv
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from data_factory.dataset import MISSING_VALUES_FIX, TimeSeriesDataset, check_labels, check_series
from data_factory.readers import (
    StampedTable,
    column_differences,
    load_npy,
    missing_file_reason,
    name_order,
    read_table,
    time_order_warning,
)
from runtime.errors import UserInputError

# A historian's export is often parquet: the one table reader (detect.py's) reads it as it reads a CSV.
SUFFIXES = (".npy", ".csv", ".parquet")


def _find(folder: Path, stem: str, required: bool) -> Path | None:
    found = []
    for suffix in SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            found.append(candidate)
        elif candidate.is_symlink() or candidate.exists():  # there, but not a readable file: say what it is
            raise UserInputError(f"{candidate} {missing_file_reason(candidate)}; replace it with the {stem} file")
    if len(found) > 1:  # an edited CSV beside an older array must not be passed over in silence
        raise UserInputError(f"{folder} has both {found[0].name} and {found[1].name}; keep the one CUSTOM should read")
    if found:
        return found[0]
    if required:
        raise UserInputError(f"{folder} has no {stem}.npy, .csv or .parquet; CUSTOM needs train_data and test_data "
                             "there")  # fmt: skip
    return None


# Names a labels file is easily given; CUSTOM reads test_labels.npy or .csv only.
LABEL_NAME_SLIPS = ("test_label.npy", "test_label.csv", "labels.npy", "labels.csv", "test_labels.txt")


def _refuse_misnamed_labels(folder: Path) -> None:
    slip = next((name for name in LABEL_NAME_SLIPS if (folder / name).is_file()), None)
    if slip is not None:
        raise UserInputError(f"{folder} has {slip}, but CUSTOM reads its labels from test_labels.npy or "
                             "test_labels.csv; rename it (or move it away to go without labels)")  # fmt: skip


def read_array(path: Path) -> StampedTable:
    """Load a .npy, .csv or .parquet file: the array, the header names and its first column's times, where it has
    them."""
    if path.suffix in (".csv", ".parquet"):
        return read_table(path)  # the one CSV reader, shared with detect.py
    return StampedTable(load_npy(path), None, None)


def _check_label_times(label_times: np.ndarray | None, test_times: np.ndarray | None, label_path: Path) -> None:
    """Labels go to TEST by row: where both files name each row's time, a label row at another time (a labels
    file of another period, or sorted otherwise) would grade the wrong points, so it is refused."""
    if label_times is None or test_times is None:
        return
    differ = np.char.strip(label_times.astype(str)) != np.char.strip(test_times.astype(str))
    # The same instants written otherwise: 2026-01-03 02:00 and 2026-01-03T02:00:00, or 1700000000 and 1700000000.0.
    for parse in (
        lambda t: pd.to_datetime(t, errors="coerce", format="mixed"),
        partial(pd.to_numeric, errors="coerce"),
    ):
        if differ.any():
            label_parsed, test_parsed = parse(pd.Series(label_times)), parse(pd.Series(test_times))
            differ &= ~(label_parsed.notna() & (label_parsed == test_parsed)).to_numpy()
    if differ.any():
        row = int(np.argmax(differ))
        raise UserInputError(f"{label_path.name}'s times are not test_data's: row {row} is {label_times[row]} "
                             f"there and {test_times[row]} in test_data; give each test row its label, in the same "
                             "order")  # fmt: skip


ENTITIES_FILE = "entities.csv"
ENTITY_COLUMNS = ("entity", "train_start", "train_len", "test_start", "test_len")
# Where entities.csv gives row offsets, dropping a row would shift every entity after it.
ENTITY_ROWS_FIX = f"fill them in the file (dropping rows would shift the offsets in {ENTITIES_FILE})"


def read_entity_rows(folder: Path) -> list[dict]:
    """The rows of folder/entities.csv, checked: known columns, whole non-negative offsets, unique names."""
    path = folder / ENTITIES_FILE
    if not path.is_file():
        raise UserInputError(f"{folder} has no {ENTITIES_FILE}; add one with columns {','.join(ENTITY_COLUMNS)}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
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
        separator = next((char for char in "/\\" if char in row["entity"]), None)
        if separator:  # --entity names its files CUSTOM_{entity}_*: a separator would put them in another folder
            raise UserInputError(f"{path} line {number}: entity name {row['entity']!r} holds {separator!r}, but it "
                                 "names files (CUSTOM_{entity}_checkpoint.pth); use another character")  # fmt: skip
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


def _entity_series(
    array: np.ndarray, path: Path, row: dict, split: str, names: list[str] | None, n_channels: int | None = None
) -> np.ndarray:
    """One entity's rows of a split, checked on their own: a gap in another entity's rows does not stop this one."""
    start, length = row[f"{split}_start"], row[f"{split}_len"]
    if np.ndim(array) == 0:
        return check_series(array, str(path))  # refused there: not a (time, channels) array
    if length == 0 or start + length > len(array):
        raise UserInputError(f"{ENTITIES_FILE}: {row['entity']} {split} rows {start}..{start + length - 1} are not "
                             f"inside the {len(array)} rows of {path.name}"
                             + (" (its length is 0)" if length == 0 else ""))  # fmt: skip
    return check_series(array[start : start + length], f"{path} (entity {row['entity']})", n_channels, names,
                        first_row=start, missing_values_fix=ENTITY_ROWS_FIX)  # fmt: skip


def _in_train_order(test: np.ndarray, test_names: list[str], names: list[str], test_path: Path, train_path: Path
                    ) -> np.ndarray:  # fmt: skip
    """TEST's columns put in TRAIN's order by their header names, as detect.py matches its input's."""
    order = name_order(test_names, names)
    if order is None:
        raise UserInputError(f"{test_path.name}'s columns are not {train_path.name}'s "
                             f"({column_differences(test_names, names)}); give both files the same header, or none "
                             "to match the columns by position")  # fmt: skip
    return np.asarray(test)[:, order]


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
    if label_path is None:
        _refuse_misnamed_labels(folder)

    train_raw, names, train_stamps = read_array(train_path)
    test_raw, test_names, test_stamps = read_array(test_path)
    if names and test_names and test_names != names:
        test_raw = _in_train_order(test_raw, test_names, names, test_path, train_path)
    has_entities = (folder / ENTITIES_FILE).is_file()
    if entity is None:
        fix = ENTITY_ROWS_FIX if has_entities else MISSING_VALUES_FIX
        train = check_series(train_raw, str(train_path), channel_names=names, missing_values_fix=fix)
        test = check_series(test_raw, str(test_path), n_channels=train.shape[1], channel_names=names,
                            missing_values_fix=fix)  # fmt: skip
    else:
        row = _entity_rows(folder, entity)
        train = _entity_series(train_raw, train_path, row, "train", names)
        test = _entity_series(test_raw, test_path, row, "test", names, n_channels=train.shape[1])
    # The labels match the whole test file, whose rows an entity's slice takes (TEST passed its checks above).
    labels = None
    if label_path is not None:
        label_raw, _, label_times = read_array(label_path)
        labels = check_labels(label_raw, str(label_path), len(test_raw))
        _check_label_times(label_times, test_stamps, label_path)
    if entity is not None:
        rows = slice(row["test_start"], row["test_start"] + row["test_len"])
        labels = None if labels is None else labels[rows]
        test_stamps = None if test_stamps is None else test_stamps[rows]
        train_stamps = None if train_stamps is None else train_stamps[row["train_start"] : row["train_start"] +
                                                                      row["train_len"]]  # fmt: skip
    if entity is not None or not has_entities:  # each entity's times restart by design
        for stamps, path in ((train_stamps, train_path), (test_stamps, test_path)):
            warning = time_order_warning(stamps, path.name if entity is None else f"{path.name} (entity {entity})")
            if warning:
                print(warning, file=sys.stderr)
    return TimeSeriesDataset(
        name="CUSTOM" if entity is None else f"CUSTOM_{entity}",
        train=train,
        test=test,
        test_labels=labels,
        channel_names=names or [f"ch{index}" for index in range(train.shape[1])],
        test_stamps=test_stamps,
    )
