"""Run by tests/test_sharded_scoring.py under torchrun: score fixed series with the batches dealt over the ranks.

Rank r saves every case's gathered scores and errors to an .npz: rank 0 to the path given on the
command line, other ranks next to it (rank_output), so the test can check every rank got it all.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model.score_settings import ScoreSettings
from model.scoring import score_chunks, score_series
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.distributed import init_distributed

CONFIG = ModelConfig(n_channels=4, win_size=12, d_model=16, n_heads=4, e_layers=2, d_ff=32)

# name -> (series length, batch size). Lengths are in rows; the window is 12.
CASES = {
    "partial_batch_and_tail": (12 * 23 + 5, 4),  # 6 batches, the last with 3 windows + the tail window
    "tail_alone": (12 * 24 + 7, 4),  # 6 whole batches, the tail window in a batch of its own
    "no_tail": (12 * 22, 4),  # length a multiple of the window
    "one_batch": (12 * 23 + 5, 32),  # one batch only: rank 0 runs it, rank 1 idles
}
STREAM = (12 * 31 + 7, 4, (5, 40, 1, 100, 3))  # detect.py's path: length, batch, uneven chunk sizes
PAPER = ScoreSettings("paper", 50.0, None, 0)  # the cases' score: every channel, unsmoothed
RECONSTRUCTION = ScoreSettings("reconstruction", 50.0, None, 0)  # the stream's


def build_model() -> AnomalyTransformer:
    torch.manual_seed(0)
    return AnomalyTransformer(CONFIG).eval()


def build_series(length: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((length, CONFIG.n_channels)).astype(np.float32)


def rank_output(output: str | Path, rank: int) -> Path:
    output = Path(output)
    return output if rank == 0 else output.with_name(f"{output.stem}.rank{rank}.npz")


def main(output: str) -> None:
    context = init_distributed("cpu")
    model = build_model()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    arrays = {}
    for name, (length, batch_size) in CASES.items():
        calls.clear()
        values = score_series(model, build_series(length), PAPER, batch_size=batch_size, context=context)
        arrays[f"{name}_scores"], arrays[f"{name}_errors"] = values.scores, values.errors
        arrays[f"{name}_forward_calls"] = np.array(len(calls))  # this rank's share of the batches
    length, batch_size, sizes = STREAM
    chunks = np.split(build_series(length), np.cumsum(sizes))
    parts = list(score_chunks(model, chunks, RECONSTRUCTION, batch_size=batch_size, context=context))
    arrays["stream_scores"] = np.concatenate([part.scores for part in parts])
    arrays["stream_errors"] = np.concatenate([part.errors for part in parts])
    np.savez(rank_output(output, context.rank), **arrays)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
