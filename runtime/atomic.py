"""Safe writes: temp files renamed over their targets only on success, and one run at a time per output folder.

`atomic_path` / `atomic_paths` write beside the target and rename at the end, so an interrupted or
failed write (a full disk included) never leaves a half-written file and never touches the old one.
`folder_lock` makes a folder the property of one run, and `new_folders_kept_only_on_success` takes back
the folders of a run that failed before writing anything; `signals_raise` turns SIGTERM into an
exception like SIGINT's, so that the cleanup of both (temps, the lock) runs before the process ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from runtime.errors import UserInputError

LOCK_FILE = ".run.lock"


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
    except BrokenPipeError:  # stdout's reader went away inside the block (detect.py --output - | head): not a file
        raise
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


@contextlib.contextmanager
def new_folders_kept_only_on_success(folders: Iterable[str | os.PathLike]) -> Iterator[None]:
    """The folders the block creates on the way to `folders` are removed again if it fails and leaves them
    empty, so that a run refused for a missing checkpoint or bad data leaves no trace on disk. A folder that
    existed before, or that holds anything at the end (a resumable state, a file of another run), stays."""
    new: list[Path] = []
    for folder in folders:
        path = Path(folder).expanduser().absolute()
        new += [part for part in (path, *path.parents) if not part.exists() and part not in new]
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda part: len(part.parts), reverse=True):  # the deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _holder(handle: int) -> str:
    """'pid N: COMMAND' as the holder of a lock file wrote it, or what little the file says."""
    os.lseek(handle, 0, os.SEEK_SET)
    lines = os.read(handle, 4096).decode("utf-8", "replace").splitlines()
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    if "pid" not in fields:
        return "pid unknown"
    return f"pid {fields['pid']}" + (f": {fields['command']}" if fields.get("command") else "")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, flag: str = "--output-dir") -> Iterator[Path]:
    """Own `folder` for the block: an exclusive lock on folder/.run.lock, which names this process's pid
    and command. A second run stops with a UserInputError naming the holder, and so does a disk too full to
    write the lock file (which is then removed); a lock file whose holder died (its flock is gone with it)
    is taken over; the file is removed at the end, also after an error.
    """
    path = Path(folder).expanduser() / LOCK_FILE
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserInputError(
                f"cannot create the lock file {path}: {error.strerror}; choose another {flag}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise UserInputError(
                f"{path.parent} is in use by another run ({holder}); wait for it to end or choose another {flag}"
            ) from None
        except OSError:  # a file system without locks: run unguarded rather than not at all
            break
        # The holder before us may have removed the file between our open and our lock: lock the live one.
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    command = shlex.join([Path(sys.executable).name, *sys.argv])[:300]
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"pid {os.getpid()}\ncommand {command}\n".encode(), 0)
    except OSError as error:  # a full disk: the lock file holds nothing yet, so it goes
        path.unlink(missing_ok=True)
        os.close(handle)
        raise write_error(error, [path]) from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock, so no one else's file is removed
        os.close(handle)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived outside a training loop: the block stopped, and its cleanup ran."""

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(signal.Signals(signal_number).name)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise Interrupted, so `finally` blocks (temp files, the
    folder lock) run before the process ends. A training loop inside installs its own handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, _frame: object) -> None:
        raise Interrupted(number)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


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


def run_stoppably(run: Callable[[], int], what: str) -> int:
    """A CLI's work under signals_raise: SIGINT/SIGTERM end it with one line saying nothing was
    written (`what` names the output, e.g. "no result"), exit 128 + the signal."""
    with signals_raise():
        try:
            return run()
        except Interrupted as stopped:
            print(f"error: stopped by {stopped}; {what} was written (the files already there are unchanged)",
                  file=sys.stderr)  # fmt: skip
            return 128 + stopped.signal_number
