"""Markdown cells of per-seed figures: mean ± sample std over the seeds, as every bench table shows them."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def mean_std_cells(per_seed: Sequence[dict[Hashable, Sequence[float]]], row: Hashable) -> str:
    """One table row's cells: each figure's mean ± sample std over the seeds (± 0.000 for one seed)."""
    stats = np.array([seed_rows[row] for seed_rows in per_seed], dtype=float)
    spread = stats.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(stats.shape[1])
    return " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(stats.mean(axis=0), spread, strict=True))
