"""Anomaly-Attention (paper §3.1): series association, learned sigma, Gaussian prior association."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


class Associations(NamedTuple):
    """What one anomaly-attention layer exposes besides its output."""

    series: torch.Tensor  # S, (B, H, L, L): rows sum to 1
    prior: torch.Tensor  # P, (B, H, L, L): rows sum to 1
    sigma: torch.Tensor  # (B, H, L): the learned scale of each query step's Gaussian


def squash_sigma(raw: torch.Tensor) -> torch.Tensor:
    """The reference squashing: sigma = 3^(sigmoid(5 s) + 1e-5) - 1, in (~1.1e-5, ~2)."""
    return torch.pow(3.0, torch.sigmoid(5.0 * raw) + 1e-5) - 1.0


class _PriorAssociation(torch.autograd.Function):
    """softmax_j(-d_ij^2 / (2 sigma_i^2)) with its gradient to sigma written out.

    Backward, with A = P * grad:
    d/d sigma_i = (sum_j A_ij d_ij^2 - sum_j A_ij * sum_j P_ij d_ij^2) / sigma_i^3,
    four passes over (B, H, L, L) where autograd would take about ten and keep the exponent.
    """

    @staticmethod
    def forward(ctx, sigma: torch.Tensor, square_distance: torch.Tensor) -> torch.Tensor:
        scale = sigma.square().reciprocal_().mul_(-0.5).unsqueeze(-1)  # -1 / (2 sigma^2), (B, H, L, 1)
        # softmax's vectorised exp, not exp_: the exponents reach -1e10, where a plain exp slows down tenfold
        prior = torch.softmax(torch.mul(square_distance, scale), dim=-1)
        ctx.save_for_backward(sigma, square_distance, prior)
        return prior

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        sigma, square_distance, prior = ctx.saved_tensors
        weighted = prior * grad
        row = weighted.sum(dim=-1)
        spread = weighted.mul_(square_distance).sum(dim=-1)
        mean_square = (prior * square_distance).sum(dim=-1)
        return (spread - row * mean_square) / sigma.pow(3), None


def prior_association(sigma: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Row-normalised Gaussian kernel over |i - j| with a per-row scale.

    sigma: (B, H, L); distance: (L, L) of |i - j| -> (B, H, L, L).
    The Gaussian's 1 / (sqrt(2 pi) sigma) factor is constant along a row, so normalising the row
    cancels it; a softmax of the exponent is that same normalisation, computed without underflow.
    """
    return _PriorAssociation.apply(sigma, distance.square())


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

    def _joint_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Q (with the 1/sqrt(head_dim) of the scores folded in), K, V and sigma as one matrix: one product."""
        scale = 1.0 / math.sqrt(self.query.out_features // self.n_heads)
        parts = (self.key, self.value, self.sigma_projection)
        weight = torch.cat([self.query.weight * scale, *(part.weight for part in parts)])
        bias = torch.cat([self.query.bias * scale, *(part.bias for part in parts)])
        return weight, bias

    def forward(self, x: torch.Tensor, associations: bool = True) -> tuple[torch.Tensor, Associations | None]:
        """associations=False leaves out sigma and the prior, which only the losses and some scores read."""
        batch, length, d_model = x.shape
        heads, head_dim = self.n_heads, d_model // self.n_heads
        # split, not slicing: a slice's backward fills a zero tensor of the whole product for each part
        qkv, raw_sigma = F.linear(x, *self._joint_projection()).split([3 * d_model, heads], dim=-1)
        # One copy into (3, B, H, L, E), so that both products below are plain batched matrix products.
        q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).contiguous().unbind(0)

        series = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1)  # (B, H, L, L)
        context = (self.dropout(series).to(v.dtype) @ v).transpose(1, 2).reshape(batch, length, d_model)
        output = self.out(context)
        if not associations:
            return output, None

        # sigma in float32: under fp16 autocast 3^x - 1 near zero loses every digit.
        sigma = squash_sigma(raw_sigma.float().transpose(1, 2))  # (B, H, L)
        prior = prior_association(sigma, self.distance[:length, :length])
        return output, Associations(series=series, prior=prior, sigma=sigma)
