"""Simple baselines scored on the same data as the model, so its numbers have context.

Sarfraz et al. (ICML 2024) show such baselines match deep detectors on SMAP, MSL, SMD and PSM.
Each returns (train_scores, test_scores) over the normalised series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA

from data_factory.errors import UserInputError

BASELINE_NAMES = ("random", "pca")


def random_baseline_scores(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform score: what any protocol gives a detector that knows nothing."""
    rng = np.random.default_rng(seed)
    return rng.random(n_train), rng.random(n_test)


def pca_baseline_scores(
    train: np.ndarray, test: np.ndarray, variance: float = 0.95, channels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point reconstruction MSE of a PCA fitted on TRAIN keeping `variance` of its variance,
    over `channels` only where given (the model's --score-channels, for a like-for-like comparison)."""
    pca = PCA(n_components=variance if train.shape[1] > 1 else None, svd_solver="full").fit(train)
    kept = slice(None) if channels is None else list(channels)

    def error(series: np.ndarray) -> np.ndarray:
        return np.mean(((series - pca.inverse_transform(pca.transform(series))) ** 2)[:, kept], axis=1)

    return error(train), error(test)


def parse_baselines(text: str) -> tuple[str, ...]:
    """'none', 'all', or a comma-separated list such as 'random,pca'."""
    if text == "none":
        return ()
    if text == "all":
        return BASELINE_NAMES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise UserInputError(
            f"unknown baseline {unknown[0]!r}; use none, all, or a list of {', '.join(BASELINE_NAMES)}"
        )
    return names
