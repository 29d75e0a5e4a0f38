"""Association maps: series association S, prior P and sigma of the highest-scoring windows and of
typical normal windows, saved per layer and head, and a figure that compares one of each.

The paper's claim (§3.1): a normal step spreads its series association over the whole window,
far from the adjacent-step prior, while an anomalous step attends mostly to its neighbours, so
its S stays close to P and its association discrepancy is small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from data_factory.windows import scoring_starts
from model.discrepancy import LOG_EPSILON, association_discrepancy
from model.transformer import AnomalyTransformer
from runtime.errors import UserInputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONTEXT_WINDOWS = 2  # windows shown on each side of the anomalous one in the discrepancy panel
GROUPS = ("anomalous", "normal")  # npz key prefixes: the highest-scoring windows, and quiet ones


def window_kind(flagged: bool, labelled: bool | None) -> str:
    """What a window is, by its flags and (where the test split has them) its labels.

    A window is flagged or labelled when any of its points is; `labelled` None means no labels.
    """
    if labelled is None:
        return "flagged" if flagged else "normal"
    if labelled:
        return "anomalous" if flagged else "anomalous, not flagged"
    return "false positive" if flagged else "normal"


@torch.no_grad()
def window_associations(
    model: AnomalyTransformer, series: np.ndarray, starts: np.ndarray, device: torch.device | None = None
) -> dict[str, np.ndarray]:
    """S, P (n, layers, heads, L, L), sigma (n, layers, heads, L) and AssDis (n, L) of the windows at `starts`."""
    device = device or next(model.parameters()).device
    win_size = model.config.win_size
    windows = torch.from_numpy(np.stack([series[start : start + win_size] for start in starts])).to(device)
    model.eval()
    _, per_layer = model(windows)
    return {
        "starts": np.asarray(starts, dtype=np.int64),
        "series": torch.stack([layer.series for layer in per_layer], dim=1).float().cpu().numpy(),
        "prior": torch.stack([layer.prior for layer in per_layer], dim=1).float().cpu().numpy(),
        "sigma": torch.stack([layer.sigma for layer in per_layer], dim=1).float().cpu().numpy(),
        "discrepancy": association_discrepancy(per_layer).float().cpu().numpy(),
    }


def choose_windows(
    scores: np.ndarray, win_size: int, n: int, predictions: np.ndarray, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Starts of the n scoring windows with the highest peak score, and of n normal windows.

    Normal windows hold no flagged and no labelled point; of those, the ones whose peak score is
    closest to their median are taken, so they show a typical window rather than the calmest one.
    n is capped at half the windows, so that both groups can be filled.
    """
    starts = scoring_starts(len(scores), win_size)
    if len(starts) < 2:
        raise UserInputError(f"--explain needs a test split of at least two windows of {win_size} steps")
    n = min(n, len(starts) // 2)
    peaks = np.array([scores[start : start + win_size].max() for start in starts])
    top = np.argsort(-peaks, kind="stable")[:n]
    quiet = np.array([not predictions[start : start + win_size].any() for start in starts])
    if labels is not None:
        quiet &= np.array([not labels[start : start + win_size].any() for start in starts])
    rest = np.setdiff1d(np.arange(len(starts)), top)
    candidates = rest[quiet[rest]] if quiet[rest].any() else rest
    typical = candidates[np.argsort(np.abs(peaks[candidates] - np.median(peaks[candidates])), kind="stable")[:n]]
    return starts[top], starts[typical]


@dataclass
class AssociationMaps:
    dataset: str
    win_size: int
    threshold: float  # the rule's TRAIN threshold: its floor; each point's own is stretch["thresholds"]
    groups: dict[str, dict[str, np.ndarray]]  # "anomalous", "normal" -> window_associations(...), "scores", "kinds"
    stretch: dict[str, np.ndarray]  # steps around the top anomalous window: start, discrepancy, scores, ...

    def arrays(self) -> dict[str, np.ndarray]:
        """The flat name -> array mapping saved to the npz (see the README's Artifacts table)."""
        flat = {"win_size": np.int64(self.win_size), "threshold": np.float64(self.threshold)}
        for group, values in self.groups.items():
            flat.update({f"{group}_{name}": array for name, array in values.items()})
        flat.update({f"stretch_{name}": array for name, array in self.stretch.items()})
        return flat


def explain_windows(
    model: AnomalyTransformer,
    series: np.ndarray,
    scores: np.ndarray,
    predictions: np.ndarray,
    labels: np.ndarray | None,
    n: int,
    dataset: str,
    device: torch.device | None = None,
    *,
    threshold: float,
    thresholds: np.ndarray | None = None,
) -> AssociationMaps:
    """Associations of the n highest-scoring and n normal windows of a normalised series, plus the
    per-step discrepancy of the stretch around the highest-scoring window.

    `predictions` are `scores > thresholds` (each point's own, as the decision rule gave them; None: `threshold`,
    the rule's TRAIN threshold, for every point); each window's kind (window_kind) follows its flags and labels.
    """
    win_size = model.config.win_size
    groups = {}
    for group, starts in zip(GROUPS, choose_windows(scores, win_size, n, predictions, labels), strict=True):
        values = window_associations(model, series, starts, device)
        values["scores"] = np.stack([scores[start : start + win_size] for start in starts])
        values["kinds"] = np.array(
            [
                window_kind(
                    bool(predictions[start : start + win_size].any()),
                    None if labels is None else bool(labels[start : start + win_size].any()),
                )
                for start in starts
            ]
        )
        groups[group] = values

    centre = int(groups["anomalous"]["starts"][0])
    stretch_starts = [
        centre + k * win_size
        for k in range(-CONTEXT_WINDOWS, CONTEXT_WINDOWS + 1)
        if 0 <= centre + k * win_size <= len(series) - win_size
    ]
    first, stop = stretch_starts[0], stretch_starts[-1] + win_size
    stretch = {
        "start": np.int64(first),
        "discrepancy": window_associations(model, series, np.array(stretch_starts), device)["discrepancy"].reshape(-1),
        "scores": scores[first:stop],
        "predictions": predictions[first:stop],
        "thresholds": (np.full(len(scores), threshold) if thresholds is None else np.asarray(thresholds))[first:stop],
        "labels": labels[first:stop] if labels is not None else np.zeros(0, dtype=np.uint8),
    }
    return AssociationMaps(dataset, win_size, float(threshold), groups, stretch)


def save_association_npz(maps: AssociationMaps, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **maps.arrays())


def _shade(axis, time: np.ndarray, mask: np.ndarray, color: str, label: str) -> None:
    if mask.any():
        axis.fill_between(
            time,
            0,
            1,
            where=mask.astype(bool),
            transform=axis.get_xaxis_transform(),
            color=color,
            alpha=0.25,
            linewidth=0,
            label=label,
        )


def association_figure(maps: AssociationMaps) -> Figure:
    """Heatmaps of S and P (mean over layers and heads) for a normal and the top-scoring window, on one
    shared log colour scale, above the discrepancy and the anomaly score over time around the top window,
    with the flagged points on the score and the threshold they cross. Each window is titled by its kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator

    win = maps.win_size
    panels = []
    for group, note in (("normal", ""), ("anomalous", " (highest score)")):
        start = int(maps.groups[group]["starts"][0])
        heading = f"{maps.groups[group]['kinds'][0]} window{note}, steps {start}-{start + win - 1}"
        for kind, title in (("series", "series association S"), ("prior", "prior association P")):
            panels.append((heading, title, maps.groups[group][kind][0].mean(axis=(0, 1))))
    # One norm for all four: colours compare across windows and between S and P. Weights under the
    # 1e-4 the discrepancy adds inside its logarithms (a far prior tail underflows to 0) show at that floor.
    norm = LogNorm(vmin=LOG_EPSILON, vmax=max(panel[2].max() for panel in panels))

    figure = plt.figure(figsize=(12, 13.5))
    grid = figure.add_gridspec(3, 3, width_ratios=[1, 1, 0.05], height_ratios=[1, 1, 0.8])
    image = None
    for index, (heading, title, matrix) in enumerate(panels):
        axis = figure.add_subplot(grid[index // 2, index % 2])
        shown = np.clip(matrix, LOG_EPSILON, None)
        image = axis.imshow(shown, norm=norm, cmap="viridis", origin="upper", interpolation="nearest")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(f"{heading}:\n{title}", fontsize=10)
        axis.set_xlabel("key step j within the window")
        axis.set_ylabel("query step i within the window")
    colorbar = figure.colorbar(image, cax=figure.add_subplot(grid[:2, 2]))
    colorbar.set_label("association weight, mean over layers and heads (each row sums to 1; log scale)")

    stretch = maps.stretch
    first = int(stretch["start"])
    time = np.arange(first, first + len(stretch["scores"]))
    axis = figure.add_subplot(grid[2, :2])
    axis.plot(time, stretch["discrepancy"], color="tab:blue", linewidth=1.2, label="association discrepancy")
    top_start = int(maps.groups["anomalous"]["starts"][0])
    top_kind = maps.groups["anomalous"]["kinds"][0]
    axis.axvspan(top_start, top_start + win - 1, color="tab:red", alpha=0.12, label=f"{top_kind} window above")
    if len(stretch["labels"]):
        _shade(axis, time, stretch["labels"], "tab:orange", "labelled anomaly")
    axis.set_xlim(time[0], time[-1])
    axis.set_xlabel("time step")
    axis.set_ylabel("AssDis (sum over layers)")
    axis.set_title(
        f"{maps.dataset}: discrepancy around the highest-scoring window (low = attention close to the prior)",
        fontsize=10,
    )
    score_axis = axis.twinx()
    score_axis.plot(time, stretch["scores"], color="grey", linewidth=0.8, alpha=0.8, label="anomaly score")
    score_axis.plot(time, stretch["thresholds"], color="tab:red", linestyle="--", linewidth=1, label="threshold",
                    drawstyle="steps-mid")  # each point's own, as the decision rule gave it
    flagged = np.flatnonzero(stretch["predictions"])
    score_axis.scatter(time[flagged], stretch["scores"][flagged], s=14, color="tab:red", zorder=3, label="flagged")
    score_axis.set_ylabel("anomaly score", color="grey")
    handles = axis.get_legend_handles_labels()
    extra = score_axis.get_legend_handles_labels()
    # Below the axes, so it never hides the curves.
    axis.legend(
        handles[0] + extra[0],
        handles[1] + extra[1],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
        ncol=6,
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout()
    return figure


def plot_association_maps(maps: AssociationMaps, path: Path) -> None:
    """Save association_figure(maps) as a PNG."""
    figure = association_figure(maps)
    import matplotlib.pyplot as plt  # after association_figure has chosen the Agg backend

    figure.savefig(path, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
