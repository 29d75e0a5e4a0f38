"""Rows of a CSV that grows while it is read (like `tail -f`) or of stdin, as they arrive.

`LineFeed` returns the complete lines written since the last read, holding back a partial last line
until its newline arrives, and knows the byte offset after the last line it returned, so a restart
can go on from there. `RowParser` turns lines into rows the way detect.py's CSV reader does: a
header is recognised by a non-numeric field, the timestamp and entity columns are kept as text, an
empty field or pandas' NA words are NaN, blank lines are skipped.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pandas._libs.parsers import STR_NA_VALUES

from data_factory.dataset import as_float32
from data_factory.readers import (
    InputTable,
    check_header_names,
    check_separator,
    is_number,
    missing_file_reason,
    text_column_hint,
)
from runtime.errors import UserInputError

READ_BYTES = 1 << 16  # at most this much is taken in per read, so a backlog is scored (and saved) in steps
NA_WORDS = frozenset(STR_NA_VALUES) | {""}


class LineFeed:
    """Complete lines of `source` (a file path, or - for stdin) from byte `offset` on.

    read() returns the lines that arrived (an empty list when none did within poll_seconds) or None at the
    end of stdin; a file never ends, it is polled for more.
    """

    def __init__(self, source: str, offset: int = 0, poll_seconds: float = 0.5) -> None:
        self.name = "stdin" if source == "-" else source
        self.poll_seconds = poll_seconds
        self.partial = b""
        self.offset = offset  # bytes of the input up to the end of the last line returned
        if source == "-":
            self.fd, self.is_file = 0, False
            return
        path = os.path.expanduser(source)
        if not os.path.isfile(path):
            raise UserInputError(f"input {source} {missing_file_reason(Path(path))}")
        self.fd, self.is_file = os.open(path, os.O_RDONLY), True
        size = os.fstat(self.fd).st_size
        if size < offset:
            raise UserInputError(f"{source} has {size} bytes, fewer than the {offset} already read (--state): "
                                 "it was truncated or replaced; start over with a new --state file")  # fmt: skip
        os.lseek(self.fd, offset, os.SEEK_SET)

    def read(self) -> list[bytes] | None:
        data = os.read(self.fd, READ_BYTES)
        if not data:
            if not self.is_file:  # the end of stdin: a last line without its newline still counts
                last, self.partial = self.partial, b""
                self.offset += len(last)
                return [last] if last.strip() else None
            if os.fstat(self.fd).st_size < self.offset + len(self.partial):
                raise UserInputError(f"{self.name} shrank while it was followed: it was truncated or replaced")
            time.sleep(self.poll_seconds)
            return []
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        self.offset += cut
        return data[:cut].splitlines()

    def close(self) -> None:
        if self.is_file:
            os.close(self.fd)


@dataclass
class Rows:
    """Consecutive parsed rows."""

    values: np.ndarray  # (n, C) float32, in the input's column order
    stamps: list[str] | None
    entities: list[str] | None


class RowParser:
    """Lines of a CSV to rows; the first line is a header when a field of it is not a number. A parser
    resumed with the header it read before drops that header when the input sends it again."""

    def __init__(self, name: str, stamp_column: str | None, entity_column: str | None,
                 header: list[str] | None = None, width: int | None = None) -> None:  # fmt: skip
        self.name, self.stamp_column, self.entity_column = name, stamp_column, entity_column
        self.header, self.width = header, width  # width: fields per line, known after the first line
        self.rows = 0  # data rows parsed so far
        self.at_start = True

    def _set_header(self, fields: list[str]) -> None:
        header = [field.strip() for field in fields]
        check_header_names(header, self.name)
        if self.entity_column is not None and self.entity_column not in header:
            raise UserInputError(f"{self.name} has no column {self.entity_column!r} (--entity-column); "
                                 "name it in the header")  # fmt: skip
        self.header, self.width = header, len(header)

    @property
    def stamp_index(self) -> int | None:
        if self.header and self.stamp_column in self.header:
            return self.header.index(self.stamp_column)
        return None

    @property
    def entity_index(self) -> int | None:
        return self.header.index(self.entity_column) if self.header and self.entity_column else None

    def table(self) -> InputTable:
        """What readers.column_order needs to match the columns to the model's."""
        kept = {self.stamp_index, self.entity_index}
        columns = [c for i, c in enumerate(self.header) if i not in kept] if self.header else None
        stamp = self.header[self.stamp_index] if self.stamp_index is not None else None
        return InputTable(self.name, columns, stamp, iter(()))

    def parse(self, lines: list[bytes]) -> Rows:
        try:
            texts = [line.decode("utf-8").rstrip("\r") for line in lines]
        except UnicodeDecodeError:
            raise UserInputError(f"{self.name} is not UTF-8 text CSV") from None
        records = [fields for fields in csv.reader(texts) if fields and any(f.strip() for f in fields)]
        if records and self.at_start:
            self.at_start = False
            check_separator(records[0], self.name)
            if self.header is not None:  # resumed (--state): stdin may send the header again
                if [field.strip() for field in records[0]] == self.header:
                    records.pop(0)
            elif self.width is None:
                if not all(is_number(field) for field in records[0]):
                    self._set_header(records.pop(0))
                elif self.entity_column is not None:
                    raise UserInputError(f"{self.name} has no column {self.entity_column!r} (--entity-column); "
                                         "name it in the header")  # fmt: skip
                else:
                    self.width = len(records[0])
        stamp, entity = self.stamp_index, self.entity_index
        kept = [i for i in range(self.width or 0) if i not in (stamp, entity)]
        values = np.empty((len(records), len(kept)), dtype=np.float64)
        for number, fields in enumerate(records):
            if len(fields) != self.width:
                raise UserInputError(f"cannot read {self.name} as CSV: row {self.rows + number} has {len(fields)} "
                                     f"fields, the header {self.width}")  # fmt: skip
            for column, index in enumerate(kept):
                text = fields[index]
                try:
                    values[number, column] = math.nan if text.strip() in NA_WORDS else float(text)
                except ValueError:
                    name = self.header[index] if self.header else str(index)
                    where = f"(first: {text!r} in row {self.rows + number})"
                    hint = text_column_hint(name, self.header[stamp] if stamp is not None else None,
                                            self.entity_column, custom=False)  # fmt: skip
                    raise UserInputError(f"{self.name} has non-numeric columns [{name!r}] {where}; {hint}") from None
        rows = Rows(as_float32(values, self.name, self.rows),
                    [fields[stamp] for fields in records] if stamp is not None else None,
                    [fields[entity] for fields in records] if entity is not None else None)  # fmt: skip
        self.rows += len(records)
        return rows
