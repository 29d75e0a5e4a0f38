"""Anomaly-Attention (paper §3.1): series association, learned sigma, Gaussian prior association."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class Associations(NamedTuple):
    """What one anomaly-attention layer exposes besides its output."""

    series: torch.Tensor  # S, (B, H, L, L): rows sum to 1
    prior: torch.Tensor  # P, (B, H, L, L): rows sum to 1
    sigma: torch.Tensor  # (B, H, L): the learned scale of each query step's Gaussian


def squash_sigma(raw: torch.Tensor) -> torch.Tensor:
    """The reference squashing: sigma = 3^(sigmoid(5 s) + 1e-5) - 1, in (~1.1e-5, ~2)."""
    return torch.pow(3.0, torch.sigmoid(5.0 * raw) + 1e-5) - 1.0


def prior_association(sigma: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Row-normalised Gaussian kernel over |i - j| with a per-row scale.

    sigma: (B, H, L); distance: (L, L) -> (B, H, L, L).
    The Gaussian's 1 / (sqrt(2 pi) sigma) factor is constant along a row, so normalising the row
    cancels it; a softmax of the exponent is that same normalisation, computed without underflow.
    """
    exponent = -distance.square() / (2.0 * sigma.unsqueeze(-1).square())  # (B, H, L, L)
    return torch.softmax(exponent, dim=-1)


class AnomalyAttention(nn.Module):
    """Multi-head attention that also returns the series and prior associations."""

    def __init__(self, d_model: int, n_heads: int, win_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.sigma_projection = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        positions = torch.arange(win_size, dtype=torch.float32)
        # |i - j| once per module; broadcast against sigma, never repeated per batch or head.
        self.register_buffer("distance", (positions[:, None] - positions[None, :]).abs(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Associations]:
        batch, length, d_model = x.shape
        heads, head_dim = self.n_heads, d_model // self.n_heads
        q = self.query(x).view(batch, length, heads, head_dim)
        k = self.key(x).view(batch, length, heads, head_dim)
        v = self.value(x).view(batch, length, heads, head_dim)

        scores = torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(head_dim)  # (B, H, L, L)
        series = torch.softmax(scores.float(), dim=-1)
        context = torch.einsum("bhls,bshe->blhe", self.dropout(series).to(v.dtype), v)

        # sigma in float32: under fp16 autocast 3^x - 1 near zero loses every digit.
        sigma = squash_sigma(self.sigma_projection(x).float().transpose(1, 2))  # (B, H, L)
        prior = prior_association(sigma, self.distance[:length, :length])

        output = self.out(context.reshape(batch, length, d_model))
        return output, Associations(series=series, prior=prior, sigma=sigma)
