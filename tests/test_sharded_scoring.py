"""Sharded scoring over torchrun ranks equals single-process scoring bit for bit."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data_factory.registry import load_dataset
from model.scoring import score_chunks, score_series
from tests.sharded_worker import CASES, PAPER, RECONSTRUCTION, STREAM, build_model, build_series, rank_output
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_two_rank_sharded_scoring_is_bit_identical_to_one_process(tmp_path):
    output = tmp_path / "sharded.npz"
    started = time.perf_counter()
    completed = torchrun("tests/sharded_worker.py", str(output))
    print(f"2-process torchrun sharded scoring: {time.perf_counter() - started:.1f} s wall")
    assert completed.returncode == 0, completed.stderr[-3000:]

    model = build_model()
    ranks = [np.load(rank_output(output, rank)) for rank in (0, 1)]
    for name, (length, batch_size) in CASES.items():
        # The ranks run with OMP_NUM_THREADS=1 (torchrun's default too), and the CPU kernels split
        # their work by the thread count: with 2 threads here the same batches differ in the last
        # bits (scores up to 1e-4 relative, as the softmax at temperature 50 amplifies). Same
        # batches AND same thread count give bit-identical floats, so the reference uses 1 thread.
        with intra_op_threads(1):
            expected = score_series(model, build_series(length), PAPER, batch_size=batch_size)
        assert expected.scores.shape == (length,) and expected.errors.shape == (length, 4)
        for rank, arrays in enumerate(ranks):  # every rank holds the whole, ordered result
            assert np.array_equal(arrays[f"{name}_scores"], expected.scores), (name, rank)
            assert np.array_equal(arrays[f"{name}_errors"], expected.errors), (name, rank)
    # Each rank ran its share of the forward passes: 6 batches (23 windows + the tail, 4 a batch) -> 3 + 3.
    assert [int(arrays["partial_batch_and_tail_forward_calls"]) for arrays in ranks] == [3, 3]
    assert [int(arrays["one_batch_forward_calls"]) for arrays in ranks] == [1, 0]
    length, batch_size, _ = STREAM
    with intra_op_threads(1):
        parts = list(score_chunks(model, [build_series(length)], RECONSTRUCTION, batch_size=batch_size))
    for arrays in ranks:
        assert np.array_equal(arrays["stream_scores"], np.concatenate([part.scores for part in parts]))
        assert np.array_equal(arrays["stream_errors"], np.concatenate([part.errors for part in parts]))


def run_single(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # the ranks' thread count
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_and_detect_under_torchrun_equal_one_process(tmp_path):
    assert train.main(["--dataset", "SYNTH", *TINY_TRAIN_FLAGS, "--output-dir", str(tmp_path)]) == 0
    checkpoint = tmp_path / "SYNTH_checkpoint.pth"
    source = tmp_path / "test.npy"
    np.save(source, load_dataset("SYNTH").test)
    common = ["--dataset", "SYNTH", "--checkpoint", str(checkpoint), "--device", "cpu", "--batch-size", "16"]
    for name, runner in (("one", run_single), ("two", torchrun)):
        folder = tmp_path / name
        completed = runner("evaluate.py", *common, "--output-dir", str(folder))
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert completed.stdout.count("ROC-AUC") == 1  # rank 0 alone reports
        detect_args = ["--checkpoint", str(checkpoint), "--input", str(source), "--device", "cpu"]
        completed = runner("detect.py", *detect_args, "--chunk-rows", "333", "--output", str(folder / "det.csv"))
        assert completed.returncode == 0, completed.stderr[-3000:]
        written = sorted(p.name for p in folder.glob("det*"))
        assert written == ["det.csv", "det.json", "det_incidents.csv", "det_incidents.json"]  # written once
    one, two = (np.load(tmp_path / name / "SYNTH_evaluation.npz") for name in ("one", "two"))
    for key in ("scores", "train_scores", "predictions", "pca_scores"):
        assert np.array_equal(one[key], two[key]), key
    assert str(one["metrics_json"]) == str(two["metrics_json"])
    assert (tmp_path / "one" / "det.csv").read_text() == (tmp_path / "two" / "det.csv").read_text()


@pytest.mark.slow
def test_detect_under_torchrun_stops_every_rank_with_one_line(tmp_path):
    assert train.main(["--dataset", "SYNTH", *TINY_TRAIN_FLAGS, "--output-dir", str(tmp_path)]) == 0
    source = tmp_path / "test.npy"
    np.save(source, load_dataset("SYNTH").test[:500])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    common = ["detect.py", "--checkpoint", str(tmp_path / "SYNTH_checkpoint.pth"), "--device", "cpu"]
    for output, expected in ((blocker / "out" / "det.csv", "error: cannot write"), ("-", "give files, not -")):
        completed = torchrun(*common, "--input", str(source), "--output", str(output))
        assert completed.returncode != 0
        errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], completed.stderr[-3000:]
        # torchrun itself reports a failed child with a traceback of its own; no rank may add one.
        assert 'detect.py", line' not in completed.stderr and "Connection closed" not in completed.stderr
