"""What an operator sees at a decision rule: how many points and events it flags, and how many are wrong.

Conventions as in `evaluation.metrics`: `labels` and `flags` are binary (N,) arrays, 1 = anomalous /
flagged; the flags are the rule's final output (after its event logic). An alarm event is a maximal
run of flags; a labelled segment is found when an alarm event overlaps it; an alarm event that
overlaps no labelled point is a false alarm (`event_metrics`, whose precision/recall/F1 these
reuse). A ratio with an empty denominator is None here, so that an entity without anomalies
reports no missed-alarm rate instead of a made-up 0.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import label_segments, precision_recall_f1
from evaluation.range_metrics import event_metrics

# Every key alarm_metrics returns, in the order the reports print them.
ALARM_METRICS = (
    "flagged_share",
    "anomaly_share",
    "false_alarm_rate",
    "missed_alarm_rate",
    "f1",
    "event_precision",
    "event_recall",
    "event_f1",
    "false_alarm_events_per_10k",
    "within_flag_bound",
)


def false_alarm_events(labels: np.ndarray, flags: np.ndarray) -> int:
    """Alarm events (maximal runs of flags) that overlap no labelled point."""
    labelled = np.concatenate([[0], np.cumsum(np.asarray(labels).astype(bool), dtype=np.int64)])
    events = label_segments(flags)
    return int(np.sum(labelled[events[:, 1]] == labelled[events[:, 0]]))


def alarm_metrics(labels: np.ndarray, flags: np.ndarray) -> dict[str, float | None]:
    """flagged and anomaly share, false alarm rate (flagged share of the normal points), missed alarm
    rate (unflagged share of the anomalous points), point F1 at the rule, event precision/recall/F1,
    false alarm events per 10,000 points, and within_flag_bound: 1 where the flagged share is within the
    flood bound (`within_alarm_budget`), so that its mean over entities is the share that do not flood."""
    labels, flags = np.asarray(labels).astype(bool), np.asarray(flags).astype(bool)
    if labels.shape != flags.shape:
        raise ValueError(f"labels {labels.shape} and flags {flags.shape} differ in shape")
    normal, anomalous, flagged = int((~labels).sum()), int(labels.sum()), int(flags.sum())
    has_events = anomalous > 0
    events = event_metrics(labels, flags)
    flagged_share = float(flags.mean()) if len(flags) else None
    anomaly_share = float(labels.mean()) if len(labels) else None
    return {
        "flagged_share": flagged_share,
        "anomaly_share": anomaly_share,
        "false_alarm_rate": float(np.sum(flags & ~labels) / normal) if normal else None,
        "missed_alarm_rate": float(np.sum(~flags & labels) / anomalous) if anomalous else None,
        "f1": precision_recall_f1(labels, flags)["f1"] if has_events else None,
        "event_precision": events["event_precision"] if flags.any() else None,
        "event_recall": events["event_recall"] if has_events else None,
        "event_f1": events["event_f1"] if has_events else None,
        "false_alarm_events_per_10k": false_alarm_events(labels, flags) / len(flags) * 1e4 if len(flags) else None,
        "within_flag_bound": float(within_alarm_budget(flagged, anomalous, len(flags))) if len(flags) else None,
    }


def within_alarm_budget(flagged: int, anomalous: int, points: int) -> bool:
    """The flood bound the reports count: a flagged share at most twice the anomaly share plus one percentage
    point, compared in whole counts (100 flagged <= 200 anomalous + points) so that a share on the bound is within
    it: in floats 7 / 100 > 2 * (3 / 100) + 0.01."""
    return 100 * flagged <= 200 * anomalous + points
