"""One series' TRAIN and TEST scored by its detector and by each baseline on the same points: the
baselines read the detector's normalised input and its score channels, and are smoothed as its score
is, so that only the method differs. evaluate.py's report (one model) and the per-entity report (each
entity of a fleet) both score this way, then grade with evaluation/grading.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_factory.dataset import TimeSeriesDataset
from evaluation.baselines import baseline_scores
from model.detector import Detector
from model.score_settings import ScoreSettings, override_score_settings
from model.scoring import PointValues, resolve_device, smooth_scores
from runtime.distributed import DistributedContext
from runtime.errors import UserInputError


def check_scoring_flags(batch_size: int, seed: int, device: str) -> None:
    """The flags every evaluation shares, refused before any data or checkpoint is read."""
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be positive, got {batch_size}")
    if not 0 <= seed < 2**32:
        raise UserInputError(f"--seed must be in [0, 2**32), got {seed}")
    resolve_device(device)


@dataclass
class MethodScores:
    detector: Detector  # rescored with `scoring`
    scoring: ScoreSettings
    train_points: PointValues  # the model's, with the per-channel errors that attribution and incidents read
    test_points: PointValues
    normalised_test: np.ndarray  # what the model and the baselines read
    train: dict[str, np.ndarray]  # method -> TRAIN scores, "model" first
    test: dict[str, np.ndarray]  # method -> TEST scores
    failed: dict[str, str] = field(default_factory=dict)  # baseline -> why it could not run on this series

    @property
    def train_channel_error(self) -> np.ndarray:
        """Each channel's mean TRAIN reconstruction error (C,): the stored one, or from these TRAIN errors for
        checkpoints written before it was stored."""
        stored = self.detector.train_channel_error_
        return stored if stored is not None else self.train_points.errors.mean(axis=0, dtype=np.float64)


def score_methods(
    detector: Detector,
    data: TimeSeriesDataset,
    baselines: tuple[str, ...],
    *,
    score: str | None = None,
    score_channels: str | None = None,
    smooth: int | None = None,
    temperature: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    context: DistributedContext | None = None,
    keep_going: bool = False,
) -> MethodScores | None:
    """The model's scores (its stored scoring, changed only where score, score_channels, smooth or temperature are
    given) and each baseline's. keep_going: a baseline that cannot run on this series (e.g. a TEST
    shorter than its window) is recorded in `failed` instead of stopping the run. Under torchrun
    (`context`) the ranks share the model's passes; rank 0 gets the result, the others None."""
    scoring = override_score_settings(detector.scoring_, score, score_channels, smooth, data.channel_names,
                                      data.target_channels, train_length=len(data.train),
                                      temperature=temperature)  # fmt: skip
    detector = detector.rescored(scoring)
    train_points = detector.score_points(data.train, batch_size=batch_size, context=context,
                                         what=f"TRAIN of {data.name}")  # fmt: skip
    test_points = detector.score_points(data.test, batch_size=batch_size, context=context, what=f"TEST of {data.name}")
    if context is not None and not context.is_main:
        return None
    train, test = detector.normalizer_.transform(data.train), detector.normalizer_.transform(data.test)
    scores = MethodScores(detector, scoring, train_points, test_points, test, {"model": train_points.scores},
                          {"model": test_points.scores})  # fmt: skip
    for name in baselines:
        try:
            pair = baseline_scores(name, train, test, channels=scoring.channels, seed=seed)
        except UserInputError as error:
            if not keep_going:
                raise
            scores.failed[name] = str(error)
            continue
        # The model's scores come smoothed already; the baselines are smoothed the same way.
        scores.train[name], scores.test[name] = (smooth_scores(part, scoring.smooth) for part in pair)
    return scores
