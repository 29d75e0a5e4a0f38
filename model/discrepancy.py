"""Association discrepancy (paper §3.1) and the minimax losses (§3.2); the scores (§3.3) are in model/scores.py."""

from __future__ import annotations

from typing import NamedTuple

import torch

from model.attention import Associations

# The reference adds this inside both logs; keeping it keeps the losses and scores comparable.
LOG_EPSILON = 1e-4


def log_association(association: torch.Tensor) -> torch.Tensor:
    return torch.log(association + LOG_EPSILON)


def kl_per_step(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of each query row, summed over keys and averaged over heads: (B, H, L, L) -> (B, L)."""
    return (p * (log_association(p) - log_association(q))).sum(dim=-1).mean(dim=1)


def symmetric_kl(
    p: torch.Tensor, q: torch.Tensor, log_p: torch.Tensor | None = None, log_q: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(p || q) + KL(q || p) per time step: (B, H, L, L) -> (B, L).

    Written as sum (p - q)(log p - log q), one pass instead of two; callers that already hold
    the logs pass them in, so each layer takes two logarithms in all.
    """
    log_p = log_association(p) if log_p is None else log_p
    log_q = log_association(q) if log_q is None else log_q
    return ((p - q) * (log_p - log_q)).sum(dim=-1).mean(dim=1)


def association_discrepancy(per_layer: list[Associations]) -> torch.Tensor:
    """AssDis(P, S; X) per time step, summed over layers: (B, L). No gradient is stopped here."""
    return sum(symmetric_kl(layer.prior, layer.series) for layer in per_layer)


class MinimaxLosses(NamedTuple):
    reconstruction: torch.Tensor  # MSE over the batch
    loss1: torch.Tensor  # maximise phase: rec - k * AssDis(sg(P), S); trains the series side
    loss2: torch.Tensor  # minimise phase: rec + k * AssDis(P, sg(S)); trains the prior side

    @property
    def total(self) -> torch.Tensor:
        """loss1 + loss2: one backward of this equals the reference's two backward passes."""
        return self.loss1 + self.loss2


def minimax_losses(
    x: torch.Tensor, reconstruction: torch.Tensor, per_layer: list[Associations], k: float
) -> MinimaxLosses:
    """Both phases of the minimax strategy with their stop-gradients; discrepancies averaged over layers."""
    rec = torch.mean((reconstruction.float() - x.float()) ** 2)
    series_side, prior_side = 0.0, 0.0
    for layer in per_layer:
        series, prior = layer.series, layer.prior
        log_series, log_prior = log_association(series), log_association(prior)
        series_side = series_side + symmetric_kl(series, prior.detach(), log_series, log_prior.detach()).mean()
        prior_side = prior_side + symmetric_kl(prior, series.detach(), log_prior, log_series.detach()).mean()
    n_layers = len(per_layer)
    return MinimaxLosses(
        reconstruction=rec,
        loss1=rec - k * series_side / n_layers,
        loss2=rec + k * prior_side / n_layers,
    )
