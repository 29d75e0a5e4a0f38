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
from typing import TYPE_CHECKING

import numpy as np

from data_factory.dataset import TimeSeriesDataset
from data_factory.entities import entity_names
from data_factory.registry import load_dataset
from evaluation.attribution import train_error_scale
from evaluation.baselines import DEFAULT_FLEET_BASELINES
from evaluation.drift import drift_warning, series_drift
from evaluation.grading import PER_ENTITY_METRICS, RANKING_METRICS, grade
from evaluation.html_report import ReportEntity, ReportPage, write_html_report
from evaluation.incidents import Incident, find_incidents, incidents_document, write_incidents_csv
from evaluation.method_scores import check_scoring_flags, score_methods
from evaluation.outputs import FLEET_OUTPUTS, output_paths
from evaluation.result import alarm_decision, judge, stored_rule_decision
from evaluation.thresholds import percentile_threshold
from evaluation.tsb_vus import dominant_period
from model.alarm_rule import AlarmSettings, check_alarm_settings
from model.checkpoint import check_checkpoint_matches
from model.detector import Detector
from model.fleet import Fleet, open_fleet
from model.scoring import resolve_device
from runtime.atomic import atomic_paths, ensure_writable_dir, json_text
from runtime.errors import UserInputError
from runtime.workers import check_jobs, default_jobs, ignore_interrupt, one_thread, spawn_pool, stop_now

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The columns of the HTML report's table: ranking, then the alarms at the rule.
FLEET_REPORT_METRICS = ("roc_auc", "pr_auc", "tsb_vus_pr", "f1", "event_f1", "flagged_share")
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
    degenerate: dict[str, str] = field(default_factory=dict)  # method -> why its flags mean nothing here
    flags: dict[str, np.ndarray] = field(default_factory=dict)  # method -> its decision rule's flags (N_test,)
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)  # method -> its threshold at each point
    incidents: list[Incident] = field(default_factory=list)  # the model's runs of flagged points
    drift: dict | None = None  # TEST against its model's TRAIN statistics where they are its own (drift_lines)
    stamps: np.ndarray | None = None  # (N_test,) TEST's times as text, where its file has a time column

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
    alarm: AlarmSettings  # the decision rule every method's flags come from, each fitted on its own TRAIN scores
    complete: bool = True  # False: the bundle's training stopped before every entity was done
    shared: bool = False  # one model of the whole dataset scored every entity (a checkpoint, not a bundle)
    left_out: dict[str, str] = field(default_factory=dict)  # of `skipped`: a series too short for its model

    @property
    def stem(self) -> str:
        """What its files are called: {DATASET}_fleet_* for a bundle, {DATASET}_shared_* for one shared model."""
        return f"{self.dataset}_{'shared' if self.shared else 'fleet'}"  # not kind(): file names have no space

    def models(self) -> str:
        """Which model scored each entity, in words."""
        return "the one shared model" if self.shared else "their own model"

    def kind(self) -> str:
        return "shared model" if self.shared else "fleet"

    def not_scored(self) -> str:
        """Why `skipped` entities have no scores: a fleet could not train them, a shared model cannot window them."""
        if self.shared:
            return "left out"
        return "skipped in training or left out" if self.left_out else "skipped in training"

    def aggregate(self) -> dict[str, dict[str, dict[str, float]]]:
        """method -> metric -> {mean, std, n} over the entities where the metric is defined: the ranking
        metrics over those with both classes in TEST, the alarm metrics over every entity they apply to."""
        table: dict[str, dict[str, dict[str, float]]] = {}
        for method in self.methods:
            table[method] = {}
            for metric in PER_ENTITY_METRICS:
                values = [e.metrics[method][metric] for e in self.entities if e.metrics[method][metric] is not None]
                values = np.asarray(values, dtype=np.float64)
                table[method][metric] = {
                    "mean": float(values.mean()) if len(values) else None,
                    "std": float(values.std()) if len(values) else None,
                    "n": len(values),
                }
        return table


def _z_scored(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    std = float(train.std())
    return (test - float(train.mean())) / (std if std > 0 else 1.0)


def _whole_series(entities: list[EntityScores], method: str) -> tuple[np.ndarray, ...]:
    """One method's TRAIN scores, TEST scores, flags and thresholds over the entities concatenated in order,
    the scores and thresholds z-scored by each entity's TRAIN scores. Each entity is watched on its own: its
    flags are its own rule's, fitted on its own TRAIN scores."""
    parts = []
    for entity in entities:
        train, test, thresholds = entity.train[method], entity.test[method], entity.thresholds[method]
        parts.append((_z_scored(train, train), _z_scored(train, test), entity.flags[method],
                      _z_scored(train, thresholds)))  # fmt: skip
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


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
    alarm: AlarmSettings
    score: str | None
    score_channels: str | None
    smooth: int | None
    top_sensors: int
    shared: bool = False  # one model of the whole dataset scores every entity (Fleet.lent_to)
    own_statistics: bool = False  # each model normalises by its own entity's TRAIN: TEST is checked for drift
    temperature: float | None = None  # the paper score's; None: the bundle's


class EntityTooShort(UserInputError):
    """An entity's TRAIN or TEST is shorter than its model's window: it is left out, with this reason."""


def evaluate_entity(run: EntityRun, entity: str, detector: Detector, single_thread: bool = True) -> EntityScores:
    """One entity's TRAIN and TEST scored by its own model and the baselines, and graded; on one thread
    (runtime.workers) unless single_thread is False, so that the result is the same for any --jobs."""
    with one_thread() if single_thread else contextlib.nullcontext():
        data = load_dataset(run.dataset_name, run.data_dir, entity)
        if run.shared:
            _check_shared_model(detector, data, run.bundle_path)
        else:
            check_checkpoint_matches({"dataset": detector.dataset_}, data, Path(run.bundle_path))
            if len(data.test) < detector.config.win_size:  # its TRAIN was long enough to train on
                raise EntityTooShort(f"TEST ({len(data.test)} rows) is shorter than its model's window of "
                                     f"{detector.config.win_size}")  # fmt: skip
        if data.test_labels is None:
            raise UserInputError(f"{data.name} has no test labels; a fleet evaluation needs them (use detect.py)")
        scored_methods = score_methods(detector.to(run.device), data, run.baselines, score=run.score,
                                       score_channels=run.score_channels, smooth=run.smooth,
                                       temperature=run.temperature, batch_size=run.batch_size, seed=run.seed,
                                       keep_going=True)  # fmt: skip
        scored = EntityScores(entity, data.test_labels, scored_methods.train, scored_methods.test,
                              stamps=data.test_stamps)  # fmt: skip
        for name, reason in scored_methods.failed.items():
            scored.metrics[name], scored.failed[name] = dict.fromkeys(PER_ENTITY_METRICS), reason
        # TSB-AD's sliding window: from the data's first channel
        window = dominant_period(scored_methods.normalised_test[:, 0])
        # Each method judged as evaluate.py judges one model (evaluation/result.py), at the decision rule.
        decide = alarm_decision(run.alarm)
        # The entity's own model, scored as it was trained to: its stored rule, as detect.py applies it. A shared
        # model's rule belongs to the whole dataset's TRAIN: it is fitted again on the entity's.
        stored = not run.shared and scored_methods.detector is detector
        model_decide = stored_rule_decision(detector, run.alarm) if stored else decide
        owner = f"the model of {run.bundle_path}" if run.shared else f"entity {entity}'s model"
        results = {name: judge(owner if name == "model" else f"the {name} baseline", scored.train[name],
                               scored.test[name], scored.labels, model_decide if name == "model" else decide,
                               panel=False, tsb_window=window) for name in scored_methods.train}  # fmt: skip
        for name, result in results.items():
            scored.test[name], scored.non_finite[name] = result.scores, result.non_finite
            scored.metrics[name] = result.metrics
            scored.flags[name], scored.thresholds[name] = result.predictions, result.thresholds
            if result.degenerate_reason is not None:  # its alarm metrics are null: say why, as evaluate.py does
                scored.degenerate[name] = result.degenerate_reason
        model = results["model"]
        if run.own_statistics:
            scored.drift = series_drift(scored_methods.normalised_test, detector.normalizer_.constant_in_train,
                                        detector.channel_names)  # fmt: skip
        scale = train_error_scale(scored_methods.train_channel_error)
        scored.incidents = find_incidents(model.predictions, model.scores, model.thresholds,
                                          scored_methods.test_points.errors, data.channel_names, data.test_stamps,
                                          entity=entity,
                                          top_k=run.top_sensors, scale=scale,
                                          score_channels=scored_methods.scoring.channels)  # fmt: skip
    return scored


def _check_shared_model(detector: Detector, data: TimeSeriesDataset, path: str) -> None:
    """One model of the whole dataset on one of its entities: the same channels, and a series it can window."""
    if detector.dataset_["n_channels"] != data.n_channels:
        raise UserInputError(f"{path} expects {detector.dataset_['n_channels']} channels but {data.name} has "
                             f"{data.n_channels}; retrain on these data")  # fmt: skip
    window = detector.config.win_size
    if min(len(data.train), len(data.test)) < window:
        raise EntityTooShort(f"TRAIN ({len(data.train)} rows) or TEST ({len(data.test)}) is shorter than the "
                             f"model's window of {window}")  # fmt: skip


def _outcome(
    run: EntityRun, entity: str, detector: Detector, single_thread: bool = True
) -> EntityScores | EntityTooShort:
    """evaluate_entity, or why the entity is left out (a series shorter than its model's window)."""
    try:
        return evaluate_entity(run, entity, detector, single_thread)
    except EntityTooShort as short:
        return short


def _outcome_in_worker(run: EntityRun, entity: str, checkpoint: dict) -> EntityScores | EntityTooShort:
    return _outcome(run, entity, Detector.from_checkpoint(checkpoint))


def _entity_results(run: EntityRun, fleet: Fleet, jobs: int) -> tuple[list[EntityScores], dict[str, str]]:
    """evaluate_entity over the fleet's entities in order: in this process for one job, else in workers; and
    the entities too short for their model, with why."""
    entities = list(fleet.detectors.items())
    jobs = min(jobs, len(entities))
    if jobs == 1:  # on a GPU, the baselines may use every core
        on_cpu = resolve_device(run.device).type == "cpu"
        outcomes = [_outcome(run, entity, detector, single_thread=on_cpu) for entity, detector in entities]
        return _split_outcomes(entities, outcomes)
    pool = spawn_pool(jobs, initializer=ignore_interrupt)
    try:
        futures = [pool.submit(_outcome_in_worker, run, entity, detector.to_checkpoint())
                   for entity, detector in entities]  # fmt: skip
        outcomes = [future.result() for future in futures]
    except BaseException as error:  # an entity's error, or a signal: nothing is kept, so nothing is waited for
        stop_now(pool)
        if isinstance(error, BrokenProcessPool):
            raise UserInputError(f"a worker process died while evaluating the {fleet.dataset} fleet (out of "
                                 f"memory?); lower --jobs (it was {jobs})") from None  # fmt: skip
        raise
    pool.shutdown()
    return _split_outcomes(entities, outcomes)


def _split_outcomes(entities: list, outcomes: list) -> tuple[list[EntityScores], dict[str, str]]:
    left_out = {name: str(outcome) for (name, _), outcome in zip(entities, outcomes, strict=True)
                if isinstance(outcome, EntityTooShort)}  # fmt: skip
    return [outcome for outcome in outcomes if isinstance(outcome, EntityScores)], left_out


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
    alarm_rule: str | None = None,
    alarm_window: int | None = None,
    whole_series: bool = True,
    score: str | None = None,
    score_channels: str | None = None,
    smooth: int | None = None,
    temperature: float | None = None,
    jobs: int | None = None,
    top_sensors: int = 3,
    settings_checked: bool = False,
) -> FleetEvaluation:
    """Score every trained entity's TEST with its own model and the baselines; grade each entity.

    score / score_channels / smooth / temperature: score another way than the bundle's, as evaluate.py's
    --score, --score-channels, --smooth and --temperature do for one model. threshold_percentile / alarm_rule /
    alarm_window: another decision rule than the bundle's (every method's flags follow it). jobs: entities evaluated
    at once, each in its own process on one thread (default: the cores on a CPU, 1 on a GPU, which the workers would
    share).
    top_sensors: the sensors each incident lists. settings_checked: the caller has passed batch_size, seed and
    device through check_scoring_flags (evaluate.py does, before it makes the output folder).
    """
    if not settings_checked:
        check_scoring_flags(batch_size, seed, device)
    if jobs is None:
        jobs = default_jobs(EVALUATION_MEMORY_PER_JOB) if resolve_device(device).type == "cpu" else 1
    check_jobs(jobs)
    fleet = open_fleet(bundle_path)
    if fleet.single and fleet.dataset.startswith(f"{dataset_name.upper()}_"):
        raise UserInputError(f"{bundle_path} is one model of {fleet.dataset} alone; per entity, pass a model of the "
                             f"whole {dataset_name.upper()} dataset or its fleet bundle")  # fmt: skip
    if fleet.dataset != dataset_name.upper():
        what = "model" if fleet.single else "fleet"
        raise UserInputError(f"{bundle_path} is a {fleet.dataset} {what}; pass --dataset {fleet.dataset}")
    if fleet.single:  # one model of the whole dataset, graded on each entity's own series
        fleet = fleet.lent_to(entity_names(dataset_name, data_dir))
    alarm = AlarmSettings(
        fleet.config.alarm_rule if alarm_rule is None else alarm_rule,
        fleet.config.threshold_percentile if threshold_percentile is None else threshold_percentile,
        fleet.config.alarm_window if alarm_window is None else alarm_window,
    )
    percentile_threshold(np.zeros(1), alarm.percentile)  # a bad percentile fails before any work
    check_alarm_settings(alarm.kind, alarm.window)
    if not fleet.detectors:
        raise UserInputError(f"{bundle_path} holds no trained entity")
    methods = ["model", *baselines]
    own_statistics = not fleet.shared and fleet.normalisation == "entity"
    run = EntityRun(str(bundle_path), dataset_name, None if data_dir is None else str(data_dir), tuple(baselines),
                    batch_size, device, seed, alarm, score, score_channels, smooth, top_sensors,
                    fleet.shared, own_statistics, temperature)  # fmt: skip
    results, left_out = _entity_results(run, fleet, jobs)
    if not results:
        reasons = "; ".join(f"{name}: {why}" for name, why in left_out.items())
        raise UserInputError(f"no entity of {bundle_path} could be scored ({reasons}); retrain with a smaller "
                             "train.py --win-size, or give longer series")  # fmt: skip
    panels = {}
    if whole_series:
        labels = np.concatenate([entity.labels for entity in results])
        for name in (m for m in methods if not any(m in entity.failed for entity in results)):
            train, test, flags, thresholds = _whole_series(results, name)
            panels[name] = grade(labels, train, test, flags, thresholds, panel=True).panel
    return FleetEvaluation(fleet.dataset, methods, results, {**fleet.skipped, **left_out}, panels, alarm,
                           fleet.complete, fleet.shared, left_out)  # fmt: skip


def drift_lines(evaluation: FleetEvaluation) -> list[str]:
    """detect.py's drift warning for each entity whose TEST drifted from its model's TRAIN statistics. Only models
    normalised by their own entity's TRAIN are checked: a shared model's statistics, or a fleet's under
    --normalisation global, are the whole dataset's TRAIN, so an entity that merely differs from the others would
    read as drifted."""
    warnings = ((entity.entity, drift_warning(entity.drift)) for entity in evaluation.entities)
    return [f"{name}: {warning}" for name, warning in warnings if warning]


# The alarm metrics whose denominator is the anomalous points or the labelled segments, and the one whose is the normal
# points: undefined on an entity without anomalies, or with every point anomalous, whatever the method.
NEEDS_ANOMALIES = ("missed_alarm_rate", "f1", "event_recall", "event_f1")
NEEDS_NORMAL_POINTS = ("false_alarm_rate",)


def defined_on(entity: EntityScores, metric: str) -> bool:
    """Whether the entity's labels define the metric (for a method that ran and is not degenerate): the ranking
    metrics need both classes in TEST, the rates their denominator, the shares and counts nothing."""
    anomalous = int(entity.labels.sum())
    if metric in RANKING_METRICS:
        return entity.graded
    if metric in NEEDS_ANOMALIES:
        return anomalous > 0
    if metric in NEEDS_NORMAL_POINTS:
        return anomalous < len(entity.labels)
    return True


def _cell(summary: dict, expected: int) -> str:
    """mean ± std over entities; (n) when the metric is defined on fewer entities than expected."""
    if summary["mean"] is None:
        return "-"
    fewer = f" ({summary['n']})" if summary["n"] < expected else ""
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}{fewer}"


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others, each as wide as its widest cell plus two spaces."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        row[0].ljust(widths[0]) + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True))
        for row in [header, *rows]
    ]


# The per-entity alarm table: the key and its column heading.
ALARM_COLUMNS = (
    ("f1", "F1 at rule"),
    ("best_f1", "best F1*"),
    ("flagged_share", "flagged"),
    ("anomaly_share", "anomalous"),
    ("false_alarm_rate", "false alarm rate"),
    ("missed_alarm_rate", "missed alarm rate"),
    ("event_f1", "event F1"),
    ("false_alarm_events_per_10k", "false events/10k"),
    ("within_flag_bound", "not flooding"),
)


def format_fleet_table(evaluation: FleetEvaluation) -> str:
    """The per-entity ranking table, the per-entity alarm table, then the whole-series panel's headline."""
    table = evaluation.aggregate()
    graded = sum(entity.graded for entity in evaluation.entities)
    total = len(evaluation.entities)
    # A method's (n) shows where it has fewer values than the entities whose labels define the metric.
    expected = {key: sum(defined_on(entity, key) for entity in evaluation.entities) for key, _ in ALARM_COLUMNS}
    lines = [
        f"{evaluation.dataset} {evaluation.kind()}{'' if evaluation.complete else ' (incomplete bundle)'}: "
        f"{total} entities scored by {evaluation.models()} ({graded} with both classes in TEST are graded), "
        f"{len(evaluation.skipped)} {evaluation.not_scored()}",
        *(f"left out {entity}: {reason}" for entity, reason in evaluation.left_out.items()),
        "per-entity protocol, ranking: mean ± std over the graded entities; (n) where fewer are defined",
        *text_table(["method", *RANKING_METRICS[:4]],
                    [[method, *(_cell(table[method][m], graded) for m in RANKING_METRICS[:4])]
                     for method in evaluation.methods]),  # fmt: skip
        "per-entity protocol, alarms at the decision rule, fitted on each method's own TRAIN scores of each entity "
        f"({evaluation.alarm.describe()}): mean ± std over the entities where defined; * oracle (threshold picked "
        "with the test labels); not flooding = share of entities flagging at most twice their anomaly share + 1 point",
        *text_table(["method", *(heading for _, heading in ALARM_COLUMNS)],
                    [[method, *(_cell(table[method][key], expected[key]) for key, _ in ALARM_COLUMNS)]
                     for method in evaluation.methods]),  # fmt: skip
    ]
    if evaluation.whole_series:
        lines.append("whole-series protocol: entities concatenated, each z-scored by its own TRAIN scores; "
                     "vus_pr* is the all-thresholds VUS of the single-model panel, not TSB-AD's")  # fmt: skip
        headline = ("roc_auc", "pr_auc", "vus_pr", "f1", "event_f1", "flagged_share", "pa_f1")
        header = ["method", *(metric + ("*" if metric == "vus_pr" else "") for metric in headline)]
        rows = [[method, *("-" if panel[m] is None else f"{panel[m]:.3f}" for m in headline)]
                for method, panel in evaluation.whole_series.items()]  # fmt: skip
        lines += text_table(header, rows)
    return "\n".join(lines)


def fleet_summary(evaluation: FleetEvaluation) -> dict:
    """The fleet metrics JSON (docs/evaluation.md, "Fleet metrics")."""
    return {
        "dataset": evaluation.dataset,
        "models": "one shared model for every entity" if evaluation.shared else "one model per entity",
        "protocols": {
            "per_entity": "each entity its own series; mean and std over entities with both classes in TEST",
            "whole_series": "entities concatenated, each method's scores z-scored by that entity's TRAIN scores; "
            "its vus_pr / vus_roc are the single-model panel's (evaluation/vus.py), not TSB-AD's",
        },
        "vus": "TSB-AD 1.5 VUS (evaluation/tsb_vus.py)",
        "threshold_percentile": evaluation.alarm.percentile,
        "alarm_rule": {"kind": evaluation.alarm.kind, "window": evaluation.alarm.window,
                       "description": evaluation.alarm.describe()},
        "methods": evaluation.methods,
        "aggregate": evaluation.aggregate(),
        "entities": {
            entity.entity: {"n_test": len(entity.labels), "n_anomalous": int(entity.labels.sum()), **entity.metrics,
                            "non_finite_scores": entity.non_finite, "failed": entity.failed,
                            "degenerate": entity.degenerate, "drift": entity.drift}
            for entity in evaluation.entities
        },
        "skipped": evaluation.skipped,
        "whole_series": evaluation.whole_series,
    }


def plotted_entities(evaluation: FleetEvaluation, k: int) -> dict[str, tuple[list[EntityScores], str]]:
    """The worst and the best plot: each one's entities and its figure title. The k graded entities with the lowest
    model VUS-PR, lowest first, and the k with the highest, highest first; with fewer than 2k graded entities they
    are split (the middle one to the worst), so that no entity is in both."""
    graded = sorted((entity for entity in evaluation.entities if entity.graded),
                    key=lambda entity: entity.metrics["model"]["tsb_vus_pr"])  # fmt: skip
    n_worst = min(k, (len(graded) + 1) // 2)
    n_best = min(k, len(graded) - n_worst)
    worst, best = graded[:n_worst], graded[::-1][:n_best]
    return {"worst": (worst, _plot_title(evaluation, worst, "lowest", len(graded), k)),
            "best": (best, _plot_title(evaluation, best, "highest", len(graded), k))}  # fmt: skip


def _plot_title(evaluation: FleetEvaluation, chosen: list[EntityScores], extreme: str, n_graded: int, k: int) -> str:
    head = f"{evaluation.dataset} {evaluation.kind()}"
    if chosen:
        noun = "entity" if len(chosen) == 1 else "entities"
        return f"{head}: the {len(chosen)} {noun} with the {extreme} VUS-PR, of {n_graded} graded"
    if k == 0:
        reason = "--plots 0"
    elif n_graded == 0:
        reason = "no entity has both classes in TEST"
    else:
        reason = f"the only graded entity is in {evaluation.stem}_worst.png"
    return f"{head}: no entity plotted ({reason})"


def entities_figure(entities: list[EntityScores], title: str) -> Figure:
    """One panel per entity, titled with its name and metrics, under the figure's own title: the model's TEST
    score, its threshold and the labelled anomalies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(max(len(entities), 1), 1, figsize=(12, 2.2 * max(len(entities), 1)), squeeze=False)
    for axis, entity in zip(axes[:, 0], entities, strict=False):
        scores = entity.test["model"]
        time = np.arange(len(scores))
        thresholds = entity.thresholds["model"]
        axis.plot(time, scores, linewidth=0.6, color="tab:blue", label="model score")
        axis.plot(time, thresholds, color="tab:red", linestyle="--", linewidth=1, label="threshold")
        axis.fill_between(time, 0, 1, where=entity.labels.astype(bool), transform=axis.get_xaxis_transform(),
                          color="tab:orange", alpha=0.3, linewidth=0, label="labelled anomaly")  # fmt: skip
        metrics = entity.metrics["model"]
        axis.set_title(f"{entity.entity}: VUS-PR {metrics['tsb_vus_pr']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}",
                       fontsize=9)  # fmt: skip
        axis.set_xlim(0, max(len(scores) - 1, 1))
    if entities:
        axes[0, 0].legend(loc="upper right", fontsize=7)
    else:
        axes[0, 0].set_axis_off()  # the title says why the figure is empty
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_entities(entities: list[EntityScores], title: str, path: Path) -> None:
    figure = entities_figure(entities, title)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def fleet_page(evaluation: FleetEvaluation) -> ReportPage:
    """The HTML report of a fleet: one table row and one section per entity."""
    notes = [f"{len(evaluation.entities)} entities, each scored by {evaluation.models()}; {len(evaluation.skipped)} "
             f"{evaluation.not_scored()}",
             "per-entity protocol: every metric on the entity's own TEST (TSB-AD 1.5 VUS); "
             f"alarms, F1 and incidents at the decision rule, fitted on the entity's TRAIN scores: "
             f"{evaluation.alarm.describe()}"]  # fmt: skip
    entities = [ReportEntity(entity.entity, entity.test["model"], entity.thresholds["model"], entity.labels,
                             entity.incidents, entity.metrics, drift_warning(entity.drift), entity.stamps)
                for entity in evaluation.entities]  # fmt: skip
    return ReportPage(f"{evaluation.dataset} {evaluation.kind()}: anomaly report", notes, evaluation.methods,
                      list(FLEET_REPORT_METRICS), entities)  # fmt: skip


def fleet_incidents(evaluation: FleetEvaluation) -> dict:
    """Every entity's incidents, in the fleet's entity order, as one incidents document."""
    incidents = [incident for entity in evaluation.entities for incident in entity.incidents]
    top_k = max((len(incident.top_sensors) for incident in incidents), default=0)
    return incidents_document(incidents, top_k, dataset=evaluation.dataset,
                              threshold_rule=f"each entity's decision rule: {evaluation.alarm.describe()}")  # fmt: skip


def write_fleet_artifacts(
    evaluation: FleetEvaluation, output_dir: str | Path, k: int = 3, report: str | None = None
) -> dict[str, Path]:
    """{STEM}_metrics.json, {STEM}_entities.csv, the k worst / best entities' plots, {STEM}_incidents.csv/.json
    and, with report "html", {STEM}_report.html; STEM is {DATASET}_fleet, or {DATASET}_shared for one shared model."""
    folder = ensure_writable_dir(output_dir)
    stem = evaluation.stem
    keys = [key for key in FLEET_OUTPUTS if key != "report" or report == "html"]
    paths = output_paths(folder, stem, FLEET_OUTPUTS, keys)
    # Every file is written to its temp first and all are renamed at the end: replaced together or not at all.
    with atomic_paths(paths.values()) as temps:
        staged = dict(zip(paths, temps, strict=True))
        staged["json"].write_text(json_text(fleet_summary(evaluation)))
        _write_entities_csv(evaluation, staged["csv"])
        for key, (chosen, title) in plotted_entities(evaluation, k).items():
            plot_entities(chosen, title, staged[key])
        incidents = fleet_incidents(evaluation)
        staged["incidents_json"].write_text(json_text(incidents))
        write_incidents_csv(incidents, staged["incidents_csv"])
        if "report" in staged:
            write_html_report(fleet_page(evaluation), staged["report"])
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
