"""Every score, on SYNTH and on a slice of real MSL, equals what the code gave before the Detector
existed (main at commit 6ccb8db), and so do the trained weights and the TRAIN scores of a fit.

tests/fixtures/score_reference_{SYNTH,MSL}.pth are tiny models trained by that code (window 20,
d_model 16, 1 layer, 1 epoch, train stride 20, batch 32, one thread); the .npz beside each holds
that code's TRAIN and TEST scores for every score x channels (all, target) x smoothing (0, 50)
(x temperature 50 and 5 for the paper score), its per-channel errors (SYNTH) and its fit's TRAIN
scores. The scoring and training kernels have been rewritten for speed since (a joint Q/K/V/sigma
product, position-wise linear maps, written-out gradients for the prior and the discrepancy), so
the comparison is to float32 rounding: the same arithmetic in another order.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from data_factory.dataset import TimeSeriesDataset
from data_factory.registry import load_dataset
from model import Detector, DetectorConfig
from model.score_settings import resolve_score_settings


def score_tolerance(score: str, temperature: float, expected: np.ndarray) -> dict:
    """float32 rounding of reordered sums, relative to the score's scale (a squared error near zero has
    no relative precision). The paper score is softmax(-AssDis x T), which multiplies the rounding of
    AssDis by T (50 or 5)."""
    rtol = 2e-5 * temperature if score == "paper" else 1e-5
    return {"rtol": rtol, "atol": 1e-6 * float(np.abs(expected).max())}


# Adam moves every weight by about lr (1e-4) per step whatever its gradient's size, so a weight whose
# gradient is near zero moves by the sign of a rounding difference: a few lr over the fit's steps.
WEIGHT_TOLERANCE = {"rtol": 0.0, "atol": 1e-3}
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAINED_WITH = DetectorConfig(win_size=20, d_model=16, n_heads=2, e_layers=1, d_ff=32, epochs=1, train_stride=20,
                              batch_size=32, device="cpu")  # fmt: skip


def reference_data(name: str) -> TimeSeriesDataset:
    """The slices the fixtures were made from."""
    if name == "SYNTH":
        full = load_dataset("SYNTH", None)
        return TimeSeriesDataset("SYNTH", full.train[:2000], full.test[:1990], full.test_labels[:1990],
                                 full.channel_names)  # fmt: skip
    if not (SHARED_DATA / "MSL" / "train.npy").exists():
        pytest.skip("../shared/data/MSL is absent")
    full = load_dataset("MSL", SHARED_DATA)
    return TimeSeriesDataset("MSL", full.train[:3000], full.test[:2990], full.test_labels[:2990], full.channel_names,
                             target_channels=full.target_channels)  # fmt: skip


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["SYNTH", "MSL"])
def test_every_score_equals_the_code_before_the_detector(name, one_thread):
    data = reference_data(name)
    expected = np.load(FIXTURES / f"score_reference_{name}.npz")
    detector = Detector.load(FIXTURES / f"score_reference_{name}.pth", data)
    keys = sorted({key.rsplit("_", 1)[0] for key in expected.files if key.count("_") == 4})
    assert len(keys) == 16  # 3 scores x 2 channel specs x 2 smoothings, + the paper score at temperature 5
    for key in keys:
        score, spec, smooth, temperature = key.split("_")
        settings = resolve_score_settings(score, spec, int(smooth), data.channel_names, data.target_channels,
                                          float(temperature))  # fmt: skip
        for split, series in (("train", data.train), ("test", data.test)):
            points = detector.rescored(settings).score_points(series, batch_size=32)
            before = expected[f"{key}_{split}"]
            np.testing.assert_allclose(points.scores, before, **score_tolerance(score, float(temperature), before),
                                       err_msg=f"{key} {split}")  # fmt: skip
            if f"errors_{split}" in expected.files:
                errors_before = expected[f"errors_{split}"]
                np.testing.assert_allclose(points.errors, errors_before, **score_tolerance("", 0, errors_before))


@pytest.mark.parametrize("name", ["SYNTH", "MSL"])
def test_a_fit_gives_the_weights_and_train_scores_of_the_code_before_the_detector(name, one_thread):
    data = reference_data(name)
    before = Detector.load(FIXTURES / f"score_reference_{name}.pth")
    fitted = Detector(TRAINED_WITH).fit(data)
    for key, tensor in before.model_.state_dict().items():
        torch.testing.assert_close(fitted.model_.state_dict()[key], tensor, **WEIGHT_TOLERANCE, msg=key)
    expected = np.load(FIXTURES / f"score_reference_{name}.npz")["fit_train_scores"]
    np.testing.assert_allclose(fitted.train_scores_, expected, **score_tolerance("reconstruction", 0, expected))
