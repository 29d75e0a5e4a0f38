"""The names every loader shares: the default data folder and the label artifacts carry."""

from __future__ import annotations

DEFAULT_DATA_DIR = "~/.cache/cvlization/anomaly_data"


def dataset_label(name: str, entity: str | None = None) -> str:
    """The name artifacts carry: SMAP for the whole dataset, SMAP_A-1 for one entity."""
    return name.upper() if entity is None else f"{name.upper()}_{entity}"


def label_flags(label: str, dataset_names: tuple[str, ...]) -> str | None:
    """The CLI flags that load the data a label names (SMD_machine-1-3: --dataset SMD --entity machine-1-3),
    or None where the label is no registered dataset's (a model fitted from Python on an array)."""
    name, _, entity = label.partition("_")
    if name not in dataset_names:
        return None
    return f"--dataset {name}" + (f" --entity {entity}" if entity else "")
