"""Worker processes for per-entity work (training a fleet, evaluating one), one thread each.

Each entity's work runs on one thread wherever it runs, so its result does not depend on how many
workers share the machine: --jobs 1 and --jobs 8 give the same numbers on a CPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

import torch
from threadpoolctl import threadpool_limits

from runtime.errors import UserInputError


def default_jobs(memory_per_job: int = 0) -> int:
    """One worker per core this process may run on, and no more than the memory holds at
    `memory_per_job` bytes each."""
    cores = len(os.sched_getaffinity(0))
    if memory_per_job <= 0:
        return cores
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(cores, memory // memory_per_job))


def check_jobs(jobs: int) -> int:
    """--jobs, checked once where a command starts: at least one worker."""
    if jobs < 1:
        raise UserInputError(f"--jobs must be at least 1, got {jobs}")
    return jobs


def ignore_signals() -> None:
    """Training workers leave SIGINT and SIGTERM to the parent, which lets the running entities
    finish and saves them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def ignore_interrupt() -> None:
    """Evaluation workers leave Ctrl-C to the parent, which stops them (stop_now): nothing they do is kept."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def spawn_pool(jobs: int, initializer: Callable[[], None] = ignore_signals) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=initializer)


def stop_now(pool: ProcessPoolExecutor) -> None:
    """End the pool at once: queued work dropped, running workers terminated (SIGTERM), not waited for.

    The executor has no public way to end running work before Python 3.14, hence its _processes.
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


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
