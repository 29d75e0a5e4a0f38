"""Keep the memory of freed tensors for the next ones, instead of handing it back to the kernel.

glibc's malloc serves a block above its mmap threshold (128 KiB, rising to at most 32 MiB as blocks
are freed) with fresh pages from the kernel and returns them on free. A training step allocates and
frees dozens of (B, H, L, L) association tensors, 82 MiB each at the paper's size and batch 256, so
every step page-faults and zeroes those gigabytes anew: 14 million page faults in a loop of a few
steps, measured. Served from malloc's heap and never trimmed, the pages are faulted once and reused.

The cost: the process keeps its peak heap until it exits, and the heap can hold more than the live
tensors. Set ANOMALY_TRANSFORMER_MALLOC=default to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
LARGEST_INT = 2**31 - 1
OPT_OUT = "ANOMALY_TRANSFORMER_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc (Linux) to serve every block from its heap and not to trim it; True when it took effect.

    Idempotent and cheap after the first call; a no-op on other C libraries and systems, or when
    ANOMALY_TRANSFORMER_MALLOC=default.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "").lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no glibc, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_INT))
    return _applied
