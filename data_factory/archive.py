"""Safe zip extraction: refuse entries that escape the target, extract only listed members, verify each one."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath

from data_factory.download import CHUNK_BYTES, IntegrityError
from runtime.errors import UserInputError


class UnreadableArchive(UserInputError):
    """The file is not a zip that can be read: cut short, or another file served under the name."""


def unsafe_entry(name: str) -> bool:
    """True for an entry name that would land outside the folder it is extracted into."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    has_drive = len(normalised) > 1 and normalised[1] == ":"
    return path.is_absolute() or has_drive or ".." in path.parts


def open_archive(path: Path, what: str) -> zipfile.ZipFile:
    """Open a zip and refuse it whole if any entry is unsafe; a truncated or corrupt file is a clear error."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:  # a truncated zip has no central directory
        raise UnreadableArchive(
            f"{what} is not a readable zip ({error}); it was cut short or is another file"
        ) from None
    for name in archive.namelist():
        if unsafe_entry(name):
            archive.close()
            raise IntegrityError(
                f"{what} has an entry {name!r} that would escape the target folder; refusing the whole archive"
            )
    return archive


def member_index(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Map 'split/file' (the last two path parts) to its entry, so data/train/A-1.npy and train/A-1.npy both match.

    Mirrors differ in the top folder; macOS resource forks (__MACOSX) are skipped.
    """
    index: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or len(parts) < 2 or parts[0] == "__MACOSX":
            continue
        index.setdefault("/".join(parts[-2:]), info)
    return index


def extract_verified(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, sha256: str, size: int) -> None:
    """Extract one entry to `target`, reading at most `size` bytes; raise IntegrityError unless it matches."""
    if info.file_size != size:
        raise IntegrityError(f"{info.filename} in the archive has {info.file_size:,} bytes, expected {size:,}")
    digest = hashlib.sha256()
    written = 0
    try:
        with archive.open(info) as source, open(target, "wb") as sink:
            # the size in the header can lie (a zip bomb): never read past the expected size
            while chunk := source.read(min(CHUNK_BYTES, size + 1 - written)):
                written += len(chunk)
                if written > size:
                    break
                digest.update(chunk)
                sink.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise IntegrityError(f"{info.filename} in the archive cannot be read ({error})") from None
    if written != size or digest.hexdigest() != sha256:
        raise IntegrityError(
            f"{info.filename} in the archive does not match the manifest "
            f"(sha256 {digest.hexdigest()}, expected {sha256}); nothing was kept"
        )
