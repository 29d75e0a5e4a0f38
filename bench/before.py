"""The code as it was before the speed work, for the benches' `before` rows.

BEFORE_COMMIT is main as it stood when the kernels were last unoptimised. `before_tree` exports that
commit's files (git archive) into a temporary folder, whose own bench scripts the benches run with
this interpreter, so both sides share the torch build, the threads and the data.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "83c076db707764e5ea561091f0b683fdbe4f1a56"


@contextlib.contextmanager
def before_tree(commit: str = BEFORE_COMMIT) -> Iterator[tuple[Path | None, str]]:
    """(the exported tree, a note) or (None, why there is none: no git, or a clone without that commit)."""
    with tempfile.TemporaryDirectory(prefix="before-") as folder:
        try:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", b"") or b""
            reason = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(error)]
            yield None, f"no before row: commit {commit[:7]} could not be exported ({reason[0]})"
            return
        yield Path(folder), f"before: main at {commit[:7]}, exported with git archive, run with this interpreter"
