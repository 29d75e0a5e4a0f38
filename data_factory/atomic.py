"""Safe writes: temp files renamed over their targets only on success.

`atomic_path` / `atomic_paths` write beside the target and rename at the end, so an interrupted or
failed write (a full disk included) never leaves a half-written file and never touches the old one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from data_factory.errors import UserInputError


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_owner(temp: Path, target: Path) -> int | None:
    """The pid in a temp name `.{target}.{pid}.{random}.tmp`; None for names without one."""
    middle = temp.name[len(target.name) + 2 : -len(".tmp")]
    pid = middle.split(".")[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_temps(target: Path) -> None:
    """Delete `.{name}.*.tmp` beside `target` left by writers that died (a kill mid-save); a live writer's stay."""
    for temp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        owner = _temp_owner(temp, target)
        if owner is None or (owner != os.getpid() and not pid_alive(owner)):
            temp.unlink(missing_ok=True)


def write_error(error: OSError, targets: list[Path]) -> UserInputError:
    """One line for a failed write: what, why (e.g. no space left), and that the old files are intact."""
    names = ", ".join(str(target) for target in targets[:3]) + (", ..." if len(targets) > 3 else "")
    reason = error.strerror or str(error) or type(error).__name__
    code = f" [{errno.errorcode[error.errno]}]" if error.errno in errno.errorcode else ""
    fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder"
    return UserInputError(
        f"could not write {names}: {reason}{code}; {fix} or write elsewhere (the files already there are unchanged)"
    )


@contextlib.contextmanager
def atomic_paths(paths: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield one temp path beside each target; once the block succeeds every temp is synced to disk, then
    each is renamed onto its target. On any failure every temp is removed and every target left as it was.

    An OSError (a full disk, a read-only folder) becomes a UserInputError naming the files.
    """
    targets = [Path(path) for path in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            remove_stale_temps(target)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
            os.close(handle)
            temps.append(Path(name))
        yield temps
        mode = 0o666 & ~_current_umask()  # mkstemp makes 0600; give the files normal permissions
        for temp in temps:
            temp.chmod(mode)
            with open(temp, "rb+") as written:
                os.fsync(written.fileno())
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    except OSError as error:
        raise write_error(error, targets) from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` if the block succeeds, else delete it."""
    with atomic_paths([path]) as (temp,):
        yield temp


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder if needed and prove a file can be written there, before any work is spent."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"output dir {folder} is a file, not a folder; choose another --output-dir")
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
