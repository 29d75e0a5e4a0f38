"""What a model file holds, as plain JSON-ready values and as readable text: one model's checkpoint in full,
a fleet bundle as its shared settings once and one row per entity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.detector import Detector
from model.fleet import Fleet
from model.schema import FORMAT_VERSION

CHANNELS_LISTED = 20  # wider datasets get a summary line instead of one line per channel
# Shown resolved on the "scoring" line (None there would only mean "the score's own default").
SCORING_FIELDS = ("score", "temperature", "score_channels", "smooth")


# What the bundle's table shows of each entity's own description (describe_detector).
FLEET_ENTITY_FIELDS = ("epochs_run", "best_val_rec", "last_train_rec", "threshold")
CONSTANT_LISTED = 8  # channels named on the line of the ones constant in TRAIN


def describe(fleet: Fleet, path: Path) -> dict:
    """Everything a person opening the file by hand wants, as plain JSON-ready values. Each entity's model is
    read by describe_detector, the same alone or in a fleet: a single model's checkpoint (a fleet of one, as
    open_fleet gives it) shows that description whole; a bundle shows the shared config once, then a row of
    each entity's."""
    # Every file that opens has this format: open_fleet refuses any other version.
    file = {"file": str(path), "file_bytes": path.stat().st_size, "format_version": FORMAT_VERSION}
    described = {name: describe_detector(detector) for name, detector in fleet.detectors.items()}
    if fleet.single:
        return {**file, **described[fleet.order[0]]}
    entities = {name: {"train_rows": entity["dataset"].get("train_length"),
                       **{key: entity[key] for key in FLEET_ENTITY_FIELDS},
                       "constant_in_train": entity["normalization"]["constant_in_train"],
                       "seconds": fleet.seconds.get(name, 0.0)}
                for name, entity in described.items()}  # fmt: skip
    return {
        **file,
        "dataset": fleet.dataset,
        "config": fleet.config.to_dict(),
        "normalisation": fleet.normalisation,
        "complete": fleet.complete,
        "scoring_described": next(iter(fleet.detectors.values())).scoring_.describe() if fleet.detectors else "-",
        "entities": entities,
        "skipped": fleet.skipped,
    }


def describe_detector(detector: Detector) -> dict:
    """One model: its data, architecture, settings, training history, normaliser, stored thresholds, scoring."""
    history = detector.history_
    mean = detector.normalizer_.mean.astype(np.float64)
    std = detector.normalizer_.std.astype(np.float64)
    validation = [record["val_rec"] for record in history if "val_rec" in record]
    return {
        "created": detector.created_,
        "dataset": detector.dataset_,
        "model_config": detector.model_.config.to_dict(),
        "parameters": int(sum(p.numel() for p in detector.model_.parameters())),
        "config": detector.config.to_dict(),
        "best_epoch": detector.best_epoch_,
        "epochs_run": len(history),
        "best_val_rec": min(validation) if validation else None,
        "last_train_rec": history[-1]["train_rec"] if history else None,
        "wall_seconds": float(sum(record.get("seconds", 0.0) for record in history)),
        "history": history,
        "normalization": {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "mean_range": [float(mean.min()), float(mean.max())],
            "std_range": [float(std.min()), float(std.max())],
            # A channel that never moved in TRAIN: the model never saw it move, so any later movement scores high.
            "constant_in_train": detector.constant_channels,
            "constant_recorded": detector.normalizer_.constant is not None,  # older files: those with std exactly 1
        },
        "threshold": detector.threshold_,
        "decision_rule": _rule_record(detector),
        "stored_thresholds": detector.train_score_stats_,
        "train_channel_error": detector.train_channel_error_,
        "scoring": detector.scoring_.to_dict(),
        "scoring_described": detector.scoring_.describe(),
        "versions": detector.versions_,
    }


def _rule_record(detector: Detector) -> dict:
    """The decision rule detect.py applies, in words and numbers; stored: False for a checkpoint written before."""
    rule = detector.decision_rule()
    return {"kind": rule.kind, "percentile": rule.percentile, "window": rule.window, "threshold": rule.threshold,
            "train_scores_remembered": len(rule.train_tail), "train_spread": rule.train_spread,
            "stored": detector.alarm_rule_ is not None, "description": rule.describe()}  # fmt: skip


def constant_text(names: list[str], recorded: bool = True) -> str:
    """The channels constant in TRAIN, in words: any movement of theirs later scores as anomalous."""
    if not recorded:
        return (f"{len(names)} channels with std exactly 1 (constant in TRAIN, or standardised beforehand; "
                "files this old do not record which)")  # fmt: skip
    if not names:
        return "no channel constant in TRAIN"
    shown = ", ".join(names[:CONSTANT_LISTED]) + (", ..." if len(names) > CONSTANT_LISTED else "")
    return f"{len(names)} constant in TRAIN ({shown}): the model never saw them move"


def _history_lines(history: list[dict], best_epoch: int | None) -> list[str]:
    columns = ("train_rec", "val_rec", "train_loss1", "train_loss2")
    shown = [name for name in columns if any(name in record for record in history)]
    lines = [f"  {'epoch':>5} {'lr':>9} " + " ".join(f"{name:>12}" for name in shown) + f" {'seconds':>8}"]
    for record in history:
        values = " ".join(f"{record[name]:>12.5f}" if name in record else f"{'-':>12}" for name in shown)
        epoch, lr, seconds = record.get("epoch", "?"), record.get("lr", 0.0), record.get("seconds", 0.0)
        mark = "  best" if epoch == best_epoch else ""
        lines.append(f"  {epoch:>5} {lr:>9.2e} {values} {seconds:>8.1f}{mark}")
    return lines


def format_text(described: dict) -> str:
    """The text of describe(): a single model in full, a bundle as a table of its entities."""
    return _fleet_text(described) if "entities" in described else _model_text(described)


def _model_text(described: dict) -> str:
    dataset, model = described["dataset"], described["model_config"]
    shown_elsewhere = {*SCORING_FIELDS, *model}  # the model and scoring lines show these
    train = {key: value for key, value in described["config"].items() if key not in shown_elsewhere}
    normalization = described["normalization"]
    size = described["file_bytes"] / 2**20
    lines = [
        f"checkpoint   {described['file']} ({size:.2f} MiB, format version {described['format_version']})",
        f"created      {described['created'] or 'not recorded (written before this field existed)'}",
        f"dataset      {dataset.get('name')}: {dataset.get('n_channels')} channels, "
        f"train {dataset.get('train_length')} and test {dataset.get('test_length')} steps",
        f"fingerprint  {dataset.get('fingerprint')} (TRAIN and TEST); TRAIN alone, which evaluate.py matches: "
        f"{dataset.get('train_fingerprint') or 'not recorded (written before this field existed)'}",
        "model        " + ", ".join(f"{key} {value}" for key, value in model.items()),
        f"parameters   {described['parameters']:,}",
        "training     " + ", ".join(f"{key} {value}" for key, value in train.items()),
        f"history      {described['epochs_run']} epoch(s), best epoch {described['best_epoch']}, "
        f"wall time {described['wall_seconds']:.1f} s",
        *_history_lines(described["history"], described["best_epoch"]),
        f"normalization  mean in [{normalization['mean_range'][0]:.4g}, {normalization['mean_range'][1]:.4g}], "
        f"std in [{normalization['std_range'][0]:.4g}, {normalization['std_range'][1]:.4g}]; "
        + constant_text(normalization["constant_in_train"], normalization["constant_recorded"]),
    ]
    names = dataset.get("channel_names", [])
    if len(names) <= CHANNELS_LISTED:
        for name, mean, std in zip(names, normalization["mean"], normalization["std"], strict=False):
            lines.append(f"  {name:<24} mean {mean:>12.5g}  std {std:>12.5g}")
    lines.append("scoring      " + described["scoring_described"])
    thresholds = described["stored_thresholds"]
    if thresholds:
        percentiles = ", ".join(f"{float(q):g}th {value:.6g}" for q, value in thresholds.get("percentiles", {}).items())
        mean, std = thresholds.get("mean"), thresholds.get("std")
        lines.append(
            f"thresholds   TRAIN scores ({thresholds.get('count')} points, scored as above): "
            f"mean {mean:.6g}, std {std:.6g}; percentiles {percentiles}"
        )
    else:
        lines.append("thresholds   none stored")
    rule = described["decision_rule"]
    if rule["stored"]:
        lines.append(f"rule         {rule['kind']}: {rule['description']}; remembers the last "
                     f"{rule['train_scores_remembered']} TRAIN scores, their robust spread {rule['train_spread']:.6g}")
    else:
        lines.append(f"rule         not stored (the file is older than the rule): detect.py starts from the "
                     f"{rule['percentile']:g}th TRAIN percentile ({rule['threshold']:.6g}) with no remembered scores "
                     "and no guard; retrain for the full rule")  # fmt: skip
    lines.append("versions     " + ", ".join(f"{key} {value}" for key, value in described["versions"].items()))
    return "\n".join(lines)


def _fleet_text(described: dict) -> str:
    entities = described["entities"]
    lines = [
        f"fleet        {described['file']} ({described['file_bytes'] / 2**20:.2f} MiB, format version "
        f"{described['format_version']}): {described['dataset']}, "
        f"{len(entities)} entities trained, {len(described['skipped'])} skipped"
        + ("" if described["complete"] else ", incomplete (resume with train.py --per-entity --resume)"),
        "config       "
        + ", ".join(f"{key} {value}" for key, value in described["config"].items() if key not in SCORING_FIELDS),
        f"scoring      {described['scoring_described']}",
        f"normalised   per {described['normalisation']}",
        f"  {'entity':<16} {'rows':>7} {'epochs':>6} {'val rec':>10} {'train rec':>10} {'threshold':>11} "
        f"{'seconds':>8} {'constant':>8}",
    ]
    for name, entity in entities.items():
        val = "-" if entity["best_val_rec"] is None else f"{entity['best_val_rec']:.5f}"
        train = "-" if entity["last_train_rec"] is None else f"{entity['last_train_rec']:.5f}"
        lines.append(f"  {name:<16} {entity['train_rows']:>7} {entity['epochs_run']:>6} {val:>10} {train:>10} "
                     f"{entity['threshold']:>11.5g} {entity['seconds']:>8.1f} "
                     f"{len(entity['constant_in_train']):>8}")  # fmt: skip
    for name, reason in described["skipped"].items():
        lines.append(f"  {name:<16} skipped: {reason}")
    seconds = [entity["seconds"] for entity in entities.values()]
    if seconds:
        lines.append(f"summary      {sum(seconds):.1f} s of training in all, {np.mean(seconds):.1f} s per entity")
    return "\n".join(lines)
