"""Evaluate a fleet bundle per entity: each entity's TEST rows scored by that entity's own model,
beside the baselines fitted on that entity's TRAIN, on the same points and with the same smoothing.

Two protocols, always labelled as such:
- per entity (TSB-AD's and Sarfraz et al.'s): every metric on each entity's own series, then the
  mean and standard deviation over the entities whose TEST holds both classes;
- whole series: the entities' scores concatenated in the dataset's order, each first z-scored
  with its own TRAIN scores' mean and std (so that models of different error scales are
  comparable; no test data used), and graded as one series with the full metric panel.
"""

from __future__ import annotations

import contextlib
import csv
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_factory.atomic import atomic_paths, ensure_writable_dir, json_text
from data_factory.errors import UserInputError
from data_factory.registry import load_dataset
from evaluation.baselines import DEFAULT_FLEET_BASELINES, baseline_scores
from evaluation.degenerate import degenerate_reason
from evaluation.metrics import pr_auc, precision_recall_f1, roc_auc
from evaluation.panel import metric_panel
from evaluation.report import check_scoring_flags, check_train_scores_finite, rank_non_finite
from evaluation.thresholds import percentile_threshold
from evaluation.tsb_vus import dominant_period, tsb_vus
from model.checkpoint import check_checkpoint_matches
from model.detector import Detector
from model.fleet import Fleet
from model.score_settings import override_score_settings
from model.scoring import resolve_device, smooth_scores
from model.workers import default_jobs, ignore_interrupt, one_thread, spawn_pool, stop_now

PER_ENTITY_METRICS = ("roc_auc", "pr_auc", "vus_pr", "vus_roc", "f1")
# The default --jobs leaves each worker this much memory: an SMD machine's baselines peak at about 1.5 GB.
EVALUATION_MEMORY_PER_JOB = 2 * 2**30


@dataclass
class EntityScores:
    entity: str
    labels: np.ndarray  # (N_test,) uint8
    train: dict[str, np.ndarray]  # method -> TRAIN scores
    test: dict[str, np.ndarray]  # method -> TEST scores
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # method -> metric -> value
    non_finite: dict[str, int] = field(default_factory=dict)  # method -> NaN/Inf TEST scores, ranked most anomalous
    failed: dict[str, str] = field(default_factory=dict)  # method -> why it could not run on this entity

    @property
    def graded(self) -> bool:
        """Both classes in TEST: the threshold-free metrics are defined."""
        return 0 < int(self.labels.sum()) < len(self.labels)


@dataclass
class FleetEvaluation:
    dataset: str
    methods: list[str]  # "model" first
    entities: list[EntityScores]
    skipped: dict[str, str]
    whole_series: dict[str, dict]  # method -> metric panel of the concatenated, TRAIN-z-scored scores
    threshold_percentile: float
    complete: bool = True  # False: the bundle's training stopped before every entity was done

    def aggregate(self) -> dict[str, dict[str, dict[str, float]]]:
        """method -> metric -> {mean, std, n} over the graded entities."""
        graded = [entity for entity in self.entities if entity.graded]
        table: dict[str, dict[str, dict[str, float]]] = {}
        for method in self.methods:
            table[method] = {}
            for metric in PER_ENTITY_METRICS:
                values = [e.metrics[method][metric] for e in graded if e.metrics[method][metric] is not None]
                values = np.asarray(values, dtype=np.float64)
                table[method][metric] = {
                    "mean": float(values.mean()) if len(values) else None,
                    "std": float(values.std()) if len(values) else None,
                    "n": len(values),
                }
        return table


def _per_entity_metrics(
    labels: np.ndarray, train: np.ndarray, test: np.ndarray, percentile: float, window: int
) -> dict[str, float | None]:
    if not 0 < int(labels.sum()) < len(labels):
        return dict.fromkeys(PER_ENTITY_METRICS)
    threshold = percentile_threshold(train, percentile)
    # A degenerate method's flags mean nothing (evaluation/degenerate.py): its F1 is left out.
    degenerate = degenerate_reason(train, test, threshold) is not None
    f1 = None if degenerate else precision_recall_f1(labels, (test > threshold).astype(np.uint8))["f1"]
    volumes = tsb_vus(labels, test, window=window)
    return {"roc_auc": roc_auc(labels, test), "pr_auc": pr_auc(labels, test), **volumes, "f1": f1}


def _z_scored(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    std = float(train.std())
    return (test - float(train.mean())) / (std if std > 0 else 1.0)


@dataclass(frozen=True)
class EntityRun:
    """What evaluating an entity needs besides its model, in plain values that a worker process can take."""

    bundle_path: str
    dataset_name: str
    data_dir: str | None
    baselines: tuple[str, ...]
    batch_size: int
    device: str
    seed: int
    percentile: float
    score_variant: str | None
    score_channels: str | None
    smooth: int | None


def evaluate_entity(run: EntityRun, entity: str, detector: Detector, single_thread: bool = True) -> EntityScores:
    """One entity's TRAIN and TEST scored by its own model and the baselines, and graded; on one thread
    (model.workers) unless single_thread is False, so that the result is the same for any --jobs."""
    with one_thread() if single_thread else contextlib.nullcontext():
        data = load_dataset(run.dataset_name, run.data_dir, entity)
        check_checkpoint_matches({"dataset": detector.dataset_}, data, Path(run.bundle_path))
        if data.test_labels is None:
            raise UserInputError(f"{data.name} has no test labels; a fleet evaluation needs them (use detect.py)")
        scoring = override_score_settings(detector.scoring_, run.score_variant, run.score_channels, run.smooth,
                                          data.channel_names, data.target_channels, len(data.train))  # fmt: skip
        detector = detector.rescored(scoring).to(run.device)
        train_points = detector.score_points(data.train, batch_size=run.batch_size)
        test_points = detector.score_points(data.test, batch_size=run.batch_size)
        train, test = detector.normalizer_.transform(data.train), detector.normalizer_.transform(data.test)
        scored = EntityScores(entity, data.test_labels, {"model": train_points.scores}, {"model": test_points.scores})
        window = dominant_period(test[:, 0])  # TSB-AD's sliding window: from the data's first channel
        for name in run.baselines:
            try:
                pair = baseline_scores(name, train, test, channels=scoring.channels, seed=run.seed)
            except UserInputError as error:  # e.g. a TEST shorter than the baseline's window
                scored.metrics[name], scored.failed[name] = dict.fromkeys(PER_ENTITY_METRICS), str(error)
                continue
            scored.train[name], scored.test[name] = (smooth_scores(part, scoring.smooth) for part in pair)
        methods = ["model", *run.baselines]
        for name in (m for m in methods if m not in scored.failed):
            check_train_scores_finite(f"entity {entity}'s model" if name == "model" else f"the {name} baseline",
                                      scored.train[name])  # fmt: skip
            scored.test[name], scored.non_finite[name] = rank_non_finite(scored.test[name], scored.train[name])
        for name in methods:
            if name not in scored.failed:
                scored.metrics[name] = _per_entity_metrics(scored.labels, scored.train[name], scored.test[name],
                                                           run.percentile, window)  # fmt: skip
    return scored


def _evaluate_entity_in_worker(run: EntityRun, entity: str, checkpoint: dict) -> EntityScores:
    return evaluate_entity(run, entity, Detector.from_checkpoint(checkpoint))


def _entity_results(run: EntityRun, fleet: Fleet, jobs: int) -> list[EntityScores]:
    """evaluate_entity over the fleet's entities in order: in this process for one job, else in workers."""
    entities = list(fleet.detectors.items())
    jobs = min(jobs, len(entities))
    if jobs == 1:  # on a GPU, the baselines may use every core
        on_cpu = resolve_device(run.device).type == "cpu"
        return [evaluate_entity(run, entity, detector, single_thread=on_cpu) for entity, detector in entities]
    pool = spawn_pool(jobs, initializer=ignore_interrupt)
    try:
        futures = [pool.submit(_evaluate_entity_in_worker, run, entity, detector.to_checkpoint())
                   for entity, detector in entities]  # fmt: skip
        results = [future.result() for future in futures]
    except BaseException as error:  # an entity's error, or a signal: nothing is kept, so nothing is waited for
        stop_now(pool)
        if isinstance(error, BrokenProcessPool):
            raise UserInputError(f"a worker process died while evaluating the {fleet.dataset} fleet (out of "
                                 f"memory?); lower --jobs (it was {jobs})") from None  # fmt: skip
        raise
    pool.shutdown()
    return results


def evaluate_fleet(
    bundle_path: str | Path,
    dataset_name: str,
    data_dir: str | Path | None = None,
    *,
    baselines: tuple[str, ...] = DEFAULT_FLEET_BASELINES,
    batch_size: int = 128,
    device: str = "auto",
    seed: int = 0,
    threshold_percentile: float | None = None,
    whole_series: bool = True,
    score_variant: str | None = None,
    score_channels: str | None = None,
    smooth: int | None = None,
    jobs: int | None = None,
) -> FleetEvaluation:
    """Score every trained entity's TEST with its own model and the baselines; grade each entity.

    score_variant / score_channels / smooth: score another way than the bundle's, as evaluate.py's
    --score, --score-channels and --smooth do for one model. jobs: entities evaluated at once, each in
    its own process on one thread (default: the cores on a CPU, 1 on a GPU, which the workers would share).
    """
    check_scoring_flags(batch_size, seed, device)
    if jobs is None:
        jobs = default_jobs(EVALUATION_MEMORY_PER_JOB) if resolve_device(device).type == "cpu" else 1
    if jobs < 1:
        raise UserInputError(f"--jobs must be at least 1, got {jobs}")
    fleet = Fleet.load(bundle_path)
    if fleet.dataset != dataset_name.upper():
        raise UserInputError(f"{bundle_path} is a {fleet.dataset} fleet; pass --dataset {fleet.dataset}")
    percentile = fleet.config.threshold_percentile if threshold_percentile is None else threshold_percentile
    percentile_threshold(np.zeros(1), percentile)  # a bad percentile fails before any work
    if not fleet.detectors:
        raise UserInputError(f"{bundle_path} holds no trained entity")
    methods = ["model", *baselines]
    run = EntityRun(str(bundle_path), dataset_name, None if data_dir is None else str(data_dir), tuple(baselines),
                    batch_size, device, seed, percentile, score_variant, score_channels, smooth)  # fmt: skip
    results = _entity_results(run, fleet, jobs)
    panels = {}
    if whole_series:
        labels = np.concatenate([entity.labels for entity in results])
        for name in (m for m in methods if not any(m in entity.failed for entity in results)):
            joined = np.concatenate([_z_scored(entity.train[name], entity.test[name]) for entity in results])
            z_train = np.concatenate([_z_scored(entity.train[name], entity.train[name]) for entity in results])
            threshold = percentile_threshold(z_train, percentile)
            panels[name] = metric_panel(labels, joined, (joined > threshold).astype(np.uint8))
    return FleetEvaluation(fleet.dataset, methods, results, fleet.skipped, panels, percentile, fleet.complete)


def _cell(summary: dict, graded: int) -> str:
    """mean ± std over entities; (n) when fewer than the graded entities count, e.g. a degenerate F1."""
    if summary["mean"] is None:
        return "-"
    fewer = f" ({summary['n']})" if summary["n"] < graded else ""
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}{fewer}"


def format_fleet_table(evaluation: FleetEvaluation) -> str:
    """The per-entity aggregate, then the whole-series panel's headline metrics."""
    table = evaluation.aggregate()
    graded = sum(entity.graded for entity in evaluation.entities)
    lines = [
        f"{evaluation.dataset} fleet{'' if evaluation.complete else ' (incomplete bundle)'}: "
        f"{len(evaluation.entities)} entities scored by their own model "
        f"({graded} with both classes in TEST are graded), {len(evaluation.skipped)} skipped in training",
        f"per-entity protocol: mean ± std over entities; F1 at the {evaluation.threshold_percentile:g}th "
        "percentile of each entity's TRAIN scores",
    ]
    cells = {method: [_cell(table[method][m], graded) for m in PER_ENTITY_METRICS] for method in evaluation.methods}
    # Every column as wide as its widest cell and a two-space gap, so that a count such as " (29)" never joins cells.
    width = 2 + max(len(text) for text in [*PER_ENTITY_METRICS, *(cell for row in cells.values() for cell in row)])
    name_width = max(10, 1 + max(len(method) for method in evaluation.methods))
    lines.append(f"{'method':<{name_width}}" + "".join(f"{metric:>{width}}" for metric in PER_ENTITY_METRICS))
    for method, row in cells.items():
        lines.append(f"{method:<{name_width}}" + "".join(f"{cell:>{width}}" for cell in row))
    if evaluation.whole_series:
        lines.append("whole-series protocol: entities concatenated, each z-scored by its own TRAIN scores; "
                     "vus_pr* is the all-thresholds VUS of the single-model panel, not TSB-AD's")  # fmt: skip
        headline = ("roc_auc", "pr_auc", "vus_pr", "f1", "pa_f1")
        lines.append(f"{'method':<{name_width}}" + "".join(f"{metric + ('*' if metric == 'vus_pr' else ''):>10}"
                                                           for metric in headline))  # fmt: skip
        for method, panel in evaluation.whole_series.items():
            lines.append(f"{method:<{name_width}}" + "".join(f"{panel[m]:>10.3f}" for m in headline))
    return "\n".join(lines)


def fleet_summary(evaluation: FleetEvaluation) -> dict:
    """The fleet metrics JSON (docs/evaluation.md, "Fleet metrics")."""
    return {
        "dataset": evaluation.dataset,
        "protocols": {
            "per_entity": "each entity its own series; mean and std over entities with both classes in TEST",
            "whole_series": "entities concatenated, each method's scores z-scored by that entity's TRAIN scores; "
            "its vus_pr / vus_roc are the single-model panel's (evaluation/vus.py), not TSB-AD's",
        },
        "vus": "TSB-AD 1.5 VUS (evaluation/tsb_vus.py)",
        "threshold_percentile": evaluation.threshold_percentile,
        "methods": evaluation.methods,
        "aggregate": evaluation.aggregate(),
        "entities": {
            entity.entity: {"n_test": len(entity.labels), "n_anomalous": int(entity.labels.sum()), **entity.metrics,
                            "non_finite_scores": entity.non_finite, "failed": entity.failed}
            for entity in evaluation.entities
        },
        "skipped": evaluation.skipped,
        "whole_series": evaluation.whole_series,
    }


def ranked_entities(evaluation: FleetEvaluation, k: int) -> tuple[list[EntityScores], list[EntityScores]]:
    """The k graded entities where the model's VUS-PR is lowest, and the k where it is highest."""
    graded = [entity for entity in evaluation.entities if entity.graded]
    graded.sort(key=lambda entity: entity.metrics["model"]["vus_pr"])
    return graded[:k], graded[::-1][:k]


def plot_entities(entities: list[EntityScores], title: str, path: Path, percentile: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(max(len(entities), 1), 1, figsize=(12, 2.2 * max(len(entities), 1)), squeeze=False)
    for axis, entity in zip(axes[:, 0], entities, strict=False):
        scores = entity.test["model"]
        time = np.arange(len(scores))
        threshold = percentile_threshold(entity.train["model"], percentile)
        axis.plot(time, scores, linewidth=0.6, color="tab:blue", label="model score")
        axis.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label="threshold")
        axis.fill_between(time, 0, 1, where=entity.labels.astype(bool), transform=axis.get_xaxis_transform(),
                          color="tab:orange", alpha=0.3, linewidth=0, label="labelled anomaly")  # fmt: skip
        metrics = entity.metrics["model"]
        axis.set_title(f"{entity.entity}: VUS-PR {metrics['vus_pr']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}", fontsize=9)
        axis.set_xlim(0, max(len(scores) - 1, 1))
    axes[0, 0].legend(loc="upper right", fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def write_fleet_artifacts(evaluation: FleetEvaluation, output_dir: str | Path, k: int = 3) -> dict[str, Path]:
    """{DATASET}_fleet_metrics.json, {DATASET}_fleet_entities.csv and the k worst / best entities' plots."""
    folder = ensure_writable_dir(output_dir)
    stem = f"{evaluation.dataset}_fleet"
    paths = {
        "json": folder / f"{stem}_metrics.json",
        "csv": folder / f"{stem}_entities.csv",
        "worst": folder / f"{stem}_worst.png",
        "best": folder / f"{stem}_best.png",
    }
    # Every file is written to its temp first and all are renamed at the end: replaced together or not at all.
    with atomic_paths(paths.values()) as temps:
        staged = dict(zip(paths, temps, strict=True))
        staged["json"].write_text(json_text(fleet_summary(evaluation)))
        _write_entities_csv(evaluation, staged["csv"])
        worst, best = ranked_entities(evaluation, k)
        for key, chosen, what in (("worst", worst, "lowest"), ("best", best, "highest")):
            plot_entities(chosen, f"{evaluation.dataset}: the {len(chosen)} entities of {what} VUS-PR", staged[key],
                          evaluation.threshold_percentile)  # fmt: skip
    return paths


def _write_entities_csv(evaluation: FleetEvaluation, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "n_test", "n_anomalous", "method", *PER_ENTITY_METRICS])
        for entity in evaluation.entities:
            for method in evaluation.methods:
                values = [entity.metrics[method][m] for m in PER_ENTITY_METRICS]
                shown = ["" if value is None else f"{value:.6g}" for value in values]
                writer.writerow([entity.entity, len(entity.labels), int(entity.labels.sum()), method, *shown])
