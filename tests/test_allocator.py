"""keep_freed_memory: glibc keeps freed tensors' pages, so a repeated large allocation stops page-faulting."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Allocate and free a 64 MiB tensor 20 times, then print the page faults that took. A few rounds first let
# the heap reach its working size (in a bare interpreter it takes a few blocks; a training run's imports
# have grown it already).
PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
from runtime.allocator import keep_freed_memory
applied = keep_freed_memory() if {tune} else False
for _ in range(5):
    torch.ones(16 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 2**20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tune: bool, env: dict | None = None) -> tuple[str, int]:
    code = PROBE.format(root=str(ROOT), tune=tune)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    applied, count = done.stdout.split()
    return applied, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_pages_are_reused_instead_of_faulted_in_again():
    applied, tuned = faults(tune=True)
    _, default = faults(tune=False)
    if applied != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    pages = 20 * 64 * 2**20 // resource.getpagesize()
    assert default > pages * 0.9  # every 64 MiB block faulted in anew
    assert tuned < pages * 0.2  # the warm-up's pages, reused


def test_the_opt_out_leaves_malloc_alone():
    applied, _ = faults(tune=True, env={**os.environ, "ANOMALY_TRANSFORMER_MALLOC": "default"})
    assert applied == "False"
