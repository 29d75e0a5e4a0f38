"""The worker processes of per-entity work: how many, on how many threads, and stopping them."""

import os
import time
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from runtime.errors import UserInputError
from runtime.workers import check_jobs, default_jobs, ignore_interrupt, one_thread, spawn_pool, stop_now


def process_state(pid: int) -> str | None:
    """The state letter in /proc (R, S, Z, ...), or None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return fields[0]


def test_default_jobs_is_the_cores_capped_by_memory():
    cores = len(os.sched_getaffinity(0))
    assert default_jobs() == cores
    assert default_jobs(memory_per_job=1) == cores
    assert default_jobs(memory_per_job=2**60) == 1  # more than any machine has: still one worker


def test_check_jobs_refuses_fewer_than_one_worker_in_one_line():
    assert check_jobs(1) == 1
    with pytest.raises(UserInputError, match=r"^--jobs must be at least 1, got 0$"):
        check_jobs(0)


def test_one_thread_limits_torch_and_the_native_pools_and_restores_them():
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = [pool["num_threads"] for pool in threadpool_info()]
        assert before  # numpy and torch have loaded their native pools
        with one_thread():
            assert torch.get_num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert torch.get_num_threads() == 2
        assert [pool["num_threads"] for pool in threadpool_info()] == before
    finally:
        torch.set_num_threads(original)


def test_stop_now_ends_running_work_without_waiting_for_it():
    pool = spawn_pool(1, initializer=ignore_interrupt)
    pid = pool.submit(os.getpid).result(timeout=120)
    pool.submit(time.sleep, 60)  # running in that worker when the pool is stopped
    time.sleep(0.5)
    started = time.perf_counter()
    stop_now(pool)
    assert time.perf_counter() - started < 5
    deadline = time.time() + 10
    while process_state(pid) not in (None, "Z") and time.time() < deadline:
        time.sleep(0.1)
    assert process_state(pid) in (None, "Z")  # terminated (a zombie until the executor reaps it)
