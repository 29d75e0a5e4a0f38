"""Atomic file writes: a temp file in the target folder, renamed over the target only on success."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from data_factory.errors import UserInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` if the block succeeds, else delete it.

    An interrupted or failed write never leaves a half-written file, and never touches the old one.
    """
    target = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        temp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600; give the file normal permissions
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder if needed and prove a file can be written there, before any work is spent."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        raise UserInputError(
            f"cannot write to output dir {folder}: {error.strerror}; choose another --output-dir"
        ) from None
    return folder


def json_ready(value: object) -> object:
    """A copy that json.dumps writes as valid JSON: NaN and infinities become null (see docs/evaluation.md),
    numpy scalars and arrays become plain numbers and lists."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalars and arrays, tensors
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: object) -> str:
    """Indented, strictly valid JSON (no bare NaN) with a final newline."""
    return json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n"


def write_json(value: object, path: str | os.PathLike) -> Path:
    """Write json_text(value) atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json_text(value))
    return Path(path)
