"""torchrun on CPU (gloo): the DDP step equals a single-process step, and a 2-process run trains and evaluates."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evaluate
from model.discrepancy import minimax_losses
from model.transformer import AnomalyTransformer
from runtime.distributed import DistributedContext, epoch_batches
from tests.ddp_worker import CONFIG, global_batch
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ranks_deal_one_global_batch_between_them():
    single = epoch_batches(10, 4, seed=3, epoch=2, context=DistributedContext())
    ranks = [epoch_batches(10, 2, seed=3, epoch=2, context=DistributedContext(rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(ranks[0][0] + ranks[1][0]) == sorted(single[0])
    assert sorted(sum(ranks[0] + ranks[1], [])) == sorted(set(range(10)))  # every window, none twice
    assert epoch_batches(10, 4, 3, 2, DistributedContext()) == single  # the order depends on (seed, epoch) only
    assert epoch_batches(10, 4, 3, 3, DistributedContext()) != single


@pytest.mark.slow
def test_one_ddp_step_equals_a_single_process_step_on_the_global_batch(tmp_path):
    output = tmp_path / "ddp_state.pt"
    completed = torchrun("tests/ddp_worker.py", str(output))
    assert completed.returncode == 0, completed.stderr[-3000:]

    torch.manual_seed(0)
    model = AnomalyTransformer(CONFIG)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = global_batch()
    minimax_losses(batch, *model(batch), k=3.0).total.backward()
    optimizer.step()
    # SGD, not Adam: the key bias gets a gradient of float noise only (the softmax ignores a
    # constant per row), and Adam would blow that noise up to a full-size step.
    distributed = torch.load(output, weights_only=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(distributed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_two_process_training_writes_one_checkpoint_that_evaluates(tmp_path):
    args = [
        "train.py",
        "--dataset",
        "SYNTH",
        *TINY_TRAIN_FLAGS,
        "--batch-size",
        "32",
        "--output-dir",
        str(tmp_path),
    ]
    started = time.perf_counter()
    completed = torchrun(*args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    print(f"2-process torchrun training: {time.perf_counter() - started:.1f} s wall")
    assert completed.stdout.count("epoch 1/1") == 1  # only rank 0 logs
    assert "2 processes" in completed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SYNTH_checkpoint.pth", "SYNTH_last.pth"]
    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), "--baselines", "none"]) == 0
