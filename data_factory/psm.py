"""PSM (Pooled Server Metrics, eBay RANSynCoders): train.csv, test.csv, test_label.csv.

Each csv has a header; the first column is a timestamp (`timestamp_(min)`), the others are
the 25 features (test_label.csv: one `label` column). The train file has missing values:
each is filled with the last value seen before it in its column, and with 0 where no value
came before; the loader prints how many it filled.

Layout: `PSM/{train,test,test_label}.csv` in the data folder, or the three files directly in --data-dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.download import DownloadFailed, RetryPolicy, data_lock, fetch, manual_instructions, resolve_url
from data_factory.local_files import data_folder, find_reference_arrays, load_reference_arrays, reject_entity
from data_factory.names import dataset_label
from runtime.errors import UserInputError

URL_VAR = "PSM_BASE_URL"
DEFAULT_URL = "https://raw.githubusercontent.com/eBay/RANSynCoders/main/data"
FOLDER = "PSM"
FILES = ("train.csv", "test.csv", "test_label.csv")
MAX_FILE_BYTES = 1 << 30  # train.csv, the largest, is tens of MB
N_CHANNELS = 25


def psm_root(folder: Path) -> Path:
    """folder/PSM, or folder itself when --data-dir already holds train.csv and test_label.csv."""
    if not (folder / FOLDER).is_dir() and (folder / "train.csv").is_file() and (folder / "test_label.csv").is_file():
        return folder
    return folder / FOLDER


def read_table(path: Path) -> pd.DataFrame:
    """A PSM csv with its timestamp column as the index; missing values stay NaN."""
    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserInputError(f"cannot read {path}: {error}; expected a header and a timestamp column first") from None
    non_numeric = [str(name) for name, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if frame.empty or non_numeric:
        raise UserInputError(f"{path} must hold numeric columns after the timestamp; non-numeric: {non_numeric[:5]}")
    return frame


def fill_missing(frame: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Carry each column's last value forward, then 0 where no value came before; return values and the count."""
    missing = int(frame.isna().to_numpy().sum())
    return frame.ffill().fillna(0.0).to_numpy(dtype=np.float64), missing


def prepare_psm(
    data_dir: str | Path | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Make sure the three csv files exist (download the missing ones); return their folder."""
    folder = data_folder(data_dir)
    root = psm_root(folder)
    if all((root / file).is_file() for file in FILES):
        return root
    base = resolve_url(URL_VAR, DEFAULT_URL, urls).rstrip("/")
    try:
        with data_lock(folder, "psm"):
            for file in FILES:
                if not (root / file).is_file():
                    fetch(f"{base}/{file}", root / file, max_bytes=MAX_FILE_BYTES, verify=read_table, policy=policy)
    except DownloadFailed as error:
        raise UserInputError(
            manual_instructions(
                "PSM",
                folder,
                str(error),
                urls=[f"{URL_VAR}={base}"],
                commands=[f"mkdir -p {root} && cd {root}", *(f"curl -LO {base}/{file}" for file in FILES)],
                layout=[f"{FOLDER}/{file}" for file in FILES],
            )
        ) from None
    return root


def load_psm(
    data_dir: str | Path | None = None,
    entity: str | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> TimeSeriesDataset:
    reject_entity("PSM", entity)
    folder = data_folder(data_dir)
    reference = find_reference_arrays(folder, "PSM")
    if reference is not None:
        return load_reference_arrays("PSM", reference, [f"feature_{index}" for index in range(N_CHANNELS)])
    root = prepare_psm(folder, urls=urls, policy=policy)
    tables = {file: read_table(root / file) for file in FILES}
    series = {}
    for file in ("train.csv", "test.csv"):
        series[file], filled = fill_missing(tables[file])
        if filled:
            print(
                f"PSM: filled {filled} missing values in {root / file} "
                "(last value carried forward, 0 where none came before)",
                file=sys.stderr,
            )
    labels = tables["test_label.csv"]
    if not labels.index.equals(tables["test.csv"].index):
        raise UserInputError(f"{root / 'test_label.csv'} and {root / 'test.csv'} do not share the same timestamps")
    train = check_series(series["train.csv"], str(root / "train.csv"))
    test = check_series(series["test.csv"], str(root / "test.csv"), n_channels=train.shape[1])
    return TimeSeriesDataset(
        name=dataset_label("PSM"),
        train=train,
        test=test,
        test_labels=check_labels(labels.to_numpy(), str(root / "test_label.csv"), len(test)),
        channel_names=[str(name) for name in tables["train.csv"].columns],
    )
