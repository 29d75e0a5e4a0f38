"""Score a normalised series with a trained model: every point once, from non-overlapping windows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_factory.windows import WindowDataset, check_long_enough, scoring_starts, stitch_window_values
from model.discrepancy import anomaly_score
from model.transformer import AnomalyTransformer


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA, then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: bfloat16 where the GPU has it, else float16."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@torch.no_grad()
def score_series(
    model: AnomalyTransformer,
    series: np.ndarray,
    *,
    batch_size: int = 128,
    variant: str = "paper",
    temperature: float = 50.0,
    device: torch.device | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Per-point anomaly scores (N,) of a normalised series (N, C)."""
    device = device or next(model.parameters()).device
    win_size = model.config.win_size
    starts = scoring_starts(len(series), win_size)
    loader = DataLoader(WindowDataset(series, starts, win_size), batch_size=batch_size, shuffle=False)
    model.eval()
    window_scores = []
    for batch in loader:
        batch = batch.to(device)
        with autocast_context(device, amp):
            reconstruction, per_layer = model(batch)
            scores = anomaly_score(batch, reconstruction, per_layer, variant, temperature)
        window_scores.append(scores.float().cpu().numpy())
    return stitch_window_values(np.concatenate(window_scores), len(series), win_size)


class PointValues(NamedTuple):
    """Per-point outputs of consecutive points of a series."""

    scores: np.ndarray  # (n,) anomaly scores
    errors: np.ndarray  # (n, C) squared reconstruction error of each channel


@torch.no_grad()
def score_chunks(
    model: AnomalyTransformer,
    chunks: Iterable[np.ndarray],
    *,
    batch_size: int = 128,
    variant: str = "paper",
    temperature: float = 50.0,
    device: torch.device | None = None,
    amp: bool = False,
) -> Iterator[PointValues]:
    """Score a normalised series that arrives as consecutive (n_i, C) chunks; yield PointValues in order.

    The windows and batches are exactly those of score_series (non-overlapping windows from the
    start, one last window aligned to the end, batches of batch_size in order), so the scores are
    bit-identical to score_series whatever the chunk sizes, while memory holds only one chunk, one
    batch and the last window.
    """
    device = device or next(model.parameters()).device
    win_size = model.config.win_size
    model.eval()
    pending: np.ndarray | None = None  # rows not yet inside a full window
    last_window: np.ndarray | None = None  # the latest full window: the tail window may reach back into it
    batch: list[np.ndarray] = []
    seen = 0

    def run(windows: list[np.ndarray], keep_last: int | None = None) -> PointValues:
        inputs = torch.from_numpy(np.stack(windows)).to(device)
        with autocast_context(device, amp):
            reconstruction, per_layer = model(inputs)
            scores = anomaly_score(inputs, reconstruction, per_layer, variant, temperature)
        errors = ((reconstruction.float() - inputs.float()) ** 2).cpu().numpy()
        scores = scores.float().cpu().numpy()
        if keep_last is None:
            return PointValues(scores.reshape(-1), errors.reshape(-1, errors.shape[-1]))
        # The tail window contributes only the points the regular windows did not reach.
        head_scores, head_errors = scores[:-1].reshape(-1), errors[:-1].reshape(-1, errors.shape[-1])
        return PointValues(
            np.concatenate([head_scores, scores[-1, win_size - keep_last :]]),
            np.concatenate([head_errors, errors[-1, win_size - keep_last :]]),
        )

    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        seen += len(chunk)
        pending = chunk if pending is None else np.concatenate([pending, chunk])
        n_full = len(pending) // win_size
        for index in range(n_full):
            last_window = pending[index * win_size : (index + 1) * win_size]
            batch.append(last_window)
            if len(batch) == batch_size:
                yield run(batch)
                batch = []
        pending = pending[n_full * win_size :].copy()  # a copy, so the consumed chunk can be freed
    check_long_enough(seen, win_size, "the series")
    remainder = 0 if pending is None else len(pending)
    if remainder:
        batch.append(np.concatenate([last_window[remainder:], pending]))
    if batch:
        yield run(batch, keep_last=remainder or None)


def score_series_with_errors(
    model: AnomalyTransformer,
    series: np.ndarray,
    *,
    batch_size: int = 128,
    variant: str = "paper",
    temperature: float = 50.0,
    device: torch.device | None = None,
    amp: bool = False,
) -> PointValues:
    """score_series's scores (bit-identical) plus each point's per-channel squared reconstruction error."""
    parts = list(
        score_chunks(
            model, [series], batch_size=batch_size, variant=variant, temperature=temperature, device=device, amp=amp
        )
    )
    return PointValues(np.concatenate([p.scores for p in parts]), np.concatenate([p.errors for p in parts]))
