"""Evaluate a checkpoint on its dataset's test split and write the evaluation artifacts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_factory.atomic import atomic_path, ensure_writable_dir
from data_factory.registry import load_dataset
from evaluation.metrics import detection_metrics
from evaluation.thresholds import percentile_threshold
from model.checkpoint import load_checkpoint, model_from_checkpoint, normalizer_from_checkpoint
from model.scoring import resolve_device, score_series

METRIC_ROWS = (
    ("precision", "point precision"),
    ("recall", "point recall"),
    ("f1", "point F1"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("pa_precision", "PA precision"),
    ("pa_recall", "PA recall"),
    ("pa_f1", "PA F1"),
    ("predicted_ratio", "flagged share"),
)


@dataclass
class Evaluation:
    dataset: str
    score_variant: str
    threshold: float
    threshold_percentile: float
    train_scores: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None
    metrics: dict  # {"model": {...}, "random": {...}}; empty without labels


def random_baseline(labels: np.ndarray, n_train: int, percentile: float, seed: int) -> dict:
    """A uniformly random score of the same length, thresholded by the same rule on random train scores."""
    rng = np.random.default_rng(seed)
    train_scores, test_scores = rng.random(n_train), rng.random(len(labels))
    predictions = test_scores > percentile_threshold(train_scores, percentile)
    return detection_metrics(labels, test_scores, predictions)


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    dataset_name: str,
    data_dir: str | Path | None = None,
    threshold_percentile: float = 99.0,
    batch_size: int = 128,
    device: str = "auto",
    seed: int = 0,
    score_variant: str | None = None,
    entity: str | None = None,
) -> Evaluation:
    """Score TRAIN and TEST with the checkpoint; threshold at a percentile of the TRAIN scores."""
    percentile_threshold(np.zeros(1), threshold_percentile)  # reject a bad percentile before any work
    dataset = load_dataset(dataset_name, data_dir, entity)
    checkpoint = load_checkpoint(checkpoint_path, dataset)
    torch_device = resolve_device(device)
    model = model_from_checkpoint(checkpoint, torch_device)
    normalizer = normalizer_from_checkpoint(checkpoint)
    settings = checkpoint.get("train_config", {})
    options = {
        "batch_size": batch_size,
        "variant": score_variant or settings.get("score_variant", "paper"),
        "temperature": settings.get("temperature", 50.0),
        "device": torch_device,
    }
    train_scores = score_series(model, normalizer.transform(dataset.train), **options)
    scores = score_series(model, normalizer.transform(dataset.test), **options)
    threshold = percentile_threshold(train_scores, threshold_percentile)
    predictions = (scores > threshold).astype(np.uint8)

    metrics = {}
    if dataset.test_labels is not None:
        metrics = {
            "model": detection_metrics(dataset.test_labels, scores, predictions),
            "random": random_baseline(dataset.test_labels, len(train_scores), threshold_percentile, seed),
        }
    return Evaluation(
        dataset=dataset.name,
        score_variant=options["variant"],
        threshold=threshold,
        threshold_percentile=threshold_percentile,
        train_scores=train_scores,
        scores=scores,
        predictions=predictions,
        labels=dataset.test_labels,
        metrics=metrics,
    )


def format_table(evaluation: Evaluation) -> str:
    header = (
        f"{evaluation.dataset}, {evaluation.score_variant} score: threshold {evaluation.threshold:.6g} = "
        f"{evaluation.threshold_percentile:g}th percentile of TRAIN scores (no test data used)"
    )
    if not evaluation.metrics:
        flagged = int(evaluation.predictions.sum())
        return f"{header}\nno test labels: {flagged} of {len(evaluation.predictions)} points flagged"
    lines = [header, f"{'metric':<16}{'model':>10}{'random':>10}"]
    for key, label in METRIC_ROWS:
        lines.append(f"{label:<16}{evaluation.metrics['model'][key]:>10.4f}{evaluation.metrics['random'][key]:>10.4f}")
    lines.append("PA = point-adjusted: one flagged point marks its whole labelled segment as found.")
    return "\n".join(lines)


def write_artifacts(evaluation: Evaluation, output_dir: str | Path) -> dict[str, Path]:
    """Write {DATASET}_evaluation.npz, {DATASET}_metrics.json and {DATASET}_scores.png atomically."""
    folder = ensure_writable_dir(output_dir)
    paths = {
        "npz": folder / f"{evaluation.dataset}_evaluation.npz",
        "json": folder / f"{evaluation.dataset}_metrics.json",
        "plot": folder / f"{evaluation.dataset}_scores.png",
    }
    summary = {
        "dataset": evaluation.dataset,
        "score_variant": evaluation.score_variant,
        "threshold": evaluation.threshold,
        "threshold_rule": f"{evaluation.threshold_percentile:g}th percentile of TRAIN scores",
        "n_test": int(len(evaluation.scores)),
        "n_flagged": int(evaluation.predictions.sum()),
        "metrics": evaluation.metrics,
    }
    labels = evaluation.labels if evaluation.labels is not None else np.zeros(0, dtype=np.uint8)
    with atomic_path(paths["npz"]) as temp, open(temp, "wb") as handle:
        np.savez(
            handle,
            scores=evaluation.scores,
            train_scores=evaluation.train_scores,
            predictions=evaluation.predictions,
            labels=labels,
            threshold=np.float64(evaluation.threshold),
            metrics_json=np.array(json.dumps(summary)),
        )
    with atomic_path(paths["json"]) as temp:
        temp.write_text(json.dumps(summary, indent=2) + "\n")
    with atomic_path(paths["plot"]) as temp:
        plot_scores(evaluation, temp)
    return paths


def plot_scores(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(12, 3.5))
    time = np.arange(len(evaluation.scores))
    axis.plot(time, evaluation.scores, linewidth=0.6, color="tab:blue", label="anomaly score")
    axis.axhline(evaluation.threshold, color="tab:red", linestyle="--", linewidth=1, label="threshold")
    if evaluation.labels is not None and evaluation.labels.any():
        axis.fill_between(
            time,
            0,
            1,
            where=evaluation.labels.astype(bool),
            transform=axis.get_xaxis_transform(),
            color="tab:orange",
            alpha=0.25,
            label="labelled anomaly",
        )
    axis.set_yscale("symlog", linthresh=max(evaluation.threshold, 1e-12))
    axis.set_xlabel("test time step")
    axis.set_ylabel("score (symlog)")
    axis.set_title(f"{evaluation.dataset}: test anomaly scores")
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
