"""HTTP downloads that never corrupt the cache: retries, size caps, checksums, temp files and a process lock.

A file is streamed into a temp file beside its target and renamed into place only after it
verifies, so a failed or interrupted download leaves nothing behind. `data_lock` serialises
processes (two runs, or several distributed ranks) that prepare the same data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from runtime.atomic import atomic_path
from runtime.errors import UserInputError

CHUNK_BYTES = 1 << 20


class DownloadFailed(UserInputError):
    """The file could not be fetched (network, HTTP status, size); `reason` says why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"could not download {url}: {reason}")
        self.url = url
        self.reason = reason


class IntegrityError(UserInputError):
    """A file arrived (or was found) but is not the one the manifest describes."""


class _Retryable(Exception):
    """A failure worth another attempt: a dropped connection, a timeout, a 5xx or 429 status."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # the first try plus three retries
    backoff_s: float = 1.0  # wait before the first retry; doubles after each one
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 60.0  # longest silence between two chunks of the body
    min_rate_bytes_s: float = 1024.0  # an attempt slower than this over a rate window is given up (and retried)
    rate_window_s: float = 30.0
    deadline_s: float = 3600.0  # the whole download, every attempt and wait included


DEFAULT_POLICY = RetryPolicy()


def resolve_url(env_var: str, default: str, overrides: Mapping[str, str | None] | None = None) -> str:
    """The URL to use: an explicit override (a CLI flag) wins, then the environment variable, then the default."""
    url = (overrides or {}).get(env_var) or os.environ.get(env_var) or default
    if urlsplit(url).scheme not in ("http", "https"):
        raise UserInputError(f"{env_var} must be an http(s) URL, got {url!r}; set it to a mirror's full URL")
    return url


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Deadline:
    """The end of the overall deadline of one download."""

    def __init__(self, url: str, policy: RetryPolicy) -> None:
        self.url, self.seconds = url, policy.deadline_s
        self.end = time.monotonic() + policy.deadline_s

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DownloadFailed(self.url, f"it did not finish within the {self.seconds:g} s deadline")
        return left


class _RateWatch:
    """Gives up an attempt whose transfer rate, over each window of rate_window_s, falls under min_rate_bytes_s."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started, self.bytes = time.monotonic(), 0

    def add(self, count: int, received: int) -> None:
        self.bytes += count
        elapsed = time.monotonic() - self.started
        if elapsed < self.policy.rate_window_s:
            return
        rate = self.bytes / elapsed
        if rate < self.policy.min_rate_bytes_s:
            raise _Retryable(
                f"the transfer ran at {rate:.2g} bytes/s over {elapsed:.0f} s, under the minimum of "
                f"{self.policy.min_rate_bytes_s:g} bytes/s ({received:,} bytes received)"
            )
        self.started, self.bytes = time.monotonic(), 0


def _stream_once(url: str, handle, max_bytes: int, policy: RetryPolicy, deadline: _Deadline) -> None:
    """One attempt: stream the body into `handle`; raise _Retryable or DownloadFailed on failure."""
    try:
        # identity encoding: the byte count must match Content-Length and the checksum the raw file.
        response = requests.get(
            url,
            stream=True,
            timeout=(min(policy.connect_timeout_s, deadline.left()), min(policy.read_timeout_s, deadline.left())),
            headers={"Accept-Encoding": "identity"},
        )
    except (requests.ConnectionError, requests.Timeout) as error:
        raise _Retryable(_short(error)) from None
    except requests.RequestException as error:
        raise DownloadFailed(url, _short(error)) from None
    with response:
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"HTTP {response.status_code} {response.reason}")
        if response.status_code >= 400:
            raise DownloadFailed(url, f"HTTP {response.status_code} {response.reason}")
        declared = int(response.headers.get("Content-Length") or 0) or None
        if declared is not None and declared > max_bytes:
            raise DownloadFailed(url, f"the server announces {declared:,} bytes, over the {max_bytes:,}-byte cap")
        handle.seek(0)
        handle.truncate()
        received = 0
        name = Path(urlsplit(url).path).name or url
        rate = _RateWatch(policy)
        # disable=None: the bar shows on a terminal and stays out of logs and captured output.
        with tqdm(total=declared, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=None) as bar:
            try:
                while True:
                    # read1: whatever has arrived (up to a chunk), so a server that drips bytes is seen
                    # to be slow instead of holding one read open for ever.
                    chunk = response.raw.read1(CHUNK_BYTES)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadFailed(url, f"the response passed the {max_bytes:,}-byte cap; refusing it")
                    handle.write(chunk)
                    bar.update(len(chunk))
                    deadline.left()
                    rate.add(len(chunk), received)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                raise _Retryable(f"the connection broke after {received:,} bytes ({_short(error)})") from None
        if declared is not None and received != declared:
            raise _Retryable(f"received {received:,} of {declared:,} bytes")


def _short(error: Exception) -> str:
    """The useful part of a requests/urllib3 error chain, e.g. '[Errno 111] Connection refused'."""
    text = str(error)
    errno = re.search(r"\[Errno -?\d+\] [^\"')(]+", text)
    if errno:
        return errno.group(0).strip()
    return text[:200] or type(error).__name__


def partial_name(name: str) -> str:
    """The glob of the temp files a download of `name` writes (hidden, beside the target)."""
    return f".{name}.*.part"


@contextlib.contextmanager
def downloaded(
    url: str, folder: str | os.PathLike, name: str, *, max_bytes: int, policy: RetryPolicy | None = None
) -> Iterator[Path]:
    """Download `url` into a temp file `.{name}.*.part` inside `folder`, yield its path, delete it afterwards.

    Retries dropped connections, timeouts, 5xx, 429 and transfers under the policy's minimum rate,
    with exponential backoff; refuses a body over `max_bytes`. Raises DownloadFailed once the
    attempts are spent or the overall deadline has passed.
    """
    policy = policy or DEFAULT_POLICY
    deadline = _Deadline(url, policy)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".part", delete=False)
    temp = Path(handle.name)
    try:
        with handle:
            print(f"downloading {url}", file=sys.stderr)
            for attempt in range(1, policy.attempts + 1):
                try:
                    _stream_once(url, handle, max_bytes, policy, deadline)
                    break
                except _Retryable as error:
                    if attempt == policy.attempts:
                        raise DownloadFailed(url, f"{error} (after {attempt} attempts)") from None
                    wait = policy.backoff_s * 2 ** (attempt - 1)
                    print(f"  attempt {attempt} failed ({error}); retrying in {wait:g} s", file=sys.stderr)
                    time.sleep(min(wait, deadline.left()))
        yield temp
    finally:
        temp.unlink(missing_ok=True)


def fetch(
    url: str,
    target: str | os.PathLike,
    *,
    max_bytes: int,
    sha256: str | None = None,
    verify: Callable[[Path], None] | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Download `url` to `target`, renamed into place only after the sha256 (and `verify`, if given) pass.

    A mismatch raises IntegrityError naming the file; the bad download is not kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with downloaded(url, target.parent, target.name, max_bytes=max_bytes, policy=policy) as temp:
        if sha256 is not None:
            got = sha256_file(temp)
            if got != sha256:
                raise IntegrityError(
                    f"{target.name} from {url} has sha256 {got}, expected {sha256}; it was not kept. "
                    "The mirror serves another version of the file: point the URL at the original"
                )
        if verify is not None:
            verify(temp)
        with atomic_path(target) as final_temp:
            os.replace(temp, final_temp)
    return target


@contextlib.contextmanager
def data_lock(folder: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder/.{name}.lock` for the block (fcntl.flock: released if the process dies)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / f".{name}.lock"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is preparing {name} in {folder}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def manual_instructions(
    what: str, folder: Path, reason: str, urls: list[str], commands: list[str], layout: list[str]
) -> str:
    """One line for a failed download: what went wrong, the commands to run by hand, the layout, the URLs."""
    return (
        f"{what} is not in {folder}; {reason}. On a machine with internet run: {' ; '.join(commands)}; "
        f"then copy the files so that {folder} holds {', '.join(layout)}. Mirrors: set {', '.join(urls)} "
        "or the flags of python -m data_factory prepare (docs/datasets.md)"
    )
