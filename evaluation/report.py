"""Evaluate a checkpoint on its dataset's test split, beside simple baselines, and write the artifacts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_factory.registry import load_dataset
from evaluation.association_maps import explain_windows, plot_association_maps, save_association_npz
from evaluation.attribution import attribute, train_error_scale
from evaluation.drift import drift_warning, series_drift
from evaluation.grading import ORACLE_METRICS
from evaluation.html_report import ReportEntity, ReportPage, write_html_report
from evaluation.incidents import find_incidents, incidents_document, write_incidents_csv
from evaluation.method_scores import MethodScores, check_scoring_flags, score_methods
from evaluation.outputs import MODEL_OUTPUTS, output_paths
from evaluation.plots import plot_scores
from evaluation.result import (
    Decision,
    Evaluation,
    MethodResult,
    alarm_decision,
    judge,
    rank_non_finite,
    stored_rule_decision,
)
from evaluation.thresholds import Threshold, choose_threshold, percentile_threshold
from model.alarm_rule import DEFAULT_ALARM_RULE, DEFAULT_ALARM_WINDOW, AlarmSettings, check_alarm_settings
from model.config import DetectorConfig
from model.fleet import load_detector
from runtime.atomic import atomic_paths, ensure_writable_dir, json_ready, json_text
from runtime.distributed import DistributedContext
from runtime.errors import UserInputError

PROTOCOLS = ("default", "paper")
ALARM = "alarm"  # the default protocol's rule when no --threshold is named: the decision rule (model/alarm_rule.py)
TABLE_ROWS = (
    ("precision", "point precision"),
    ("recall", "point recall"),
    ("f1", "point F1"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("pa_precision", "PA precision"),
    ("pa_recall", "PA recall"),
    ("pa_f1", "PA F1"),
    ("pa_k20_f1", "PA%K=20 F1"),
    ("pa_k_f1_auc", "PA%K F1 area"),
    ("event_precision", "event precision"),
    ("event_recall", "event recall"),
    ("event_f1", "event F1"),
    ("affiliation_precision", "affil. precision"),
    ("affiliation_recall", "affil. recall"),
    ("vus_roc", "VUS-ROC (all thr)"),  # all thresholds, buffers to 100 (evaluation/vus.py), not TSB-AD's
    ("vus_pr", "VUS-PR (all thr)"),
    ("best_f1", "best F1 (oracle)"),
    ("flagged_share", "flagged share"),
    ("anomaly_share", "anomaly share"),
    ("false_alarm_rate", "false alarm rate"),
    ("missed_alarm_rate", "missed alarm rate"),
    ("false_alarm_events_per_10k", "false events / 10k"),
)


@dataclass
class ThresholdSettings:
    """How to turn scores into flags; `rule` None means: the protocol's rule."""

    rule: str | None = None
    percentile: float | None = None  # None: the percentile the checkpoint was trained with
    value: float | None = None
    pot_risk: float | None = None  # None: POT_RISK
    anomaly_ratio: float | None = None  # None: 1, or 0.5 for SMD, as the reference uses
    alarm_rule: str | None = None  # the decision rule of the default protocol; None: the checkpoint's
    alarm_window: int | None = None  # None: the checkpoint's


def reference_anomaly_ratio(dataset_name: str) -> float:
    """The paper protocol's anomaly ratio (%) in the reference's scripts: 0.5 for SMD, 1 for the others."""
    return 0.5 if dataset_name.startswith("SMD") else 1.0


def resolve_rule(protocol: str, settings: ThresholdSettings, dataset_name: str) -> tuple[str, float]:
    """The threshold rule and anomaly ratio a protocol implies; reject combinations that mix them."""
    if protocol not in PROTOCOLS:
        raise UserInputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    ratio = reference_anomaly_ratio(dataset_name) if settings.anomaly_ratio is None else settings.anomaly_ratio
    if protocol == "paper":
        if settings.rule not in (None, "paper"):
            raise UserInputError("--protocol paper fixes the threshold (train + test percentile); drop --threshold")
        rule = "paper"
    elif settings.rule == "paper":
        raise UserInputError("the paper threshold uses test scores; ask for it with --protocol paper")
    else:
        rule = settings.rule or ALARM
    # A setting of a rule that is not in use would be ignored without a word: refused, naming the rule it needs.
    unused = (("--anomaly-ratio", settings.anomaly_ratio, ("paper",), "--protocol paper"),
              ("--threshold-percentile", settings.percentile, (ALARM, "train", "val"),
               "the decision rule or --threshold train/val"),
              ("--threshold-value", settings.value, ("fixed",), "--threshold fixed"),
              ("--pot-risk", settings.pot_risk, ("pot",), "--threshold pot"))  # fmt: skip
    for flag, setting, rules, needs in unused:
        if setting is not None and rule not in rules:
            using = {"paper": "--protocol paper", ALARM: "the decision rule"}.get(rule, f"--threshold {rule}")
            raise UserInputError(f"{flag} is read only by {needs}, so under {using} it would be ignored; drop it")
    return rule, ratio


def _decision(rule: str, ratio: float, settings: ThresholdSettings, val_ratio: float) -> Decision:
    """The decision rule, or a fixed threshold rule's one value for every TEST point."""
    if rule == ALARM:
        return alarm_decision(AlarmSettings(settings.alarm_rule, settings.percentile, settings.alarm_window))

    def decide(train_scores: np.ndarray, scores: np.ndarray) -> tuple[Threshold, np.ndarray]:
        finite, _ = rank_non_finite(scores, train_scores)  # a rule that reads TEST scores (paper) needs numbers
        threshold = choose_threshold(rule, train_scores, finite, percentile=settings.percentile,
                                     val_ratio=val_ratio, value=settings.value, pot_risk=settings.pot_risk,
                                     anomaly_ratio=ratio)  # fmt: skip
        return threshold, np.full(len(scores), threshold.value)

    return decide


def check_evaluation_settings(
    protocol: str,
    settings: ThresholdSettings,
    dataset_name: str,
    batch_size: int,
    seed: int,
    device: str,
    top_sensors: int = 3,
    explain: int = 0,
) -> None:
    """Every flag of an evaluation, checked before any data or checkpoint is read (the threshold settings
    on stand-in scores)."""
    check_scoring_flags(batch_size, seed, device)
    rule, ratio = resolve_rule(protocol, settings, dataset_name.upper())
    stand_in = np.zeros(4)
    percentile = DetectorConfig.threshold_percentile if settings.percentile is None else settings.percentile
    if rule == ALARM:
        check_alarm_settings(settings.alarm_rule or DEFAULT_ALARM_RULE, settings.alarm_window or DEFAULT_ALARM_WINDOW)
        percentile_threshold(stand_in, percentile)
    else:
        flags = (("--alarm-rule", settings.alarm_rule), ("--alarm-window", settings.alarm_window))
        given = [flag for flag, setting in flags if setting is not None]
        if given:
            named = "--protocol paper" if rule == "paper" else f"--threshold {rule}"
            raise UserInputError(f"{named} replaces the decision rule, so {given[0]} would be ignored; drop one")
        choose_threshold(rule, stand_in, stand_in, percentile=percentile, val_ratio=0.5, value=settings.value,
                         pot_risk=settings.pot_risk, anomaly_ratio=ratio)  # fmt: skip
    if top_sensors < 1:
        raise UserInputError(f"--top-sensors must be at least 1, got {top_sensors}")
    if explain < 0:
        raise UserInputError(f"--explain must be 0 (off) or a number of windows, got {explain}")


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    dataset_name: str,
    data_dir: str | Path | None = None,
    *,
    protocol: str = "default",
    threshold: ThresholdSettings | None = None,
    baselines: tuple[str, ...] = ("random", "pca"),
    batch_size: int = 128,
    device: str = "auto",
    seed: int = 0,
    score: str | None = None,
    score_channels: str | None = None,
    smooth: int | None = None,
    temperature: float | None = None,
    entity: str | None = None,
    top_sensors: int = 3,
    explain: int = 0,
    context: DistributedContext | None = None,
    settings_checked: bool = False,
) -> Evaluation | None:
    """Score TRAIN and TEST with the checkpoint and each baseline, threshold them by the protocol's rule.

    The model's flagged segments are attributed to their top_sensors sensors; explain > 0 also keeps
    the association maps of that many top-scoring and normal test windows. Under torchrun (`context`)
    the ranks share the forward passes; rank 0 gets the Evaluation, the others None. settings_checked: the
    caller has passed these settings through check_evaluation_settings (evaluate.py does, before it makes
    the output folder).
    """
    settings = threshold or ThresholdSettings()
    if not settings_checked:
        check_evaluation_settings(protocol, settings, dataset_name, batch_size, seed, device, top_sensors, explain)
    dataset = load_dataset(dataset_name, data_dir, entity)
    rule, ratio = resolve_rule(protocol, settings, dataset.name)
    detector = load_detector(checkpoint_path, entity, dataset, device)  # a fleet bundle gives the entity's model
    if score is None and protocol == "paper":
        score = "paper"  # the paper's protocol means the paper's criterion, unless a score is named
    scored = score_methods(detector, dataset, baselines, score=score, score_channels=score_channels, smooth=smooth,
                           temperature=temperature, batch_size=batch_size, seed=seed, context=context)  # fmt: skip
    if scored is None:  # a torchrun rank other than 0: it scored its share, rank 0 reports
        return None
    stored_rule = scored.detector is detector  # not rescored: its stored decision rule applies, as in detect.py
    detector, scoring, test_points = scored.detector, scored.scoring, scored.test_points
    methods = _judged_methods(scored, dataset.test_labels, rule, ratio, settings, stored_rule)
    flagged = methods["model"]
    channel_error = scored.train_channel_error
    attribution = attribute(flagged.scores, flagged.predictions, test_points.errors, channel_error,
                            dataset.channel_names, dataset.anomalies, top_sensors, flagged.thresholds)  # fmt: skip
    incidents = find_incidents(flagged.predictions, flagged.scores, flagged.thresholds, test_points.errors,
                               dataset.channel_names, dataset.test_stamps, entity=dataset.name, top_k=top_sensors,
                               scale=train_error_scale(channel_error), score_channels=scoring.channels)  # fmt: skip
    associations = None
    if explain:
        associations = explain_windows(
            detector.model_,
            scored.normalised_test,
            flagged.scores,
            flagged.predictions,
            dataset.test_labels,
            explain,
            dataset.name,
            threshold=flagged.threshold.value,
            thresholds=flagged.thresholds,
        )
    # as detect.py's
    drift = series_drift(scored.normalised_test, detector.normalizer_.constant_in_train, detector.channel_names)
    return Evaluation(dataset.name, protocol, scoring, dataset.test_labels, methods, attribution, associations,
                      incidents, drift, dataset.test_stamps)  # fmt: skip


def _judged_methods(
    scored: MethodScores,
    labels: np.ndarray | None,
    rule: str,
    ratio: float,
    settings: ThresholdSettings,
    stored_rule: bool,
) -> dict[str, MethodResult]:
    """Each method judged by the protocol's rule, the settings not given taken from the checkpoint's; the model
    by the decision rule it stores, as detect.py applies it, unless it was rescored (stored_rule False)."""
    config = scored.detector.config
    settings = dataclasses.replace(
        settings,
        percentile=config.threshold_percentile if settings.percentile is None else settings.percentile,
        alarm_rule=config.alarm_rule if settings.alarm_rule is None else settings.alarm_rule,
        alarm_window=config.alarm_window if settings.alarm_window is None else settings.alarm_window,
    )
    decide = _decision(rule, ratio, settings, config.val_ratio)
    alarm = AlarmSettings(settings.alarm_rule, settings.percentile, settings.alarm_window)
    model_decide = stored_rule_decision(scored.detector, alarm) if rule == ALARM and stored_rule else decide
    return {name: judge("the checkpoint" if name == "model" else f"the {name} baseline", scored.train[name],
                        scored.test[name], labels, model_decide if name == "model" else decide)
            for name in scored.train}  # fmt: skip


def summary(evaluation: Evaluation) -> dict:
    """The metrics JSON: see the README's "Metrics JSON schema"."""
    results = {}
    for name, method in evaluation.methods.items():
        results[name] = {
            **method.metrics,
            "threshold": method.threshold.value,
            "threshold_rule": method.threshold.rule,
            "threshold_uses_test_scores": method.threshold.uses_test_scores,
            "threshold_uses_test_labels": method.threshold.uses_test_labels,
            "threshold_reads_earlier_test_scores": method.threshold.reads_earlier_test_scores,
            "n_flagged": int(method.predictions.sum()),
            "degenerate": method.degenerate_reason is not None,
            "degenerate_reason": method.degenerate_reason,
            "non_finite_scores": method.non_finite,
        }
    return {
        "dataset": evaluation.dataset,
        "protocol": evaluation.protocol,
        "score_variant": evaluation.scoring.score,
        "scoring": evaluation.scoring.to_dict(),
        "n_points": int(len(evaluation.model.scores)),
        "has_labels": evaluation.labels is not None,
        "oracle_metrics": list(ORACLE_METRICS),
        "results": results,
        "drift": evaluation.drift,
    }


def format_table(evaluation: Evaluation) -> str:
    model = evaluation.model
    header = (
        f"{evaluation.dataset}, {evaluation.protocol} protocol, {evaluation.scoring.describe()}: "
        f"threshold {model.threshold.value:.6g} = {model.threshold.rule} ({model.threshold.data_used()})"
    )
    degenerate = [
        f"{name} is degenerate: {method.degenerate_reason}; its threshold metrics are left out (-)"
        for name, method in evaluation.methods.items()
        if method.degenerate_reason is not None
    ]
    degenerate += [
        f"{name}: {method.non_finite} TEST points have a non-finite score (NaN/Inf, e.g. from extreme input "
        "values); they rank as the most anomalous and are flagged"
        for name, method in evaluation.methods.items()
        if method.non_finite
    ]
    if evaluation.labels is None:
        flagged = f"no test labels: {int(model.predictions.sum())} of {len(model.predictions)} points flagged"
        return "\n".join([header, flagged, *degenerate])
    names = list(evaluation.methods)
    widths = [max(10, len(name) + 1) for name in names]  # a long name (kmeans_level_series) keeps a space
    lines = [header, f"{'metric':<18}" + "".join(f"{name:>{width}}" for name, width in zip(names, widths, strict=True))]
    for key, label in TABLE_ROWS:
        if key in model.metrics:
            values = [evaluation.methods[name].metrics[key] for name in names]
            cells = "".join(f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"
                            for value, width in zip(values, widths, strict=True))  # fmt: skip
            lines.append(f"{label:<18}{cells}")
    lines.extend(degenerate)
    lines.append("PA = point-adjusted: one flagged point marks its whole labelled segment as found.")
    if "best_f1" in model.metrics:
        lines.append("best F1 (oracle) picks one fixed threshold with the test labels: not a result, and no "
                     "bound on a rule whose threshold moves with the recent scores.")
    return "\n".join(lines)


REPORT_METRICS = ("roc_auc", "pr_auc", "vus_pr", "f1", "event_f1", "flagged_share")


def evaluation_page(evaluation: Evaluation) -> ReportPage:
    """The HTML report of one model: a one-row table (the dataset) and its section."""
    model = evaluation.model
    notes = [f"{evaluation.protocol} protocol, {evaluation.scoring.describe()}",
             f"threshold {model.threshold.value:.6g} = {model.threshold.rule} ({model.threshold.data_used()})",
             "metrics on the whole test split as one series (VUS: evaluation/vus.py)"]  # fmt: skip
    metrics = {name: method.metrics for name, method in evaluation.methods.items()}
    entity = ReportEntity(evaluation.dataset, model.scores, model.thresholds, evaluation.labels, evaluation.incidents,
                          metrics, drift_warning(evaluation.drift), evaluation.stamps)  # fmt: skip
    return ReportPage(f"{evaluation.dataset}: anomaly report", notes, list(evaluation.methods), list(REPORT_METRICS),
                      [entity])  # fmt: skip


def write_artifacts(evaluation: Evaluation, output_dir: str | Path, report: str | None = None) -> dict[str, Path]:
    """Write {DATASET}_evaluation.npz, {DATASET}_metrics.json and {DATASET}_scores.png, plus
    {DATASET}_attribution.json/.csv, {DATASET}_incidents.csv/.json, with associations
    {DATASET}_associations.npz/.png, and with report "html" {DATASET}_report.html.

    All of them are written to temp files first and renamed at the end, so a run's artifacts
    replace the previous run's together or not at all (a full disk leaves the old set intact).
    """
    folder = ensure_writable_dir(output_dir)
    keys = ["npz", "json", "plot"]
    if evaluation.attribution is not None:
        keys += ["attribution_json", "attribution_csv", "incidents_csv", "incidents_json"]
    if report == "html":
        keys.append("report")
    if evaluation.associations is not None:
        keys += ["associations_npz", "associations_plot"]
    paths = output_paths(folder, evaluation.dataset, MODEL_OUTPUTS, keys)
    report = summary(evaluation)
    model = evaluation.model
    arrays = {
        "scores": model.scores,
        "train_scores": model.train_scores,
        "predictions": model.predictions,
        "labels": evaluation.labels if evaluation.labels is not None else np.zeros(0, dtype=np.uint8),
        "threshold": np.float64(model.threshold.value),
        "thresholds": model.thresholds,
        "metrics_json": np.array(json.dumps(json_ready(report), allow_nan=False)),
    }
    for name, method in evaluation.methods.items():
        if name != "model":
            arrays[f"{name}_scores"] = method.scores
            arrays[f"{name}_predictions"] = method.predictions
    with atomic_paths(paths.values()) as temps:
        staged = dict(zip(paths, temps, strict=True))
        with open(staged["npz"], "wb") as handle:
            np.savez(handle, **arrays)
        staged["json"].write_text(json_text(report))
        plot_scores(evaluation, staged["plot"])
        if evaluation.attribution is not None:
            document = {"dataset": evaluation.dataset, "score_variant": evaluation.scoring.score}
            document |= evaluation.attribution.to_json()
            staged["attribution_json"].write_text(json_text(document))
            evaluation.attribution.write_csv(staged["attribution_csv"])
            incidents = incidents_document(evaluation.incidents, evaluation.attribution.top_k,
                                           dataset=evaluation.dataset, score_variant=evaluation.scoring.score,
                                           threshold_rule=model.threshold.rule)  # fmt: skip
            staged["incidents_json"].write_text(json_text(incidents))
            write_incidents_csv(incidents, staged["incidents_csv"])
        if "report" in staged:
            write_html_report(evaluation_page(evaluation), staged["report"])
        if evaluation.associations is not None:
            save_association_npz(evaluation.associations, staged["associations_npz"])
            plot_association_maps(evaluation.associations, staged["associations_plot"])
    return paths
