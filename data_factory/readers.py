"""Read tables of sensor values: .csv (or CSV on stdin), .npy and .parquet, in chunks of rows.

The one reader of user tables: detect.py streams through it, and the CUSTOM loader reads whole
files with `read_table`. A header row is recognised by a non-numeric field; a timestamp column,
when named and present, is kept apart from the sensor values.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, TextIO

import numpy as np
import pandas as pd

from data_factory.dataset import as_float32
from runtime.errors import UserInputError


class _Prepended:
    """A text stream with its first line put back: lets the CSV reader peek at stdin's header."""

    def __init__(self, head: str, stream: TextIO) -> None:
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> str:
        if not self.head:
            return self.stream.read(size)
        if size is None or size < 0:
            text, self.head = self.head + self.stream.read(), ""
            return text
        text, self.head = self.head[:size], self.head[size:]
        return text

    def __iter__(self) -> Iterator[str]:  # pandas takes only objects that look like files
        if self.head:
            head, self.head = self.head, ""
            yield head
        yield from self.stream


@dataclass
class Chunk:
    values: np.ndarray  # (n, C) float32 sensor values in the input's column order
    stamps: np.ndarray | None  # (n,) the timestamp column, as text, when the input has one
    entities: np.ndarray | None = None  # (n,) the entity column, as text, when one is asked for


@dataclass
class InputTable:
    name: str  # for messages
    columns: list[str] | None  # sensor column names, when the input names them
    stamp_column: str | None
    chunks: Iterator[Chunk]
    handle: IO | None = None  # the file the chunks read: closed when they end, or by close() when they never run

    def close(self) -> None:
        """Release the file, also where a caller refuses the table before reading it to the end."""
        self.chunks.close()
        if self.handle is not None:
            self.handle.close()


def is_number(text: str) -> bool:
    """Whether a CSV field reads as a number (a header row holds at least one that does not)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def text_column_hint(column: str, stamp: str | None, entity: str | None, custom: bool) -> str:
    """What to do with a text column, in the words of the tool that read it: a CUSTOM folder (train.py and
    evaluate.py have no column flags) or detect.py, whose flags are named only where not already given."""
    if custom:
        return (
            f"CUSTOM reads times from a first column named {', '.join(TIME_COLUMN_NAMES)} and entity names from "
            f"entities.csv (sort the rows by entity, drop the {column} column and give each entity's rows there: "
            "docs/datasets.md); code any other text, such as a status, as numbers"
        )
    ways = [f"detect.py --timestamp-column {column} (times)"] if stamp is None else []
    ways += [f"with a fleet bundle, --entity-column {column} (entity names)"] if entity is None else []
    named = f", or name what it holds: {' or, '.join(ways)}" if ways else ""
    return f"keep only numeric sensor columns (code text such as a status as numbers, as in training){named}"


def _frame_chunk(
    frame: pd.DataFrame,
    stamp_column: str | None,
    name: str,
    first_row: int,
    entity_column: str | None = None,
    custom: bool = False,
) -> Chunk:
    stamps = frame.pop(stamp_column).astype(str).to_numpy() if stamp_column else None
    entities = frame.pop(entity_column).astype(str).to_numpy() if entity_column else None
    if frame.empty:  # a header without rows: pandas types its columns as text
        return Chunk(np.empty((0, frame.shape[1]), dtype=np.float32), stamps, entities)
    non_numeric = [c for c, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if non_numeric:
        column = frame[non_numeric[0]]
        bad = (pd.to_numeric(column, errors="coerce").isna() & column.notna()).to_numpy()
        where = f" (first: {column.iloc[np.argmax(bad)]!r} in row {first_row + np.argmax(bad)})" if bad.any() else ""
        # A text column holds times or, in a fleet's input, entity names: naming it as times would score every
        # entity's rows as one series with one model, so both flags are named (where neither is given yet).
        hint = text_column_hint(str(non_numeric[0]), stamp_column, entity_column, custom)
        raise UserInputError(f"{name} has non-numeric columns {[str(c) for c in non_numeric[:5]]}{where}; {hint}")
    return Chunk(as_float32(frame.to_numpy(dtype=np.float64), name, first_row), stamps, entities)


# read_table's timestamp column: the first column, where its name says it holds times (a CUSTOM file
# exported from a historian or a spreadsheet starts with one); its values are not sensor readings.
FIRST_TIME_COLUMN = "<the first column, when named as times>"
TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime")
# detect.py's --timestamp-column default: that column where the input has it, else a first column named as times,
# so that a file CUSTOM reads with its times (a first column "Time") is read the same way by detect.py.
DEFAULT_TIME_COLUMN = "timestamp"


def _stamp_column(names: list[str] | None, stamp_column: str | None) -> str | None:
    """The column kept apart as timestamps: `stamp_column` where the input has it (FIRST_TIME_COLUMN, and
    DEFAULT_TIME_COLUMN where the input has none of that name: the first column, when it is named timestamp,
    time, date or datetime, any case, or timestamp_...)."""
    if not names:
        return None
    if stamp_column in names and stamp_column != FIRST_TIME_COLUMN:
        return stamp_column
    if stamp_column in (FIRST_TIME_COLUMN, DEFAULT_TIME_COLUMN):
        first = names[0].strip().lower()
        return names[0] if first in TIME_COLUMN_NAMES or first.startswith("timestamp") else None
    return None


def check_separator(fields: list[str], name: str) -> None:
    """Refuse a first line split by ';' or tabs, not commas (a spreadsheet saved with European settings):
    read with commas, its columns merge into one and its decimal commas split the numbers."""
    line = ",".join(fields)
    for separator in (";", "\t"):
        parts = line.split(separator)
        decimal_commas = all(is_number(part.replace(",", ".")) for part in parts)  # 1,5;10,25: numbers, not a header
        if len(parts) > 1 and (len(parts) >= len(fields) or decimal_commas):
            raise UserInputError(f"{name} separates its fields with {separator!r}, not commas; save it as "
                                 "comma-separated CSV with '.' as the decimal point")  # fmt: skip


def check_header_names(header: list[str], name: str) -> None:
    """Refuse a header field left empty: pandas' to_csv writes its row index so (read as a sensor, a row
    counter would be scored), and a comma at the end of every line adds an empty column."""
    if "" in header:
        raise UserInputError(f"{name}'s header leaves column {header.index('')} without a name (a row index written "
                             "by pandas' to_csv without index=False, or a comma at the end of each line); remove that "
                             "column or name it")  # fmt: skip


def _check_sensor_columns(columns: list[str] | None, stamp: str | None, name: str) -> None:
    """Refuse a table whose header names only its time column: no sensor is left to score."""
    if columns == [] and stamp:
        raise UserInputError(f"{name} has no column besides its time column {stamp!r}; add the sensor columns")


def _csv_table(
    handle: TextIO, name: str, chunk_rows: int, stamp_column: str | None, owned: bool, entity_column: str | None
) -> InputTable:
    try:
        first = handle.readline().removeprefix("\ufeff")  # the byte-order mark of a spreadsheet's "CSV UTF-8"
    except UnicodeDecodeError:
        raise UserInputError(f"{name} is not a UTF-8 text CSV file") from None
    fields = next(csv.reader([first]), [])
    stripped = [field.strip() for field in fields]
    check_separator(stripped, name)
    header = stripped if not all(is_number(f) for f in fields) else None
    if header:
        check_header_names(header, name)
    stamp = _stamp_column(header, stamp_column)
    entity = _entity_column(header, entity_column, name)
    columns = [c for c in header if c not in (stamp, entity)] if header else None
    _check_sensor_columns(columns, stamp, name)

    def chunks() -> Iterator[Chunk]:
        stream = _Prepended("" if header else first, handle)
        text = {column: str for column in (stamp, entity) if column}
        options = {"header": None, "chunksize": chunk_rows, "names": header, "dtype": text or None}
        row = 0
        try:
            for frame in pd.read_csv(stream, **options):
                yield _frame_chunk(frame, stamp, name, row, entity, stamp_column == FIRST_TIME_COLUMN)
                row += len(frame)
        except pd.errors.EmptyDataError:
            return
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise UserInputError(f"cannot read {name} as CSV: {reason}") from None
        finally:
            if owned:
                handle.close()

    return InputTable(name, columns, stamp, chunks(), handle if owned else None)


def missing_file_reason(path: Path) -> str:
    """Why `path` is not a readable file, as the end of a sentence: 'does not exist', 'is a symbolic link loop', ..."""
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (to {os.readlink(path)})"
        return "does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back at itself)"
        return f"cannot be read ({error.strerror})"
    if path.is_dir():
        return "is a folder, not a file"
    return "is not a regular file"


NPY_MAGIC = b"\x93NUMPY"


def npy_problem(path: Path) -> str | None:
    """Why `path` cannot be a .npy array file, judged from its first bytes; None when it may be one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if not head:
        return "is empty (0 bytes)"
    if head != NPY_MAGIC:
        return "is not a .npy file (it does not start with the .npy header); save it with numpy.save"
    return None


def load_npy(path: Path) -> np.ndarray:
    """A whole .npy array (pickled objects refused), or a UserInputError naming what is wrong with the file."""
    problem = npy_problem(path)
    if problem is not None:
        raise UserInputError(f"{path} {problem}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise UserInputError(f"{path} holds pickled Python objects, which are refused; save numbers") from None
        raise UserInputError(f"cannot read {path} as .npy: {str(error).splitlines()[0]}") from None
    except EOFError:
        raise UserInputError(f"{path} is truncated: it ends inside its .npy header; save it again") from None
    except OSError as error:
        raise UserInputError(f"cannot read {path}: {error.strerror or error}; save it again") from None


def _npy_table(path: Path, chunk_rows: int) -> InputTable:
    """Reads rows straight from the file (no memory map, whose touched pages would all stay resident)."""
    problem = npy_problem(path)
    if problem is not None:
        raise UserInputError(f"{path} {problem}")
    handle = open(path, "rb")  # closed by the chunk generator below
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
    except (ValueError, EOFError) as error:
        handle.close()
        reason = str(error).splitlines()[0] if str(error) else "its header is cut short"
        raise UserInputError(f"cannot read {path} as .npy: {reason}") from None
    if len(shape) not in (1, 2) or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        handle.close()
        raise UserInputError(f"{path} must hold a real (time, channels) array, got shape {shape} of {dtype}")
    rows, width = shape[0], shape[1] if len(shape) == 2 else 1
    offset = handle.tell()
    if path.stat().st_size < offset + rows * width * dtype.itemsize:
        handle.close()
        raise UserInputError(f"{path} is truncated: its header promises {rows} x {width} values; save it again")

    def chunks() -> Iterator[Chunk]:
        with handle:
            for start in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - start)
                if fortran_order and width > 1:  # column-major: each column's rows are contiguous
                    block = np.empty((n, width), dtype=dtype)
                    for column in range(width):
                        handle.seek(offset + (column * rows + start) * dtype.itemsize)
                        block[:, column] = np.fromfile(handle, dtype=dtype, count=n)
                else:
                    handle.seek(offset + start * width * dtype.itemsize)
                    block = np.fromfile(handle, dtype=dtype, count=n * width).reshape(n, width)
                yield Chunk(as_float32(block, str(path), start), None)

    return InputTable(str(path), None, None, chunks(), handle)


def _entity_column(names: list[str] | None, entity_column: str | None, name: str) -> str | None:
    if entity_column is None:
        return None
    if not names or entity_column not in names:
        raise UserInputError(f"{name} has no column {entity_column!r} (--entity-column); name it in the header")
    return entity_column


def _parquet_table(path: Path, chunk_rows: int, stamp_column: str | None, entity_column: str | None) -> InputTable:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise UserInputError(f"cannot read {path} as parquet: {error}") from None
    # A DataFrame saved with its index (df.set_index("timestamp").to_parquet()) stores that index as a column,
    # last; pandas reads it back as the index, out of the columns. It is read here as a column put first, as
    # to_csv writes an index, so a time index is the time column; pandas' own unnamed row index is left out.
    index = [name for name in (source.schema_arrow.pandas_metadata or {}).get("index_columns", [])
             if isinstance(name, str)]  # fmt: skip
    names = [name for name in index if not name.startswith("__index_level_")]
    names += [name for name in source.schema_arrow.names if name not in index]
    stamp = _stamp_column(names, stamp_column)
    entity = _entity_column(names, entity_column, str(path))

    def chunks() -> Iterator[Chunk]:
        row = 0
        for batch in source.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas(ignore_metadata=True)[names]
            yield _frame_chunk(frame, stamp, str(path), row, entity, stamp_column == FIRST_TIME_COLUMN)
            row += len(frame)

    columns = [n for n in names if n not in (stamp, entity)]
    _check_sensor_columns(columns, stamp, str(path))
    return InputTable(str(path), columns, stamp, chunks())


def open_input(
    source: str,
    chunk_rows: int,
    stamp_column: str | None,
    stdin: TextIO | None = None,
    entity_column: str | None = None,
) -> InputTable:
    """An InputTable over a .csv, .npy or .parquet file, or CSV on stdin for '-'; `entity_column`
    names a text column kept apart from the sensor values, like the timestamp."""
    if source == "-":
        return _csv_table(stdin or sys.stdin, "stdin", chunk_rows, stamp_column, False, entity_column)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserInputError(f"input {path} {missing_file_reason(path)}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if entity_column is not None:
            raise UserInputError(f"{path} is a .npy array without column names; give --entity, or a CSV or parquet")
        return _npy_table(path, chunk_rows)
    if suffix == ".parquet":
        return _parquet_table(path, chunk_rows, stamp_column, entity_column)
    if suffix == ".csv":
        handle = open(path, encoding="utf-8", newline="")  # closed by the chunk generator
        try:
            return _csv_table(handle, str(path), chunk_rows, stamp_column, True, entity_column)
        except UserInputError:  # refused on its first line: no generator will close it
            handle.close()
            raise
    raise UserInputError(f"input {path} has an unknown suffix {path.suffix!r}; use .csv, .npy, .parquet or - (stdin)")


def column_order(table: InputTable, width: int, expected: list[str]) -> tuple[np.ndarray | None, str]:
    """Index array that puts the input's columns in the checkpoint's order (None: keep them), and how."""
    got = len(table.columns) if table.columns is not None else width
    if got != len(expected):
        shown = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
        named = "" if table.columns is None else f"; {column_differences(table.columns, expected)}"
        extra = [name for name in table.columns or [] if name not in expected]
        times = [name for name in extra if _stamp_column([name], FIRST_TIME_COLUMN)]
        if times:  # a clock among the sensors: detect.py reads only the column --timestamp-column names as times
            named += f" (if {times[0]} holds times: --timestamp-column {times[0]})"
        raise UserInputError(
            f"{table.name} has {got} sensor column{'s' * (got != 1)} but the checkpoint expects "
            f"{len(expected)} ({shown}){named}"
        )
    if table.columns is None:
        return None, "by position (the input names no columns)"
    if table.columns == expected:
        return None, "by name"
    order = name_order(table.columns, expected)
    if order is not None:
        return order, "reordered by name"
    differences = column_differences(table.columns, expected)
    return None, f"by position: the input's column names are not the checkpoint's ({differences})"


def name_order(columns: list[str], expected: list[str]) -> np.ndarray | None:
    """The indices that put `columns` in `expected`'s order, or None where the names are not the same set."""
    if sorted(columns) != sorted(expected):
        return None
    return np.array([columns.index(name) for name in expected])


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def column_differences(columns: list[str], expected: list[str]) -> str:
    """How column names differ from the expected ones, for messages: 'missing a, b; extra c'."""
    missing = [name for name in expected if name not in columns]
    extra = [name for name in columns if name not in expected]
    parts = [f"missing {_listed(missing)}" if missing else "", f"extra {_listed(extra)}" if extra else ""]
    return "; ".join(part for part in parts if part) or "the same names, some twice"


def time_order_warning(stamps: np.ndarray | None, what: str, first_row: int = 0) -> str | None:
    """A warning where a time column repeats a time or goes back, or None: the rows are read in file order, so
    the model's windows would join points out of their order in time. Times it cannot read say nothing.
    `first_row`: the file row of stamps[0], where they are a part of the file (detect.py's chunks)."""
    if stamps is None or len(stamps) < 2:
        return None
    text = pd.Series(stamps, dtype=str).str.strip()
    for style in (None, "mixed"):  # one inferred format (fast), else each row's own
        try:
            with warnings.catch_warnings():  # pandas' note that it could not infer one format: that is the fallback
                warnings.simplefilter("ignore", UserWarning)
                times = pd.to_datetime(text, errors="coerce", format=style)
        except (ValueError, TypeError):  # mixed time zones, say: not comparable here
            return None
        if not times.isna().any():
            break
    if times.isna().any():  # numbers, such as epoch seconds
        times = pd.to_numeric(text, errors="coerce")
    if times.isna().any():
        return None
    steps = times.diff().to_numpy()[1:]
    zero = steps == steps[0] * 0  # a zero of the steps' own type (a number or a duration)
    back = steps < steps[0] * 0
    if not (zero.any() or back.any()):
        return None
    row = int(np.argmax(zero | back)) + 1
    how = "repeats" if zero[row - 1] else "goes back"
    return (f"warning: {what}'s time {how} at row {first_row + row} ({text[row - 1]}, then {text[row]}); its rows "
            "are read in file order: sort it by time, unless that is the order of the readings (a clock change)")


class StampedTable(NamedTuple):
    values: np.ndarray  # (N, C) float32
    columns: list[str] | None  # the sensor columns' names, where the file has a header
    stamps: np.ndarray | None  # (N,) the first column's times as text, where it is one (FIRST_TIME_COLUMN)


def read_table(path: Path, chunk_rows: int = 1_000_000) -> StampedTable:
    """A whole .csv, .npy or .parquet file as one float32 (N, C) array, its sensor column names if it has them,
    and its first column's times where that column is named as times (FIRST_TIME_COLUMN; left out of the array)."""
    table = open_input(str(path), chunk_rows, stamp_column=FIRST_TIME_COLUMN)
    parts, stamps = [], []
    with contextlib.closing(table):
        for chunk in table.chunks:
            parts.append(chunk.values)
            stamps.append(chunk.stamps)
    width = len(table.columns) if table.columns is not None else (parts[0].shape[1] if parts else 0)
    values = np.concatenate(parts) if parts else np.empty((0, width), dtype=np.float32)
    times = np.concatenate(stamps) if table.stamp_column and stamps else None
    return StampedTable(values, table.columns, times)
