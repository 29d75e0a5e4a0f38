"""Score a normalised series with a trained model: every point once, from non-overlapping windows."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_factory.windows import WindowDataset, scoring_starts, stitch_window_values
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
