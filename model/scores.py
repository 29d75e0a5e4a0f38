"""The registry of anomaly scores: each turns one batch of model outputs into a score per time step.

Adding a score is one `Score` entry in `SCORES` below. Its function receives everything the model
computed for the batch (`WindowOutputs`) and the scoring settings, and returns (B, L) scores,
higher meaning more anomalous. `channels` and `smooth` are the defaults the score brings when
the user names neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from model.attention import Associations
from model.discrepancy import association_discrepancy


class WindowOutputs(NamedTuple):
    """What the model computed for a batch of windows."""

    x: torch.Tensor  # (B, L, C) the normalised input windows
    reconstruction: torch.Tensor  # (B, L, C)
    per_layer: list[Associations]  # series, prior and sigma of every layer, each (B, H, L, L) or (B, H, L)


def reconstruction_error(outputs: WindowOutputs, channels: Sequence[int] | None) -> torch.Tensor:
    """Each step's squared reconstruction error averaged over `channels` (None: all): (B, L)."""
    x, reconstruction = outputs.x, outputs.reconstruction
    if channels is not None:
        x, reconstruction = x[..., list(channels)], reconstruction[..., list(channels)]
    return torch.mean((reconstruction.float() - x.float()) ** 2, dim=-1)


def paper_score(outputs: WindowOutputs, channels: Sequence[int] | None, temperature: float) -> torch.Tensor:
    """The reference's criterion: softmax over the window of (-AssDis * temperature), times the step error."""
    discrepancy = association_discrepancy(outputs.per_layer)  # (B, L)
    return torch.softmax(-discrepancy * temperature, dim=-1) * reconstruction_error(outputs, channels)


def reconstruction_score(outputs: WindowOutputs, channels: Sequence[int] | None, temperature: float) -> torch.Tensor:
    return reconstruction_error(outputs, channels)


def discrepancy_score(outputs: WindowOutputs, channels: Sequence[int] | None, temperature: float) -> torch.Tensor:
    """-AssDis: anomalies keep attention close to the adjacent-step prior, so a small discrepancy is suspicious."""
    return -association_discrepancy(outputs.per_layer)


@dataclass(frozen=True)
class Score:
    name: str
    compute: Callable[[WindowOutputs, Sequence[int] | None, float], torch.Tensor]  # (outputs, channels, T) -> (B, L)
    channels: str  # default channel spec: all, target, or names/indices
    smooth: int  # default centred moving-average span; 0: none
    summary: str
    needs_associations: bool = True  # False: the model may skip sigma and the prior, which it leaves unread


SCORES: dict[str, Score] = {
    score.name: score
    for score in (
        Score("paper", paper_score, "all", 0, "softmax(-AssDis x T) x reconstruction error (the paper's criterion)"),
        Score("reconstruction", reconstruction_score, "target", 50, "reconstruction error of the target channels",
              needs_associations=False),
        Score("discrepancy", discrepancy_score, "target", 50, "minus the association discrepancy"),
    )
}
# The score that wins under the honest protocol on the development data (docs/research-log.md).
DEFAULT_SCORE = "reconstruction"
