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
MARK_BYTES = 64  # of the last line read, compared before each read to see the file rewritten under it
NA_WORDS = frozenset(STR_NA_VALUES) | {""}


class LineFeed:
    """Complete lines of `source` (a file path, or - for stdin) from byte `offset` on.

    read() returns the lines that arrived (an empty list when none did within poll_seconds) or None at the
    end of stdin; a file never ends, it is polled for more. Like `tail -F`, a file renamed away and created
    anew (rotated) is read to its end and then the new one from its start, and a file truncated in place
    (copytruncate) is read again from its start; `reopened` then says which.
    """

    def __init__(self, source: str, offset: int = 0, poll_seconds: float = 0.5, inode: int | None = None) -> None:
        self.name = "stdin" if source == "-" else source
        self.poll_seconds = poll_seconds
        self.partial = b""
        self.offset = offset  # bytes of the input up to the end of the last line returned
        self.inode = inode  # the followed file's, kept in the state: a restart sees a file replaced meanwhile
        self.reopened: str | None = None  # set by read() when the file was rotated or truncated: what happened
        self.mark = b""  # the last bytes read before the offset, to see a file truncated and written again
        if source == "-":
            self.fd, self.is_file = 0, False
            return
        self.path = os.path.expanduser(source)
        if not os.path.isfile(self.path):
            raise UserInputError(f"input {source} {missing_file_reason(Path(self.path))}")
        self.fd, self.is_file = os.open(self.path, os.O_RDONLY), True
        status = os.fstat(self.fd)
        if inode is not None and status.st_ino != inode:
            self._start_over("was replaced (rotated) while the stream was stopped: reading the new file from its start")
        elif status.st_size < offset:
            self._start_over(f"has {status.st_size} bytes, fewer than the {offset} already read: it was truncated "
                             "while the stream was stopped; reading it again from its start")  # fmt: skip
        self.inode = status.st_ino
        os.lseek(self.fd, self.offset, os.SEEK_SET)

    def _start_over(self, what: str) -> None:
        """Go on from the start of the file now under the name: a new one after a rotation, or the same one
        truncated (copytruncate); the partial line of the old one is dropped."""
        self.offset, self.partial, self.mark = 0, b"", b""
        self.reopened = f"{self.name} {what}"
        os.lseek(self.fd, 0, os.SEEK_SET)

    def _rewritten(self) -> bool:
        """Whether the bytes before the offset are no longer those read there: the file was truncated and
        written again (copytruncate) between two looks, past the offset already read."""
        return bool(self.mark) and os.pread(self.fd, len(self.mark), self.offset - len(self.mark)) != self.mark

    def read(self) -> list[bytes] | None:
        if self.is_file and self._rewritten():
            self._start_over("was truncated while it was followed: reading it again from its start")
            return []
        data = os.read(self.fd, READ_BYTES)
        if not data:
            if not self.is_file:  # the end of stdin: a last line without its newline still counts
                last, self.partial = self.partial, b""
                self.offset += len(last)
                return [last] if last.strip() else None
            if os.fstat(self.fd).st_size < self.offset + len(self.partial):
                self._start_over("was truncated while it was followed: reading it again from its start")
                return []
            try:
                inode = os.stat(self.path).st_ino
            except FileNotFoundError:  # renamed away, its successor not created yet
                inode = self.inode
            if inode != self.inode:  # rotated: the old file is read to its end, the new one from its start
                os.close(self.fd)
                self.fd = os.open(self.path, os.O_RDONLY)
                self.inode = os.fstat(self.fd).st_ino
                self._start_over("was rotated (a new file under its name): following the new one from its start")
                return []
            time.sleep(self.poll_seconds)
            return []
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        self.offset += cut
        if cut:
            self.mark = data[max(0, cut - MARK_BYTES) : cut]
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
