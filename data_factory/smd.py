"""SMD (Server Machine Dataset, OmniAnomaly): 28 machines, 38 metrics each, read from the original text files.

Layout, in the data folder or given directly as --data-dir:

    ServerMachineDataset/train/machine-G-I.txt                 comma-separated floats, one row per step
    ServerMachineDataset/test/machine-G-I.txt
    ServerMachineDataset/test_label/machine-G-I.txt            one 0/1 per line
    ServerMachineDataset/interpretation_label/machine-G-I.txt  "start-end:dim,dim,..." per anomaly (optional)

In interpretation_label, dims are 1-based and start-end is a 0-based, end-exclusive range: in
the OmniAnomaly repository, machine-1-3's "392-416" marks exactly test_label lines 392..415
and "1257-1268" lines 1257..1267. Each segment is kept as {"kind": "interpretation", "start",
"end" (inclusive), "channels" (0-based)}, with start/end indexing the (concatenated) test series.

The default dataset is all 28 machines concatenated in machine order (1-1 ... 1-8, 2-1 ... 2-9,
3-1 ... 3-11); --entity machine-1-1 selects one machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.download import DownloadFailed, RetryPolicy, data_lock, fetch, manual_instructions, resolve_url
from data_factory.local_files import data_folder, find_reference_arrays, load_reference_arrays
from data_factory.names import dataset_label
from runtime.errors import UserInputError

URL_VAR = "SMD_BASE_URL"
DEFAULT_URL = "https://raw.githubusercontent.com/NetManAIOps/OmniAnomaly/master/ServerMachineDataset"
FOLDER = "ServerMachineDataset"
MACHINES = tuple(
    f"machine-{group}-{index}" for group, count in ((1, 8), (2, 9), (3, 11)) for index in range(1, count + 1)
)
REQUIRED_SPLITS = ("train", "test", "test_label")
INTERPRETATION = "interpretation_label"
MAX_FILE_BYTES = 256 << 20  # the largest machine file is about 10 MB
N_CHANNELS = 38
_SEGMENT = re.compile(r"^(\d+)-(\d+):(\d+(?:,\d+)*)$")


def smd_root(folder: Path) -> Path:
    """folder/ServerMachineDataset, or folder itself when --data-dir already points at that directory."""
    if not (folder / FOLDER).is_dir() and (folder / "train").is_dir() and (folder / "test").is_dir():
        return folder
    return folder / FOLDER


def read_matrix(path: Path) -> np.ndarray:
    try:
        frame = pd.read_csv(path, header=None, dtype=np.float64)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserInputError(
            f"cannot read {path}: {error}; expected comma-separated numbers, one row per step"
        ) from None
    return frame.to_numpy()


def read_labels(path: Path) -> np.ndarray:
    matrix = read_matrix(path)
    if matrix.shape[1] != 1:
        raise UserInputError(f"{path} must hold one 0/1 label per line, found {matrix.shape[1]} columns")
    return matrix[:, 0]


def read_interpretation(path: Path, length: int | None = None, n_channels: int | None = None) -> list[dict]:
    """Segments of one machine's interpretation_label file, in test-series indices of that machine."""
    segments = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = _SEGMENT.match(line.strip())
        if match is None:
            raise UserInputError(f"{path}:{number}: expected 'start-end:dim,dim,...', got {line.strip()!r}")
        start, stop = int(match[1]), int(match[2])
        dims = [int(dim) for dim in match[3].split(",")]
        if stop <= start or (length is not None and stop > length):
            raise UserInputError(f"{path}:{number}: range {start}-{stop} is empty or beyond the {length} test steps")
        if min(dims) < 1 or (n_channels is not None and max(dims) > n_channels):
            raise UserInputError(f"{path}:{number}: dims must lie in 1..{n_channels} (they are 1-based)")
        segments.append({"kind": "interpretation", "start": start, "end": stop - 1, "channels": [d - 1 for d in dims]})
    return segments


_VERIFY = {
    "train": read_matrix,
    "test": read_matrix,
    "test_label": read_labels,
    INTERPRETATION: read_interpretation,
}


def channel_names(n_channels: int) -> list[str]:
    """dim_01 ... dim_38: the 1-based dims of interpretation_label (channel index 0 is dim_01)."""
    return [f"dim_{index:02d}" for index in range(1, n_channels + 1)]


def _check_entity(entity: str | None) -> list[str]:
    if entity is None:
        return list(MACHINES)
    if entity not in MACHINES:
        raise UserInputError(
            f"unknown SMD machine {entity!r}; choose machine-1-1 ... machine-1-8, 2-1 ... 2-9 or 3-1 ... 3-11"
        )
    return [entity]


def _missing(root: Path, machines: list[str], splits: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(m, split) for m in machines for split in splits if not (root / split / f"{m}.txt").is_file()]


def _present_machines(root: Path) -> str:
    """Where a folder holds only some machines, the ones it can use now: without it, 'SMD is not in FOLDER'
    hides that --entity or --per-entity would train on what is there."""
    present = [machine for machine in MACHINES if not _missing(root, [machine], REQUIRED_SPLITS)]
    if not present:
        return ""
    shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
    return f". The folder holds {len(present)} of the 28 machines ({shown}): use --entity NAME or --per-entity for them"


def prepare_smd(
    data_dir: str | Path | None = None,
    entity: str | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Make sure the machine files exist (download the missing ones); return the ServerMachineDataset folder."""
    folder = data_folder(data_dir)
    root = smd_root(folder)
    machines = _check_entity(entity)
    if not _missing(root, machines, REQUIRED_SPLITS):  # placed by hand: interpretation labels are optional
        return root
    base = resolve_url(URL_VAR, DEFAULT_URL, urls).rstrip("/")
    try:
        with data_lock(folder, "smd"):
            for machine, split in _missing(root, machines, (*REQUIRED_SPLITS, INTERPRETATION)):
                url = f"{base}/{split}/{machine}.txt"
                fetch(
                    url, root / split / f"{machine}.txt", max_bytes=MAX_FILE_BYTES, verify=_VERIFY[split], policy=policy
                )
    except DownloadFailed as error:
        raise UserInputError(
            manual_instructions(
                "SMD (all 28 machines)" if entity is None else f"SMD {entity}",
                folder,
                str(error),
                urls=[f"{URL_VAR}={base}"],
                commands=[
                    "git clone --depth 1 https://github.com/NetManAIOps/OmniAnomaly.git",
                    f"cp -r OmniAnomaly/{FOLDER} {folder}/",
                ],
                layout=[f"{FOLDER}/{{train,test,test_label,interpretation_label}}/machine-G-I.txt (28 machines)"],
            )
            + _present_machines(root)
        ) from None
    return root


def load_smd(
    data_dir: str | Path | None = None,
    entity: str | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> TimeSeriesDataset:
    """All 28 machines concatenated in machine order, or one machine with `entity` (e.g. 'machine-1-1')."""
    folder = data_folder(data_dir)
    if entity is None:
        reference = find_reference_arrays(folder, "SMD")
        if reference is not None:
            return load_reference_arrays("SMD", reference, channel_names(N_CHANNELS))
    root = prepare_smd(folder, entity, urls=urls, policy=policy)
    trains, tests, labels, anomalies = [], [], [], []
    offset = 0
    for machine in _check_entity(entity):
        paths = {split: root / split / f"{machine}.txt" for split in (*REQUIRED_SPLITS, INTERPRETATION)}
        every_machine_alike = trains[0].shape[1] if trains else None
        train = check_series(read_matrix(paths["train"]), str(paths["train"]), n_channels=every_machine_alike)
        test = check_series(read_matrix(paths["test"]), str(paths["test"]), n_channels=train.shape[1])
        labels.append(check_labels(read_labels(paths["test_label"]), str(paths["test_label"]), len(test)))
        if paths[INTERPRETATION].is_file():
            for segment in read_interpretation(paths[INTERPRETATION], len(test), train.shape[1]):
                anomalies.append({**segment, "start": segment["start"] + offset, "end": segment["end"] + offset})
        trains.append(train)
        tests.append(test)
        offset += len(test)
    train = np.concatenate(trains)
    return TimeSeriesDataset(
        name=dataset_label("SMD", entity),
        train=train,
        test=np.concatenate(tests),
        test_labels=np.concatenate(labels),
        channel_names=channel_names(train.shape[1]),
        anomalies=anomalies,
    )
