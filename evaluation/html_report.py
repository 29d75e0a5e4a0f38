"""The report to look at: one self-contained HTML file (figures inline as base64 PNG, a few lines of
inline JS to sort the table, nothing fetched from the network), rendered with Jinja2, whose
autoescaping keeps entity and sensor names from an input file as text.

A page is a table of entities by metric and method, then one section per entity: its score with
the threshold, the labelled segments, the incidents and their top sensors.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from evaluation.incidents import Incident
from evaluation.metrics import label_segments
from evaluation.plots import entity_figure_png

TEMPLATE = "report.html"
SHOWN_INCIDENTS = 50  # per entity; the incidents CSV has them all
METRIC_LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "vus_pr": "VUS-PR (all thresholds)",
                 "tsb_vus_pr": "VUS-PR (TSB-AD)", "f1": "F1 at rule", "event_f1": "event F1",
                 "flagged_share": "flagged share"}  # fmt: skip


# The entity table shows every method up to this many; beyond, the model beside the strongest baseline.
MOST_METHODS_SHOWN = 3
STRONGEST, ANOMALOUS = "strongest baseline", "anomalous"


@dataclass
class ReportEntity:
    name: str
    scores: np.ndarray  # (N,) TEST scores
    thresholds: np.ndarray  # (N,) the threshold at each point
    labels: np.ndarray | None  # (N,) uint8, None without labels
    incidents: list[Incident]
    metrics: dict[str, dict[str, float | None]]  # method -> metric -> value
    drift: str | None = None  # the drift warning of its TEST against its model's TRAIN (evaluation/drift.py), if any
    times: np.ndarray | None = None  # (N,) TEST's times as text, where it has them: the incidents show them too

    @property
    def shown_incidents(self) -> list[Incident]:
        """Every incident in order, or the SHOWN_INCIDENTS most severe where there are more."""
        if len(self.incidents) <= SHOWN_INCIDENTS:
            return self.incidents
        ranked = sorted(self.incidents, key=lambda i: -math.inf if i.severity is None else i.severity, reverse=True)
        return ranked[:SHOWN_INCIDENTS]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """Labelled segments as (start, end inclusive)."""
        if self.labels is None:
            return []
        return [(int(start), int(stop - 1)) for start, stop in label_segments(self.labels)]

    @property
    def segment_spans(self) -> list[tuple[str, str]]:
        """Labelled segments as shown: their first and last times where TEST has them, as its incidents are shown,
        so that an incident and the fault it overlaps read on one clock; else their positions."""
        if self.times is None:
            return [(str(start), str(end)) for start, end in self.segments]
        return [(str(self.times[start]), str(self.times[end])) for start, end in self.segments]


@dataclass
class ReportPage:
    title: str
    notes: list[str]  # one line each: protocol, score, threshold rule
    methods: list[str]  # "model" first
    metrics: list[str]  # keys of METRIC_LABELS
    entities: list[ReportEntity] = field(default_factory=list)


def _cell(value: float | None) -> tuple[str, str]:
    """(shown text, sort key): a missing value shows '-' and sorts last."""
    if value is None or not math.isfinite(value):
        return "-", ""
    return f"{value:.3f}", repr(float(value))


def columns(page: ReportPage) -> list[tuple[str, list[str]]]:
    """Each metric of the entity table with its sub-columns: every method's while they fit on a screen; beside a
    longer panel (evaluate.py --per-entity's dozen baselines), the model's and the strongest baseline's, and the
    anomaly share beside the flagged share (every method's figures are in the entities CSV)."""
    if not _compact(page):
        return [(metric, list(page.methods)) for metric in page.metrics]
    return [(metric, ["model", ANOMALOUS if metric == "flagged_share" else STRONGEST]) for metric in page.metrics]


def _compact(page: ReportPage) -> bool:
    """Whether the panel is too long to show every method: then each metric shows the strongest baseline."""
    return len(page.methods) > MOST_METHODS_SHOWN


def _strongest(entity: ReportEntity, metric: str) -> tuple[str, str]:
    """The highest value of `metric` among the baselines, with its name; its value is the sort key."""
    values = [(value, name) for name, metrics in entity.metrics.items() if name != "model"
              for value in [metrics.get(metric)] if value is not None and math.isfinite(value)]  # fmt: skip
    if not values:
        return "-", ""
    value, name = max(values)
    return f"{value:.3f} {name}", repr(float(value))


def _column_cell(entity: ReportEntity, metric: str, column: str) -> tuple[str, str]:
    if column == STRONGEST:
        return _strongest(entity, metric)
    if column == ANOMALOUS:
        return _cell(entity.metrics.get("model", {}).get("anomaly_share"))
    return _cell(entity.metrics.get(column, {}).get(metric))


def _rows(page: ReportPage) -> list[dict]:
    rows = []
    for entity in page.entities:
        severities = [i.severity for i in entity.incidents if i.severity is not None]
        cells = [_column_cell(entity, metric, column) for metric, sub in columns(page) for column in sub]
        cells += [(str(len(entity.incidents)), str(len(entity.incidents))), _cell(max(severities, default=None))]
        rows.append({"name": entity.name, "cells": cells})
    return rows


def render_html(page: ReportPage) -> str:
    """The page as one HTML document."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("evaluation", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    figures = {
        entity.name: base64.b64encode(
            entity_figure_png(entity.scores, entity.thresholds, entity.labels, entity.incidents, entity.name)
        ).decode("ascii")
        for entity in page.entities
    }
    return environment.get_template(TEMPLATE).render(page=page, labels=METRIC_LABELS, columns=columns(page),
                                                     compact=_compact(page),
                                                     rows=_rows(page), figures=figures)  # fmt: skip


def write_html_report(page: ReportPage, path: Path) -> None:
    Path(path).write_text(render_html(page), encoding="utf-8")
