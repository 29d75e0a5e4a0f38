"""Worker processes for per-entity work (training a fleet, evaluating one), one thread each.

Each entity's work runs on one thread wherever it runs, so its result does not depend on how many
workers share the machine: --jobs 1 and --jobs 8 give the same numbers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import torch
from threadpoolctl import threadpool_limits


def default_jobs() -> int:
    """The cores this process may run on: one entity per core."""
    return len(os.sched_getaffinity(0))


def ignore_signals() -> None:
    """Workers leave SIGINT and SIGTERM to the parent, which decides what finishes and what is saved."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def spawn_pool(jobs: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=ignore_signals)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch, BLAS and OpenMP (scikit-learn's k-means) on one thread inside the block; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
