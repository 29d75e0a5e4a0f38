"""Z-score normalisation fitted on TRAIN, and windows built as views over the normalised series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.errors import UserInputError

# Columns that never move in TRAIN (e.g. SMAP command flags) keep their raw scale instead of
# being divided by zero.
MIN_STD = 1e-6


@dataclass
class Normalizer:
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    constant: np.ndarray | None = None  # (C,) bool: the channels that never moved in TRAIN; None: not recorded

    @classmethod
    def fit(cls, train: np.ndarray) -> Normalizer:
        """Fit on TRAIN only: the test split must never shape the statistics."""
        mean = train.mean(axis=0, dtype=np.float64)
        std = train.std(axis=0, dtype=np.float64)
        constant = std < MIN_STD
        return cls(mean.astype(np.float32), np.where(constant, 1.0, std).astype(np.float32), constant)

    @property
    def constant_in_train(self) -> np.ndarray:
        """(C,) bool: the channels that never moved in TRAIN. A file written before they were recorded marks
        them by their stored std of exactly 1 (which a TRAIN standardised beforehand shares)."""
        return self.constant if self.constant is not None else self.std == 1.0

    def to_record(self) -> dict:
        """The checkpoint's record: mean and std, and the constant channels where they are known."""
        record = {"mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}
        if self.constant is not None:
            record["constant"] = torch.from_numpy(np.asarray(self.constant, dtype=bool).copy())
        return record

    @classmethod
    def from_record(cls, record: dict) -> Normalizer:
        constant = record.get("constant")
        return cls(record["mean"].numpy(), record["std"].numpy(), None if constant is None else constant.numpy())

    def transform(self, series: np.ndarray) -> np.ndarray:
        return ((series - self.mean) / self.std).astype(np.float32, copy=False)


# A series too short to score: the window is fixed when the model is trained, so no scoring flag can lower it.
SCORING_FIX = "retrain with a smaller train.py --win-size, or give a longer series"


def check_long_enough(length: int, win_size: int, what: str, fix: str = "lower --win-size") -> None:
    """what: the series in the user's words (e.g. "TEST of CUSTOM"); fix: how to get a window that fits."""
    if length < win_size:
        raise UserInputError(f"{what} has {length} time steps, fewer than the window of {win_size}; {fix}")


def training_starts(length: int, win_size: int, stride: int = 1) -> np.ndarray:
    """Starts of overlapping training windows, every `stride` steps."""
    check_long_enough(length, win_size, "the series")
    return np.arange(0, length - win_size + 1, stride)


def scoring_starts(length: int, win_size: int) -> np.ndarray:
    """Starts of non-overlapping windows that cover every point once; a last window ends at the tail."""
    check_long_enough(length, win_size, "the series")
    starts = np.arange(0, length - win_size + 1, win_size)
    if starts[-1] + win_size < length:
        starts = np.append(starts, length - win_size)
    return starts


def stitch_window_values(window_values: np.ndarray, length: int, win_size: int) -> np.ndarray:
    """Per-window values (N_windows, L, ...) from scoring_starts -> per-point values (length, ...).

    Each point takes its value from exactly one window: the tail window contributes only the
    points that the regular windows did not reach.
    """
    n_full = length // win_size
    head = window_values[:n_full].reshape(n_full * win_size, *window_values.shape[2:])
    tail_points = length - n_full * win_size
    if tail_points == 0:
        return head
    tail = window_values[-1, win_size - tail_points :]
    return np.concatenate([head, tail])


class WindowDataset(Dataset):
    """Windows of a normalised series at the given start offsets; each item is a view until collated."""

    def __init__(self, series: np.ndarray, starts: np.ndarray, win_size: int) -> None:
        self.series = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
        self.starts = np.asarray(starts)
        self.win_size = win_size

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = int(self.starts[index])
        return self.series[start : start + self.win_size]  # (L, C)
