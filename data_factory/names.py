"""The names every loader shares: the default data folder and the label artifacts carry."""

from __future__ import annotations

DEFAULT_DATA_DIR = "~/.cache/cvlization/anomaly_data"


def dataset_label(name: str, entity: str | None = None) -> str:
    """The name artifacts carry: SMAP for the whole dataset, SMAP_A-1 for one entity."""
    return name.upper() if entity is None else f"{name.upper()}_{entity}"
