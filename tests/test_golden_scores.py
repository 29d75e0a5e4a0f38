"""Every score, on SYNTH and on a slice of real MSL, equals what the code gave before the Detector
existed (main at commit 6ccb8db), and so do the trained weights and the TRAIN scores of a fit.

tests/fixtures/score_reference_{SYNTH,MSL}.pth are tiny models trained by that code (window 20,
d_model 16, 1 layer, 1 epoch, train stride 20, batch 32, one thread); the .npz beside each holds
that code's TRAIN and TEST scores for every score x channels (all, target) x smoothing (0, 50)
(x temperature 50 and 5 for the paper score), its per-channel errors (SYNTH) and its fit's TRAIN
scores. The comparison is exact: same torch, same thread count, same float32 kernels.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from data_factory.dataset import TimeSeriesDataset
from data_factory.registry import load_dataset
from model import Detector, DetectorConfig
from model.score_settings import resolve_score_settings

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
def test_every_score_is_bit_identical_to_the_code_before_the_detector(name, one_thread):
    data = reference_data(name)
    expected = np.load(FIXTURES / f"score_reference_{name}.npz")
    detector = Detector.load(FIXTURES / f"score_reference_{name}.pth", data)
    keys = sorted({key.rsplit("_", 1)[0] for key in expected.files if key.count("_") == 4})
    assert len(keys) == 16  # 3 scores x 2 channel specs x 2 smoothings, + the paper score at temperature 5
    for key in keys:
        variant, spec, smooth, temperature = key.split("_")
        settings = resolve_score_settings(variant, spec, int(smooth), data.channel_names, data.target_channels,
                                          float(temperature))  # fmt: skip
        for split, series in (("train", data.train), ("test", data.test)):
            points = detector.rescored(settings).score_points(series, batch_size=32)
            np.testing.assert_array_equal(points.scores, expected[f"{key}_{split}"], err_msg=f"{key} {split}")
            if f"errors_{split}" in expected.files:
                np.testing.assert_array_equal(points.errors, expected[f"errors_{split}"])


@pytest.mark.parametrize("name", ["SYNTH", "MSL"])
def test_a_fit_gives_the_weights_and_train_scores_of_the_code_before_the_detector(name, one_thread):
    data = reference_data(name)
    before = Detector.load(FIXTURES / f"score_reference_{name}.pth")
    fitted = Detector(TRAINED_WITH).fit(data)
    for key, tensor in before.model_.state_dict().items():
        assert torch.equal(fitted.model_.state_dict()[key], tensor), key
    expected = np.load(FIXTURES / f"score_reference_{name}.npz")["fit_train_scores"]
    np.testing.assert_array_equal(fitted.train_scores_, expected)
