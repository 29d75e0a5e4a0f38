"""The evaluation figure: scores over time (whole test split and a zoomed detail) and PR curves."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import precision_recall_curve

from evaluation.metrics import label_segments
from evaluation.result import Evaluation

if TYPE_CHECKING:
    from evaluation.incidents import Incident

DETAIL_POINTS = 2000  # length of the zoomed stretch when the test split is long


def _detail_range(labels: np.ndarray | None, predictions: np.ndarray) -> tuple[int, int]:
    """A stretch around the first labelled segment the model flagged (else the first one, else the start)."""
    length = len(predictions)
    segments = label_segments(labels) if labels is not None else np.zeros((0, 2), dtype=int)
    hit = [s for s in segments if predictions[s[0] : s[1]].any()]
    chosen = hit[0] if hit else (segments[0] if len(segments) else (0, 0))
    centre = (chosen[0] + chosen[1]) // 2
    start = int(np.clip(centre - DETAIL_POINTS // 2, 0, max(length - DETAIL_POINTS, 0)))
    return start, min(start + DETAIL_POINTS, length)


def _draw_scores(axis, evaluation: Evaluation, start: int, stop: int, title: str) -> None:
    model = evaluation.model
    time = np.arange(start, stop)
    scores = model.scores[start:stop]
    axis.plot(time, scores, linewidth=0.6, color="tab:blue", label="anomaly score")
    # Each point's own threshold: the decision rule raises it with recent scores; a flat line misplaces flags.
    axis.plot(time, model.thresholds[start:stop], color="tab:red", linestyle="--", linewidth=1, label="threshold",
              drawstyle="steps-mid")  # fmt: skip
    flagged = np.flatnonzero(model.predictions[start:stop])
    axis.scatter(time[flagged], scores[flagged], s=8, color="tab:red", zorder=3, label="flagged")
    labels = evaluation.labels
    if labels is not None and labels[start:stop].any():
        axis.fill_between(
            time,
            0,
            1,
            where=labels[start:stop].astype(bool),
            transform=axis.get_xaxis_transform(),
            color="tab:orange",
            alpha=0.3,
            linewidth=0,
            label="labelled anomaly",
        )
    axis.set_yscale("symlog", linthresh=max(abs(model.threshold.value), 1e-12))
    axis.set_xlim(start, stop - 1)
    axis.set_xlabel("test time step")
    axis.set_ylabel("score (symlog)")
    axis.set_title(title, fontsize=10)


def plot_scores(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    length = len(evaluation.model.scores)
    has_labels = evaluation.labels is not None and evaluation.labels.any()
    figure = plt.figure(figsize=(14, 7.5))
    grid = figure.add_gridspec(2, 3, height_ratios=[1, 1])
    overview = figure.add_subplot(grid[0, :])
    _draw_scores(
        overview,
        evaluation,
        0,
        length,
        textwrap.fill(f"{evaluation.dataset}: {evaluation.scoring.score} score on the test split, "
                      f"threshold = {evaluation.model.threshold.rule}", 160),  # a rule in words can be long
    )
    overview.legend(loc="upper right", fontsize=8, ncol=4)

    detail = figure.add_subplot(grid[1, :2] if has_labels else grid[1, :])
    start, stop = _detail_range(evaluation.labels, evaluation.model.predictions)
    _draw_scores(detail, evaluation, start, stop, f"detail: steps {start} to {stop - 1}")

    if has_labels:
        curves = figure.add_subplot(grid[1, 2])
        for name, method in evaluation.methods.items():
            precision, recall, _ = precision_recall_curve(evaluation.labels, method.scores)
            area = method.metrics.get("pr_auc", float("nan"))
            curves.plot(recall, precision, linewidth=1.2, label=f"{name} (PR-AUC {area:.3f})")
        curves.axhline(evaluation.labels.mean(), color="grey", linestyle=":", linewidth=1, label="anomaly share")
        curves.set_xlim(0, 1)
        curves.set_ylim(0, 1.02)
        curves.set_xlabel("recall (point-wise)")
        curves.set_ylabel("precision (point-wise)")
        curves.set_title("precision-recall, no point adjustment", fontsize=10)
        curves.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def entity_figure_png(
    scores: np.ndarray, thresholds: np.ndarray, labels: np.ndarray | None, incidents: list[Incident], title: str
) -> bytes:
    """One entity's TEST score with its threshold, labelled segments shaded and incidents marked, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time = np.arange(len(scores))
    figure, axis = plt.subplots(figsize=(11, 2.4))
    axis.plot(time, scores, linewidth=0.6, color="tab:blue", label="score")
    axis.step(time, thresholds, where="mid", color="tab:red", linestyle="--", linewidth=1, label="threshold")
    if labels is not None and labels.any():
        axis.fill_between(time, 0, 1, where=labels.astype(bool), transform=axis.get_xaxis_transform(),
                          color="tab:orange", alpha=0.3, linewidth=0, label="labelled anomaly")  # fmt: skip
    for number, incident in enumerate(incidents):
        # A band along the top: the score under an incident stays visible.
        axis.axvspan(incident.start - 0.5, incident.end + 0.5, ymin=0.92, ymax=1.0, color="tab:red", linewidth=0,
                     label="incident" if number == 0 else None)  # fmt: skip
    finite = thresholds[np.isfinite(thresholds)]
    axis.set_yscale("symlog", linthresh=max(float(np.abs(finite).min()) if finite.size else 1.0, 1e-12))
    axis.set_xlim(0, max(len(scores) - 1, 1))
    axis.set_xlabel("test time step")
    axis.set_title(title, fontsize=9, loc="left")
    axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncol=4, frameon=False)  # above the plot
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()
