"""SMAP and MSL (NASA telemanom): download, verify, build the paper's concatenated arrays, cache them.

The build rule (OmniAnomaly's, which the paper's arrays follow): take the rows of
labeled_anomalies.csv for the spacecraft, drop P-2 (listed twice), sort the channel ids as
strings, concatenate each channel's train and test arrays in that order, label every
[start, end] of anomaly_sequences with both ends inclusive, cast to float32.

Data folder layout (default ~/.cache/cvlization/anomaly_data):

    labeled_anomalies.csv                 downloaded, or placed by hand (also read from data/)
    data/{train,test}/<chan>.npy          only if placed by hand; a download is extracted to a
                                          temp folder and removed once the arrays are built
    SMAP/ MSL/  train.npy test.npy test_label.npy channels.csv   the built cache

channels.csv (chan_id, offsets and lengths) is written last and marks a complete cache.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_factory.archive import UnreadableArchive, extract_verified, member_index, open_archive
from data_factory.dataset import TimeSeriesDataset, check_labels, check_series
from data_factory.download import (
    DownloadFailed,
    IntegrityError,
    RetryPolicy,
    data_lock,
    downloaded,
    fetch,
    manual_instructions,
    partial_name,
    resolve_url,
    sha256_file,
)
from data_factory.local_files import data_folder, find_reference_arrays, load_reference_arrays
from data_factory.names import dataset_label
from data_factory.readers import missing_file_reason, npy_problem
from runtime.atomic import atomic_path
from runtime.errors import UserInputError

SPACECRAFT = ("SMAP", "MSL")
DATA_URL_VAR = "TELEMANOM_DATA_URL"
LABELS_URL_VAR = "TELEMANOM_LABELS_URL"
DEFAULT_DATA_URL = "https://s3-us-west-2.amazonaws.com/telemanom/data.zip"
DEFAULT_LABELS_URL = "https://raw.githubusercontent.com/khundman/telemanom/master/labeled_anomalies.csv"
LABELS_FILE = "labeled_anomalies.csv"
DROPPED_CHANNEL = "P-2"  # two SMAP rows with different anomaly sequences
MAX_ZIP_BYTES = 1 << 30  # the 164 .npy members hold 173 MB uncompressed; data.zip is smaller than that
MAX_LABELS_BYTES = 1 << 20  # the csv is 4 KB
INDEX_FILE = "channels.csv"
INDEX_COLUMNS = ("chan_id", "train_start", "train_len", "test_start", "test_len", "test_anomaly_points")
ARRAY_FILES = ("train.npy", "test.npy", "test_label.npy")
STAGING_PREFIX = ".telemanom-staging-"
MANIFEST_PATH = Path(__file__).with_name("telemanom_manifest.json")


@dataclass(frozen=True)
class ChannelRow:
    """One row of labeled_anomalies.csv."""

    chan_id: str
    spacecraft: str
    sequences: tuple[tuple[int, int], ...]  # inclusive [start, end] pairs
    num_values: int  # the length of the channel's test series


@functools.cache
def manifest() -> dict[str, dict]:
    """sha256 and size of every file of the telemanom release, keyed like 'data/train/A-1.npy'."""
    return json.loads(MANIFEST_PATH.read_text())


def read_rows(path: Path) -> list[ChannelRow]:
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            pairs = json.loads(record["anomaly_sequences"])  # "[[2149, 2349], [4536, 4844]]" is valid JSON
            rows.append(
                ChannelRow(
                    chan_id=record["chan_id"],
                    spacecraft=record["spacecraft"],
                    sequences=tuple((int(start), int(end)) for start, end in pairs),
                    num_values=int(record["num_values"]),
                )
            )
    return rows


def channel_rows(rows: list[ChannelRow], name: str) -> list[ChannelRow]:
    """The channels of one spacecraft in build order: P-2 dropped, ids sorted as strings (D-11 before D-2)."""
    chosen = [row for row in rows if row.spacecraft == name and row.chan_id != DROPPED_CHANNEL]
    return sorted(chosen, key=lambda row: row.chan_id)


def members(rows: list[ChannelRow], name: str) -> list[str]:
    """The archive members ('train/A-1.npy', ...) that one spacecraft's arrays are built from."""
    return [f"{split}/{row.chan_id}.npy" for row in channel_rows(rows, name) for split in ("train", "test")]


def build_arrays(rows: list[ChannelRow], name: str, raw: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Concatenate the channels under `raw` (raw/train/<chan>.npy, raw/test/<chan>.npy) by the rule above."""
    trains, tests, labels, index = [], [], [], []
    train_start = test_start = 0
    for row in channel_rows(rows, name):
        train = np.load(raw / "train" / f"{row.chan_id}.npy", allow_pickle=False)
        test = np.load(raw / "test" / f"{row.chan_id}.npy", allow_pickle=False)
        if len(test) != row.num_values:
            raise IntegrityError(f"{row.chan_id}: test has {len(test)} rows but {LABELS_FILE} says {row.num_values}")
        label = np.zeros(row.num_values, dtype=np.uint8)
        for start, end in row.sequences:
            label[start : end + 1] = 1  # both ends inclusive
        trains.append(train)
        tests.append(test)
        labels.append(label)
        index.append(
            {
                "chan_id": row.chan_id,
                "train_start": train_start,
                "train_len": len(train),
                "test_start": test_start,
                "test_len": len(test),
                "test_anomaly_points": int(label.sum()),
            }
        )
        train_start += len(train)
        test_start += len(test)
    arrays = {
        "train.npy": np.concatenate(trains).astype(np.float32),
        "test.npy": np.concatenate(tests).astype(np.float32),
        "test_label.npy": np.concatenate(labels),
    }
    return arrays, index


def write_cache(folder: Path, arrays: dict[str, np.ndarray], index: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_FILE).unlink(missing_ok=True)  # the index marks a complete cache: drop it before rewriting
    for file in ARRAY_FILES:
        with atomic_path(folder / file) as temp, open(temp, "wb") as handle:
            np.save(handle, arrays[file])  # a handle: np.save would append .npy to the temp name
    with atomic_path(folder / INDEX_FILE) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(index)


def read_index(folder: Path) -> list[dict] | None:
    """The channel index of a complete cache, or None when there is no complete cache (no index file).

    An index beside arrays that are missing, unreadable, truncated or of other shapes than it
    promises is a damaged cache: a UserInputError names the bad file (downloading again would hide it).
    """
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        return None

    def damaged(path: Path, reason: str) -> UserInputError:
        return UserInputError(
            f"the {folder.name} cache file {path} {reason}; delete the folder {folder} to rebuild it from the download"
        )

    try:
        with open(index_path, newline="") as handle:
            index = [
                {key: value if key == "chan_id" else int(value) for key, value in record.items()}
                for record in csv.DictReader(handle)
            ]
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        raise damaged(index_path, "cannot be read as the channel index") from None
    if not index or any(set(row) != set(INDEX_COLUMNS) for row in index):
        raise damaged(index_path, "is not a channel index")
    shapes = []
    for file in ARRAY_FILES:
        path = folder / file
        if not path.is_file():
            raise damaged(path, missing_file_reason(path))
        problem = npy_problem(path)
        try:
            if problem is None:
                shapes.append(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except (OSError, ValueError, EOFError):
            problem = "is truncated or not a .npy array"
        if problem is not None:
            raise damaged(path, problem)
    n_train = sum(row["train_len"] for row in index)
    n_test = sum(row["test_len"] for row in index)
    for file, shape, rows in zip(ARRAY_FILES, shapes, (n_train, n_test, n_test), strict=True):
        if shape[:1] != (rows,) or (file == "test_label.npy" and len(shape) != 1):
            raise damaged(folder / file, f"has shape {shape}, but {INDEX_FILE} promises {rows} rows")
    return index


def _labels_file(folder: Path, url: str, policy: RetryPolicy | None) -> Path:
    """labeled_anomalies.csv placed by hand (verified) or downloaded (verified before it is kept)."""
    expected = manifest()[LABELS_FILE]["sha256"]
    for candidate in (folder / LABELS_FILE, folder / "data" / LABELS_FILE):
        if candidate.is_file():
            if sha256_file(candidate) != expected:
                raise IntegrityError(
                    f"{candidate} is not the telemanom {LABELS_FILE} (sha256 differs from the manifest); "
                    "replace it with the original, or delete it to download it"
                )
            return candidate
    return fetch(url, folder / LABELS_FILE, max_bytes=MAX_LABELS_BYTES, sha256=expected, policy=policy)


def _verify_placed(raw: Path, needed: list[str]) -> None:
    """Check files a user placed under data/ against the manifest; a mismatch names the file and is left alone."""
    for member in needed:
        expected = manifest()[f"data/{member}"]["sha256"]
        if sha256_file(raw / member) != expected:
            raise IntegrityError(
                f"{raw / member} does not match the telemanom release (sha256 differs from the manifest); "
                f"replace it with the copy from data.zip, or delete {raw} to download everything"
            )


def _extract(archive_path: Path, url: str, needed: list[str], staging: Path) -> None:
    """Extract the needed members of the downloaded zip into staging/{train,test}, each verified."""
    with open_archive(archive_path, f"data.zip from {url}") as archive:
        index = member_index(archive)
        for member in needed:
            info = index.get(member)
            if info is None:
                raise IntegrityError(f"data.zip from {url} has no data/{member}; point {DATA_URL_VAR} at the original")
            entry = manifest()[f"data/{member}"]
            target = staging / member
            target.parent.mkdir(parents=True, exist_ok=True)
            extract_verified(archive, info, target, entry["sha256"], entry["bytes"])


def _build(folder: Path, rows: list[ChannelRow], names: list[str], raw: Path) -> None:
    for name in names:
        started = time.perf_counter()
        arrays, index = build_arrays(rows, name, raw)
        write_cache(folder / name, arrays, index)
        print(f"{name}: built {len(index)} channels in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _remove_leftovers(folder: Path) -> None:
    """Temp files of a run that was killed (the lock is held, so no live run owns them)."""
    for pattern in (partial_name("data.zip"), partial_name(LABELS_FILE)):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
    for path in folder.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def _prepare_locked(folder: Path, name: str, urls: dict[str, str], policy: RetryPolicy | None) -> None:
    _remove_leftovers(folder)
    if read_index(folder / name) is not None:  # another process built it while we waited
        return
    rows = read_rows(_labels_file(folder, urls[LABELS_URL_VAR], policy))
    missing = [n for n in SPACECRAFT if read_index(folder / n) is None]
    placed = folder / "data"
    by_hand = [n for n in missing if all((placed / member).is_file() for member in members(rows, n))]
    if name in by_hand:
        needed = [member for n in by_hand for member in members(rows, n)]
        _verify_placed(placed, needed)
        _build(folder, rows, by_hand, placed)
        return
    # One zip serves both spacecraft: build every missing cache from it, then drop the raw files.
    needed = [member for n in missing for member in members(rows, n)]
    data_url = urls[DATA_URL_VAR]
    with downloaded(data_url, folder, "data.zip", max_bytes=MAX_ZIP_BYTES, policy=policy) as archive_path:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            _extract(archive_path, data_url, needed, staging)
            _build(folder, rows, missing, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _instructions(folder: Path, reason: str, urls: dict[str, str]) -> str:
    return manual_instructions(
        "SMAP/MSL (telemanom)",
        folder,
        reason,
        urls=[f"{DATA_URL_VAR}={urls[DATA_URL_VAR]}", f"{LABELS_URL_VAR}={urls[LABELS_URL_VAR]}"],
        commands=[
            f"curl -LO {urls[DATA_URL_VAR]} && unzip -q data.zip && rm data.zip",
            f"curl -LO {urls[LABELS_URL_VAR]}",
        ],
        layout=[
            f"{LABELS_FILE}",
            "data/train/<chan>.npy and data/test/<chan>.npy (82 channels each, e.g. data/train/A-1.npy)",
            "or the reference code's arrays: SMAP_train.npy, SMAP_test.npy, SMAP_test_label.npy (same for MSL)",
        ],
    )


def telemanom_urls(overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """The data.zip and labels URLs: flags (overrides), then the environment variables, then the defaults."""
    return {
        DATA_URL_VAR: resolve_url(DATA_URL_VAR, DEFAULT_DATA_URL, overrides),
        LABELS_URL_VAR: resolve_url(LABELS_URL_VAR, DEFAULT_LABELS_URL, overrides),
    }


def prepare_telemanom(
    name: str,
    data_dir: str | Path | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Make sure the built cache of SMAP or MSL exists (download and build if needed); return its folder."""
    folder = data_folder(data_dir)
    cache = folder / name
    if read_index(cache) is not None:
        return cache
    resolved = telemanom_urls(urls)
    try:
        with data_lock(folder, "telemanom"):
            _prepare_locked(folder, name, resolved, policy)
    except (DownloadFailed, UnreadableArchive) as error:
        raise UserInputError(_instructions(folder, str(error), resolved)) from None
    return cache


# Column 0 is the telemetry value the labels describe; the others are one-hot command flags.
TELEMETRY_COLUMN = 0


def channel_names(n_channels: int) -> list[str]:
    """Column 0 is the channel's telemetry value; the others are one-hot command flags."""
    return ["telemetry", *(f"command_{index:02d}" for index in range(1, n_channels))]


def _entity_row(index: list[dict], name: str, entity: str, cache: Path) -> dict:
    for row in index:
        if row["chan_id"] == entity:
            return row
    if entity == DROPPED_CHANNEL:
        raise UserInputError(
            f"{entity} is left out of {name}: {LABELS_FILE} lists it twice with different anomalies; choose another"
        )
    for other in SPACECRAFT:
        if other != name and any(row["chan_id"] == entity for row in read_index(cache.parent / other) or []):
            raise UserInputError(f"{entity} is an {other} channel; use --dataset {other} --entity {entity}")
    ids = [row["chan_id"] for row in index]
    raise UserInputError(
        f"unknown {name} channel {entity!r}; choose one of {', '.join(ids[:8])}, ... "
        f"({len(ids)} channels, listed in {cache / INDEX_FILE})"
    )


def load_telemanom(
    name: str,
    data_dir: str | Path | None = None,
    entity: str | None = None,
    *,
    urls: dict[str, str | None] | None = None,
    policy: RetryPolicy | None = None,
) -> TimeSeriesDataset:
    """SMAP or MSL: the concatenated arrays, or one channel with `entity` (e.g. 'A-1')."""
    folder = data_folder(data_dir)
    if entity is None:
        reference = find_reference_arrays(folder, name)
        if reference is not None:
            dataset = load_reference_arrays(name, reference, channel_names(25 if name == "SMAP" else 55))
            return dataclasses.replace(dataset, target_channels=[TELEMETRY_COLUMN])
    cache = prepare_telemanom(name, folder, urls=urls, policy=policy)
    index = read_index(cache)
    if index is None:
        raise UserInputError(f"the {name} cache in {cache} changed while loading; run again")
    train, test, labels = (np.load(cache / file, allow_pickle=False) for file in ARRAY_FILES)
    label = dataset_label(name, entity)
    if entity is not None:
        row = _entity_row(index, name, entity, cache)
        train = train[row["train_start"] : row["train_start"] + row["train_len"]]
        test_rows = slice(row["test_start"], row["test_start"] + row["test_len"])
        test, labels = test[test_rows], labels[test_rows]
    train = check_series(train, f"{label} train ({cache / 'train.npy'})")
    test = check_series(test, f"{label} test ({cache / 'test.npy'})", n_channels=train.shape[1])
    return TimeSeriesDataset(
        name=label,
        train=train,
        test=test,
        test_labels=check_labels(labels, f"{label} labels ({cache / 'test_label.npy'})", len(test)),
        channel_names=channel_names(train.shape[1]),
        target_channels=[TELEMETRY_COLUMN],
    )


def load_smap(data_dir: str | Path | None = None, entity: str | None = None, **options) -> TimeSeriesDataset:
    return load_telemanom("SMAP", data_dir, entity, **options)


def load_msl(data_dir: str | Path | None = None, entity: str | None = None, **options) -> TimeSeriesDataset:
    return load_telemanom("MSL", data_dir, entity, **options)
