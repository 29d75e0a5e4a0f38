"""CUSTOM: a user's folder of train_data, test_data and optional test_labels (.npy or .csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.errors import UserInputError


def _find(folder: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".npy", ".csv"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise UserInputError(f"{folder} has no {stem}.npy or {stem}.csv; CUSTOM needs train_data and test_data there")
    return None


def _has_header(path: Path) -> bool:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip().split(",")
    try:
        [float(field) for field in first]
    except ValueError:
        return True
    return False


def read_array(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Load a .npy or .csv file; return the array and the CSV header names, if any."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        frame = pd.read_csv(path, header=0 if _has_header(path) else None)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UserInputError(
            f"cannot read {path}: {error}; save it with numpy.save or as a comma-separated file"
        ) from None
    non_numeric = [str(name) for name, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if non_numeric:
        raise UserInputError(f"{path} has non-numeric columns {non_numeric[:5]}; keep only numeric sensor columns")
    names = [str(name) for name in frame.columns] if _has_header(path) else None
    return frame.to_numpy(), names


def load_custom(data_dir: str | Path | None) -> TimeSeriesDataset:
    if data_dir is None:
        raise UserInputError("--dataset CUSTOM needs --data-dir PATH, a folder with train_data.npy and test_data.npy")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"--data-dir {folder} does not exist; point it at the folder with train_data.npy")
    train_path = _find(folder, "train_data", required=True)
    test_path = _find(folder, "test_data", required=True)
    label_path = _find(folder, "test_labels", required=False)

    train_raw, names = read_array(train_path)
    train = check_series(train_raw, str(train_path))
    test = check_series(read_array(test_path)[0], str(test_path), n_channels=train.shape[1])
    labels = None
    if label_path is not None:
        labels = check_labels(read_array(label_path)[0], str(label_path), len(test))
    return TimeSeriesDataset(
        name="CUSTOM",
        train=train,
        test=test,
        test_labels=labels,
        channel_names=names or [f"ch{index}" for index in range(train.shape[1])],
    )
