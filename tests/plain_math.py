"""The Anomaly Transformer written the plain way, from its definition: every product as its own
einsum, the prior as a softmax of -|i - j|^2 / (2 sigma^2), the losses as the reference writes them
(two KL terms per side, autograd's gradients). It reads the parameters of a model/ AnomalyTransformer,
so that the fast kernels there can be held against it on identical weights.
"""

from __future__ import annotations

import math

import torch

from model.attention import squash_sigma
from model.transformer import AnomalyTransformer

EPSILON = 1e-4  # the reference's, inside both logs


def plain_forward(model: AnomalyTransformer, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple]]:
    """(reconstruction, [(series, prior, sigma) per layer])."""
    hidden = model.embedding(x)
    per_layer = []
    for layer in model.layers:
        attention = layer.attention
        batch, length, d_model = hidden.shape
        heads = attention.n_heads
        head_dim = d_model // heads
        q = attention.query(hidden).view(batch, length, heads, head_dim)
        k = attention.key(hidden).view(batch, length, heads, head_dim)
        v = attention.value(hidden).view(batch, length, heads, head_dim)
        series = torch.softmax(torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(head_dim), dim=-1)
        context = torch.einsum("bhls,bshe->blhe", series, v).reshape(batch, length, d_model)
        sigma = squash_sigma(attention.sigma_projection(hidden).transpose(1, 2))
        steps = torch.arange(length, dtype=x.dtype)
        distance = (steps[:, None] - steps[None, :]).abs()
        prior = torch.softmax(-(distance**2) / (2 * sigma[..., None] ** 2), dim=-1)
        attended = layer.norm_attention(hidden + attention.out(context))
        feed_forward = layer.feed_forward(attended.transpose(1, 2)).transpose(1, 2)  # the Conv1d modules
        hidden = layer.norm_feed_forward(attended + feed_forward)
        per_layer.append((series, prior, sigma))
    return model.projection(model.norm(hidden)), per_layer


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The reference's my_kl_loss: KL(p || q) per query row, averaged over heads: (B, L)."""
    return torch.sum(p * (torch.log(p + EPSILON) - torch.log(q + EPSILON)), dim=-1).mean(dim=1)


def plain_losses(model: AnomalyTransformer, x: torch.Tensor, k: float) -> tuple[torch.Tensor, ...]:
    """(reconstruction MSE, loss1, loss2) as the reference's training step computes them."""
    reconstruction, per_layer = plain_forward(model, x)
    rec = torch.mean((reconstruction - x) ** 2)
    series_loss, prior_loss = 0.0, 0.0
    for series, prior, _ in per_layer:
        series_loss = series_loss + torch.mean(kl(series, prior.detach())) + torch.mean(kl(prior.detach(), series))
        prior_loss = prior_loss + torch.mean(kl(prior, series.detach())) + torch.mean(kl(series.detach(), prior))
    n_layers = len(per_layer)
    return rec, rec - k * series_loss / n_layers, rec + k * prior_loss / n_layers


def plain_discrepancy(model: AnomalyTransformer, x: torch.Tensor) -> torch.Tensor:
    """AssDis per step, summed over layers: (B, L)."""
    return sum(kl(prior, series) + kl(series, prior) for series, prior, _ in plain_forward(model, x)[1])
