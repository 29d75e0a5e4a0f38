"""bench/online_adaptation.py: the quiet runs on a toy worked by hand, and the chunked fine-tuning on a tiny
model: nothing learned before a chunk is scored, and nothing learned when no window is quiet."""

from __future__ import annotations

import numpy as np

from bench.online_adaptation import CHUNK, adapted_errors, quiet_runs
from data_factory.registry import load_synth
from model.config import DetectorConfig
from model.detector import Detector


def test_quiet_runs_are_the_runs_under_the_limit_long_enough_for_a_window():
    scores = np.array([1, 1, 1, 9, 1, 1, 1, 1, 9, 9, 1], dtype=float)
    assert quiet_runs(scores, limit=5.0, window=3) == [(0, 3), (4, 8)]  # the last run holds 1 point
    assert quiet_runs(scores, limit=0.5, window=1) == []


def tiny_detector() -> tuple[Detector, np.ndarray]:
    data = load_synth()
    config = DetectorConfig(d_model=16, n_heads=2, e_layers=1, d_ff=32, win_size=20, epochs=1, train_stride=20,
                            device="cpu", smooth=0, val_ratio=0.0)  # fmt: skip
    return Detector(config).fit(data, progress=False, log=lambda _: None), data.test[: 2 * CHUNK + 500]


def test_the_first_chunk_is_scored_by_the_shipped_model_and_the_later_ones_by_a_tuned_one():
    detector, test = tiny_detector()
    shipped = detector.score(test)
    adapted = adapted_errors(detector, test, train_limit=np.inf, quiet=False)
    np.testing.assert_allclose(adapted[:CHUNK], shipped[:CHUNK], rtol=1e-6)
    assert not np.allclose(adapted[CHUNK:], shipped[CHUNK:], rtol=1e-3)
    np.testing.assert_allclose(detector.score(test), shipped, rtol=1e-6)  # the fleet's own model is untouched


def test_with_no_quiet_window_nothing_is_learned():
    detector, test = tiny_detector()
    adapted = adapted_errors(detector, test, train_limit=-np.inf, quiet=True)
    np.testing.assert_allclose(adapted, detector.score(test), rtol=1e-6)
