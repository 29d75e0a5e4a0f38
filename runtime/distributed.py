"""torchrun support: one process per device, DistributedDataParallel, rank 0 does the talking and writing."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from runtime.atomic import ensure_writable_dir, folder_lock, new_folders_kept_only_on_success
from runtime.errors import UserInputError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over all ranks (epoch loss sums); a no-op in one process."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda(self.local_rank)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def broadcast(self, value: object) -> object:
        """Rank 0's value (a few names and settings, pickled) on every rank; the value itself in one process."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_to_main(self, value: object) -> list | None:
        """Every rank's value in rank order on rank 0, None on the others: only the writer holds them all."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def counter(self, key: str) -> Callable[[], int]:
        """A function giving 0, 1, 2, ... across all ranks together: each call takes the next number, so work
        goes to whichever rank asks first. Under torchrun the number lives in its key-value store (the
        launcher's TCPStore, which every worker reaches at MASTER_ADDR:MASTER_PORT); `key` names this use."""
        if not self.enabled:
            return itertools.count().__next__
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
        return lambda: store.add(key, 1) - 1


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), else stay single.

    gloo on CPU, nccl on CUDA; each rank takes the GPU of its LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def own_output_folder(folder: Path, context: DistributedContext, stack: contextlib.ExitStack) -> None:
    """Rank 0 creates the folder and takes its lock for the rest of `stack`; every rank learns whether that
    worked, so a folder in use stops them all instead of leaving the others waiting for rank 0. If the run fails
    with the folders it created still empty, rank 0 removes them as `stack` closes."""
    failure = None
    if context.is_main:
        stack.enter_context(new_folders_kept_only_on_success([folder]))  # entered first: it exits after the lock
        try:
            ensure_writable_dir(folder)
            stack.enter_context(folder_lock(folder))  # one run per folder: its files are this run's alone
        except UserInputError as error:
            failure = error
    if context.sum([float(failure is not None)])[0]:
        raise failure or UserInputError(f"rank 0 could not take the output folder {folder}; see its error")


def epoch_batches(
    n_windows: int, batch_size: int, seed: int, epoch: int, context: DistributedContext
) -> list[list[int]]:
    """This rank's batches of window indices for one epoch.

    The order depends only on (seed, epoch), never on RNG state carried across epochs, so a
    resumed run replays exactly the batches an uninterrupted one would see. With N ranks the
    shuffled order is padded to a multiple of N and dealt round-robin, as DistributedSampler does,
    so rank r's b-th batch and the other ranks' b-th batches together form one global batch.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_windows, generator=generator)
    if context.enabled:
        padding = (-n_windows) % context.world_size
        order = torch.cat([order, order[:padding]])[context.rank :: context.world_size]
    indices = order.tolist()
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
