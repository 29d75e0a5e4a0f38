"""The dataset record every loader returns, and the checks every array passes before use."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from runtime.errors import UserInputError


@dataclass
class TimeSeriesDataset:
    """A train series (normal data), a test series and, where known, its point labels."""

    name: str
    train: np.ndarray  # (N_train, C) float32
    test: np.ndarray  # (N_test, C) float32
    test_labels: np.ndarray | None  # (N_test,) uint8, 1 = anomalous
    channel_names: list[str]
    anomalies: list[dict] = field(default_factory=list)  # SYNTH, SMD: kind, start, end (inclusive), channels
    # The channels the anomalies are about (SMAP/MSL: the telemetry value, not the command flags);
    # None: all of them. `--score-channels target` scores these.
    target_channels: list[int] | None = None
    # (N_test,) the TEST file's times as text, where its first column holds them (a CUSTOM CSV); incidents carry them.
    test_stamps: np.ndarray | None = None

    @property
    def n_channels(self) -> int:
        return self.train.shape[1]

    def fingerprint(self) -> str:
        """sha256 over shapes and float32 bytes of both splits: identifies the exact data."""
        return fingerprint_of(self.train, self.test)

    def train_fingerprint(self) -> str:
        """sha256 of TRAIN alone: a model learns only from TRAIN, so it fits any TEST beside the same TRAIN."""
        return fingerprint_of(self.train)


def fingerprint_of(*arrays: np.ndarray) -> str:
    """sha256 over the shape and float32 bytes of each array in turn."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32(array: np.ndarray, what: str, first_row: int = 0) -> np.ndarray:
    """`array` as float32; a finite value beyond the float32 range is an error, never a silent infinity.

    first_row: the row number of array[0] in the file, for the message.
    """
    array = np.asarray(array)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        with np.errstate(invalid="ignore"):
            beyond = np.isfinite(array) & (np.abs(array) > FLOAT32_MAX)
        if beyond.any():
            where = np.argwhere(beyond)[0]
            place = f"row {first_row + where[0]}" + (f", column {where[1]}" if len(where) > 1 else "")
            raise UserInputError(
                f"{what} has {int(beyond.sum())} values beyond the float32 range (|x| > 3.4e38), the first "
                f"{float(array[tuple(where)]):.3g} at {place}; rescale that channel (e.g. to other units)"
            )
    return array.astype(np.float32, copy=False)


MISSING_VALUES_FIX = "fill them in the file (or drop those rows, and their labels with them)"


def numeric_array(data: object) -> np.ndarray:
    """np.asarray, but a DataFrame of pandas' nullable or Arrow numbers (Float64, Int64, double[pyarrow]) as
    floats with NA as NaN: np.asarray makes such columns objects, which would be refused as non-numbers."""
    if isinstance(data, pd.DataFrame) and len(data.columns) > 0:
        dtypes = list(data.dtypes)
        extension = any(isinstance(dtype, pd.api.extensions.ExtensionDtype) for dtype in dtypes)
        numeric = all(pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in dtypes)
        if extension and numeric:
            return data.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(data)


def _columns_at_fault(frame: pd.DataFrame | None) -> str:
    """A DataFrame's columns that are not real numbers, with the fix: its dtype (object) names none of them."""
    if frame is None:
        return ""
    real = [pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in frame.dtypes]
    wrong = [f"{column} ({dtype})" for (column, dtype), ok in zip(frame.dtypes.items(), real, strict=True) if not ok]
    return f" from its columns {', '.join(wrong[:5])}; convert them (df.astype(float)) or drop them" if wrong else ""


def check_series(
    array: np.ndarray,
    what: str,
    n_channels: int | None = None,
    channel_names: list[str] | None = None,
    first_row: int = 0,
    missing_values_fix: str = MISSING_VALUES_FIX,
) -> np.ndarray:
    """Return array as float32 (N, C), or raise UserInputError naming what is wrong with it (a column by its
    name where `channel_names` gives one). first_row: the file row of array[0], for the messages."""
    frame = array if isinstance(array, pd.DataFrame) else None
    array = numeric_array(array)
    if array.ndim == 1 and n_channels == 1:
        array = array[:, None]
    if array.ndim == 1:  # one series: the fix depends on how many channels are wanted
        wanted = "a single channel is series.reshape(-1, 1)" if n_channels is None else f"give all {n_channels}"
        raise UserInputError(f"{what} must be a 2-D array (time, channels), got shape {array.shape}; {wanted}")
    if array.ndim != 2:
        raise UserInputError(f"{what} must be a 2-D array (time, channels), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserInputError(f"{what} is empty (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise UserInputError(f"{what} must hold real numbers, got dtype {array.dtype}{_columns_at_fault(frame)}")
    if n_channels is not None and array.shape[1] != n_channels:
        raise UserInputError(
            f"{what} has {array.shape[1]} channels but {n_channels} were expected; every split needs the same columns"
        )
    array = as_float32(array, what, first_row)
    bad = ~np.isfinite(array)
    if bad.any():
        rows, columns = np.nonzero(bad)
        column = channel_names[columns[0]] if channel_names else columns[0]
        raise UserInputError(
            f"{what} has {int(bad.sum())} NaN/Inf values in {len(np.unique(rows))} rows (first at row "
            f"{first_row + rows[0]}, column {column}); {missing_values_fix}"
        )
    return array


def check_labels(labels: np.ndarray, what: str, length: int) -> np.ndarray:
    """Return labels as uint8 (N,), or raise UserInputError if they are not a 0/1 vector of that length."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:  # a single column or row, as CSV tools write it
        labels = labels.reshape(-1)
    if labels.ndim == 2 and labels.shape[0] == length:
        raise UserInputError(f"{what} has {labels.shape[1]} columns; keep one, the label of each test row (0 "
                             "normal, 1 anomaly)")  # fmt: skip
    if labels.ndim != 1 or labels.shape[0] != length:
        raise UserInputError(f"{what} must have shape ({length},) to match the test data, got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise UserInputError(f"{what} must hold only 0 (normal) and 1 (anomaly)")
    return labels.astype(np.uint8)
