"""Show what a checkpoint holds: python inspect_checkpoint.py artifacts/SYNTH_checkpoint.pth [--json]

The file is opened with torch.load(weights_only=True), which only rebuilds tensors, numbers,
strings, lists and dicts: a file that would run code when unpickled is refused, never executed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from data_factory import UserInputError
from model.checkpoint import load_checkpoint, scoring_from_checkpoint
from model.score_settings import ScoreSettings

CHANNELS_LISTED = 20  # wider datasets get a summary line instead of one line per channel


def _plain(value: object) -> object:
    """JSON-ready copy: tensors become lists."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def describe(checkpoint: dict, path: Path) -> dict:
    """Everything a person opening the checkpoint by hand wants, as plain JSON-ready values."""
    history = checkpoint.get("history", [])
    mean = checkpoint["normalization"]["mean"].double().numpy()
    std = checkpoint["normalization"]["std"].double().numpy()
    described = {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "format_version": checkpoint["format_version"],
        "created": checkpoint.get("created"),
        "dataset": _plain(checkpoint["dataset"]),
        "model_config": _plain(checkpoint["model_config"]),
        "parameters": int(sum(tensor.numel() for tensor in checkpoint["model_state"].values())),
        "train_config": _plain(checkpoint.get("train_config", {})),
        "best_epoch": checkpoint.get("best_epoch"),
        "epochs_run": len(history),
        "wall_seconds": float(sum(record.get("seconds", 0.0) for record in history)),
        "history": _plain(history),
        "normalization": {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "mean_range": [float(mean.min()), float(mean.max())],
            "std_range": [float(std.min()), float(std.max())],
            "unit_std_channels": int(np.sum(std == 1.0)),  # includes columns that never moved in TRAIN
        },
        "stored_thresholds": _plain(checkpoint.get("train_scores")),
        "scoring": scoring_from_checkpoint(checkpoint).to_dict(),
        "versions": _plain(checkpoint.get("versions", {})),
    }
    known = {"model_state", "normalization", "train_scores"} | described.keys()
    described["other_keys"] = sorted(key for key in checkpoint if key not in known)
    return described


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
    dataset, model = described["dataset"], described["model_config"]
    train = described["train_config"]
    normalization = described["normalization"]
    size = described["file_bytes"] / 2**20
    lines = [
        f"checkpoint   {described['file']} ({size:.2f} MiB, format {described['format_version']})",
        f"created      {described['created'] or 'not recorded (written before this field existed)'}",
        f"dataset      {dataset.get('name')}: {dataset.get('n_channels')} channels, "
        f"train {dataset.get('train_length')} and test {dataset.get('test_length')} steps",
        f"fingerprint  {dataset.get('fingerprint')}",
        "model        " + ", ".join(f"{key} {value}" for key, value in model.items()),
        f"parameters   {described['parameters']:,}",
        "training     " + ", ".join(f"{key} {value}" for key, value in train.items()),
        f"history      {described['epochs_run']} epoch(s), best epoch {described['best_epoch']}, "
        f"wall time {described['wall_seconds']:.1f} s",
        *_history_lines(described["history"], described["best_epoch"]),
        f"normalization  mean in [{normalization['mean_range'][0]:.4g}, {normalization['mean_range'][1]:.4g}], "
        f"std in [{normalization['std_range'][0]:.4g}, {normalization['std_range'][1]:.4g}]; "
        f"{normalization['unit_std_channels']} channels with std exactly 1 (e.g. constant in TRAIN)",
    ]
    names = dataset.get("channel_names", [])
    if len(names) <= CHANNELS_LISTED:
        for name, mean, std in zip(names, normalization["mean"], normalization["std"], strict=False):
            lines.append(f"  {name:<24} mean {mean:>12.5g}  std {std:>12.5g}")
    lines.append("scoring      " + ScoreSettings.from_dict(described["scoring"]).describe())
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
    lines.append("versions     " + ", ".join(f"{key} {value}" for key, value in described["versions"].items()))
    if described["other_keys"]:
        lines.append("other keys   " + ", ".join(described["other_keys"]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspect_checkpoint.py", description="Print what a checkpoint holds, without running any code from it."
    )
    parser.add_argument("checkpoint", help="a checkpoint written by train.py, e.g. artifacts/SYNTH_checkpoint.pth")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint).expanduser()
    try:
        described = describe(load_checkpoint(path), path)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(described, indent=2) if args.json else format_text(described))
    return 0


if __name__ == "__main__":
    sys.exit(main())
