"""Association discrepancy (paper §3.1) and the minimax losses (§3.2); the scores (§3.3) are in model/scores.py."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from model.attention import Associations

# The reference adds this inside both logs; keeping it keeps the losses and scores comparable.
LOG_EPSILON = 1e-4


def log_association(association: torch.Tensor) -> torch.Tensor:
    return torch.log(association + LOG_EPSILON)


def kl_per_step(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of each query row, summed over keys and averaged over heads: (B, H, L, L) -> (B, L)."""
    return (p * (log_association(p) - log_association(q))).sum(dim=-1).mean(dim=1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) per time step: (B, H, L, L) -> (B, L).

    Written as sum (p - q)(log p - log q), one pass instead of two. This is the definition, with
    autograd's gradients; the training loss and the scores use `paired_discrepancy`, which gives the
    same values and gradients with fewer passes over the (B, H, L, L) tensors.
    """
    return ((p - q) * (log_association(p) - log_association(q))).sum(dim=-1).mean(dim=1)


def _log_ratio(series: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """log(S + eps) - log(P + eps) as log((S + eps) / (P + eps)): one logarithm, the costliest pass, not two."""
    ratio = torch.add(series, LOG_EPSILON)
    return ratio.div_(torch.add(prior, LOG_EPSILON)).log_()


def _discrepancy_value(series: torch.Tensor, prior: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
    # sum_j (S - P)(log S - log P) is symmetric_kl(P, S): both factors change sign.
    return ((series - prior) * log_ratio).sum(dim=-1).mean(dim=1)


class _PairedDiscrepancy(torch.autograd.Function):
    """The discrepancy of (S, P) per step, computed once and returned twice: the first copy's gradient
    reaches S only (P held fixed), the second's P only (S held fixed), which are the minimax's two
    stop-gradient terms. The gradients are written out, so autograd keeps three tensors per layer
    (S, P, the log ratio) instead of every intermediate of two symmetric KLs.

    d/dS_j = log_ratio_j + (S_j - P_j) / (S_j + eps);  d/dP_j = -log_ratio_j - (S_j - P_j) / (P_j + eps).
    """

    @staticmethod
    def forward(ctx, series: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_ratio = _log_ratio(series, prior)
        value = _discrepancy_value(series, prior, log_ratio)
        ctx.save_for_backward(series, prior, log_ratio)
        ctx.set_materialize_grads(False)  # an unused side arrives as None and costs nothing
        return value, value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_series_side: torch.Tensor | None, grad_prior_side: torch.Tensor | None):
        series, prior, log_ratio = ctx.saved_tensors
        heads = series.shape[1]
        difference = series - prior
        grads = []
        for tensor, grad, sign, wanted in (
            (series, grad_series_side, 1.0, ctx.needs_input_grad[0]),
            (prior, grad_prior_side, -1.0, ctx.needs_input_grad[1]),
        ):
            if grad is None or not wanted:
                grads.append(None)
                continue
            part = torch.add(tensor, LOG_EPSILON)
            torch.div(difference, part, out=part)
            part.add_(log_ratio).mul_((grad * (sign / heads))[:, None, :, None])  # the mean over heads, per step
            grads.append(part)
        return tuple(grads)


def paired_discrepancy(series: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(symmetric_kl(S, sg(P)), symmetric_kl(P, sg(S))) per step, (B, L) each, from one pass."""
    return _PairedDiscrepancy.apply(series, prior)


def association_discrepancy(per_layer: list[Associations]) -> torch.Tensor:
    """AssDis(P, S; X) per time step, summed over layers: (B, L). No gradient is stopped here."""
    if torch.is_grad_enabled():
        return sum(symmetric_kl(layer.prior, layer.series) for layer in per_layer)
    return sum(_discrepancy_value(layer.series, layer.prior, _log_ratio(layer.series, layer.prior))
               for layer in per_layer)  # fmt: skip


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
        to_series, to_prior = paired_discrepancy(layer.series, layer.prior)
        series_side = series_side + to_series.mean()
        prior_side = prior_side + to_prior.mean()
    n_layers = len(per_layer)
    return MinimaxLosses(
        reconstruction=rec,
        loss1=rec - k * series_side / n_layers,
        loss2=rec + k * prior_side / n_layers,
    )
