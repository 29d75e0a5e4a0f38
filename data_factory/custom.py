"""CUSTOM: a user's folder of train_data, test_data and optional test_labels (.npy or .csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.errors import UserInputError
from data_factory.readers import read_table


def _find(folder: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".npy", ".csv"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise UserInputError(f"{folder} has no {stem}.npy or {stem}.csv; CUSTOM needs train_data and test_data there")
    return None


def read_array(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Load a .npy or .csv file; return the array and the CSV header names, if any."""
    if path.suffix == ".csv":
        return read_table(path)  # the one CSV reader, shared with detect.py
    try:
        return np.load(path, allow_pickle=False), None
    except (OSError, ValueError) as error:
        raise UserInputError(
            f"cannot read {path}: {error}; save it with numpy.save or as a comma-separated file"
        ) from None


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
