"""Grade one method on one series: every metric the reports and the benches give comes from `grade`.

The inputs are the TEST labels, the method's TRAIN and TEST scores, and the decision: the flags the
rule raised on TEST and each point's threshold (`AlarmRule.flags` in model/alarm_rule.py gives both;
a fixed threshold is one number). evaluate.py's whole-series report, the fleet report's per-entity
metrics and its whole-series panel, and the benches all call it. To add a metric, add it here.

Two rules are applied here and nowhere else:
- labels of one class only (no anomaly, or every point anomalous): the ranking metrics, which read
  the scores alone, are undefined and None;
- a degenerate method (evaluation/degenerate.py): its flags mean nothing, so every metric that reads
  them is None, except the flagged share, which shows the degeneracy (and the anomaly share, which
  reads the labels alone).

Where a ratio's denominator is empty, the point-wise, point-adjusted and event-wise metrics of the
whole-series panel are 0 (the field's convention), and the alarm metrics are None
(evaluation/alarm_metrics.py), so that an entity without anomalies or without alarms stays out of
the fleet's means. Wherever both are defined, a key is one number in every output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.affiliation import affiliation_metrics
from evaluation.alarm_metrics import ALARM_METRICS, alarm_metrics
from evaluation.degenerate import degenerate_reason
from evaluation.metrics import best_f1, point_adjust, pr_auc, precision_recall_f1, roc_auc
from evaluation.range_metrics import event_metrics, pa_k_f1, pa_k_f1_auc
from evaluation.tsb_vus import tsb_vus
from evaluation.vus import DEFAULT_MAX_BUFFER, vus

# Metrics that pick their own threshold with the test labels: never results (bounds on fixed thresholds only).
ORACLE_METRICS = ("best_f1",)
# Read the scores alone (no flags): None where the labels hold one class.
SCORE_METRICS = ("roc_auc", "pr_auc", "vus_roc", "vus_pr", "tsb_vus_pr", "tsb_vus_roc", "tsb_vus_window", "best_f1")
# What a degenerate method keeps: the metrics that do not read the flags, the flagged share, and whether that floods
# (a method that flags every point is the worst flood an operator can get).
KEPT_WHEN_DEGENERATE = (*SCORE_METRICS, "anomaly_share", "flagged_share", "within_flag_bound")
# The per-entity ranking metrics: TSB-AD's VUS (evaluation/tsb_vus.py), best_f1 the oracle beside the F1 at the rule.
RANKING_METRICS = ("roc_auc", "pr_auc", "tsb_vus_pr", "tsb_vus_roc", "best_f1")
# Every per-entity metric, in the order of the fleet's JSON and CSV.
PER_ENTITY_METRICS = (*RANKING_METRICS, *ALARM_METRICS)
# The alarm metrics the whole-series panel adds to its point-wise and event-wise ones.
PANEL_ALARM_COUNTS = ("anomaly_share", "false_alarm_rate", "missed_alarm_rate", "false_alarm_events_per_10k")


@dataclass(frozen=True)
class Grade:
    """One method graded on one series. Every dict is empty without labels."""

    flags: np.ndarray  # (N,) uint8, the decision's flags on TEST
    degenerate_reason: str | None  # set: the flags mean nothing, and the metrics that read them are None
    two_classes: bool  # the labels hold both classes: the ranking metrics are defined
    ranking: dict[str, float | None] = field(default_factory=dict)  # SCORE_METRICS that were asked for
    alarms: dict[str, float | None] = field(default_factory=dict)  # ALARM_METRICS at the flags
    panel: dict[str, float | None] = field(default_factory=dict)  # the whole-series panel, where asked for

    def per_entity(self) -> dict[str, float | None]:
        """The per-entity metrics (PER_ENTITY_METRICS, and TSB-AD's VUS window where it was computed)."""
        window = self.ranking.get("tsb_vus_window")
        window = {} if window is None else {"tsb_vus_window": window}
        return {**{key: self.ranking.get(key) for key in RANKING_METRICS}, **window, **self.alarms}


def grade(
    labels: np.ndarray | None,
    train_scores: np.ndarray,
    test_scores: np.ndarray,
    flags: np.ndarray,
    thresholds: np.ndarray | float,
    *,
    tsb_window: int | None = None,
    panel: bool = False,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> Grade:
    """Grade the flags (N,) and the TEST scores (N,) against the labels (N,), or only tell whether the
    method is degenerate when there are no labels.

    thresholds: each TEST point's threshold (N,) or one number, as the rule gave the flags; with the
    TRAIN scores they tell whether the flags mean anything. Always computed: ROC-AUC, PR-AUC, the
    oracle best F1 and the alarm metrics. tsb_window: also TSB-AD's VUS with that sliding window (the
    per-entity protocol). panel: also the whole-series panel: point-wise, point-adjusted, PA%K,
    event-wise and affiliation metrics, the alarm counts, and the all-thresholds VUS with buffers up
    to max_buffer.
    """
    flags = np.asarray(flags).astype(np.uint8)
    reason = degenerate_reason(train_scores, test_scores, thresholds)
    if labels is None:
        return Grade(flags, reason, False)
    labels = np.asarray(labels)
    two_classes = 0 < int(labels.astype(bool).sum()) < len(labels)
    ranking = _ranking(labels, test_scores, two_classes, tsb_window, panel, max_buffer)
    alarms = alarm_metrics(labels, flags)
    whole = _panel(labels, flags, ranking, alarms) if panel else {}
    if reason is not None:
        alarms, whole = _without_flag_metrics(alarms), _without_flag_metrics(whole)
    return Grade(flags, reason, two_classes, ranking, alarms, whole)


def _ranking(labels, scores, two_classes, tsb_window, all_thresholds_vus, max_buffer) -> dict[str, float | None]:
    keys = ["roc_auc", "pr_auc", "best_f1"]
    if all_thresholds_vus:
        keys += ["vus_roc", "vus_pr"]
    if tsb_window is not None:
        keys += ["tsb_vus_pr", "tsb_vus_roc", "tsb_vus_window"]
    if not two_classes:
        return dict.fromkeys(keys)
    ranking = {"roc_auc": roc_auc(labels, scores), "pr_auc": pr_auc(labels, scores), "best_f1": best_f1(labels, scores)}
    if all_thresholds_vus:
        ranking |= vus(labels, scores, max_buffer)
    if tsb_window is not None:
        volumes = tsb_vus(labels, scores, window=tsb_window)
        ranking |= {"tsb_vus_pr": volumes["vus_pr"], "tsb_vus_roc": volumes["vus_roc"],
                    "tsb_vus_window": volumes["window"]}  # fmt: skip
    return ranking


def _panel(labels: np.ndarray, flags: np.ndarray, ranking: dict, alarms: dict) -> dict[str, float | None]:
    """The whole-series panel, in the order evaluate.py's JSON lists it."""
    adjusted = precision_recall_f1(labels, point_adjust(labels, flags))
    return {
        **precision_recall_f1(labels, flags),
        "roc_auc": ranking["roc_auc"],
        "pr_auc": ranking["pr_auc"],
        "pa_precision": adjusted["precision"],
        "pa_recall": adjusted["recall"],
        "pa_f1": adjusted["f1"],
        "flagged_share": alarms["flagged_share"],
        **{key: alarms[key] for key in PANEL_ALARM_COUNTS},
        "pa_k20_f1": pa_k_f1(labels, flags, 20),
        "pa_k100_f1": pa_k_f1(labels, flags, 100),
        "pa_k_f1_auc": pa_k_f1_auc(labels, flags),
        **event_metrics(labels, flags),
        **affiliation_metrics(labels, flags),
        "vus_roc": ranking["vus_roc"],
        "vus_pr": ranking["vus_pr"],
        "best_f1": ranking["best_f1"],
    }


def _without_flag_metrics(metrics: dict) -> dict:
    return {key: value if key in KEPT_WHEN_DEGENERATE else None for key, value in metrics.items()}
