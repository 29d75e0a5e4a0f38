"""The files evaluate.py writes beside a model, by key and name ({STEM}_{name}), so that a run can tell which
files in its folder it did not write: those are left from an earlier run and may describe another model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# One model (write_artifacts): STEM is the dataset's label (e.g. MSL, CUSTOM, MSL_C-1).
MODEL_OUTPUTS = {
    "npz": "evaluation.npz",
    "json": "metrics.json",
    "plot": "scores.png",
    "attribution_json": "attribution.json",
    "attribution_csv": "attribution.csv",
    "incidents_csv": "incidents.csv",
    "incidents_json": "incidents.json",
    "report": "report.html",
    "associations_npz": "associations.npz",
    "associations_plot": "associations.png",
}
# Per entity (write_fleet_artifacts): STEM is {DATASET}_fleet or {DATASET}_shared.
FLEET_OUTPUTS = {
    "json": "metrics.json",
    "csv": "entities.csv",
    "worst": "worst.png",
    "best": "best.png",
    "incidents_csv": "incidents.csv",
    "incidents_json": "incidents.json",
    "report": "report.html",
}


def output_paths(folder: Path, stem: str, outputs: dict[str, str], keys: Iterable[str]) -> dict[str, Path]:
    """key -> {folder}/{STEM}_{name} for the given keys of `outputs`."""
    return {key: folder / f"{stem}_{outputs[key]}" for key in keys}


def left_from_earlier(folder: Path, stem: str, outputs: dict[str, str], written: Iterable[Path] = ()) -> list[Path]:
    """The files of `outputs` under `stem` that exist in folder but are not among `written`."""
    names = {Path(path).name for path in written}
    candidates = output_paths(folder, stem, outputs, outputs).values()
    return [path for path in candidates if path.name not in names and path.exists()]


def earlier_outputs_note(folder: Path, stem: str, outputs: dict[str, str], written: Iterable[Path]) -> str | None:
    """evaluate.py's note on the files of an earlier evaluation that this one did not replace, or None."""
    earlier = left_from_earlier(folder, stem, outputs, written)
    if not earlier:
        return None
    names = ", ".join(path.name for path in earlier)
    return (f"note: {names} in {folder} were not written by this run: they are from an earlier evaluation "
            "(other flags, e.g. --report html, or another model) and may not match it")  # fmt: skip
