import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.tsb_vus import FALLBACK_PERIOD, dominant_period, tsb_vus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_vus_of_a_tiny_case_by_hand():
    # n = 6, P = 1 (point 2), window 2: buffers 0, 1, 2. With 250 thresholds over 6 points every
    # score is a threshold (repeats add zero-width steps). Scores rank the points 3, 2, 5, 1, 4, 0.
    labels = np.array([0, 0, 1, 0, 0, 0])
    scores = np.array([0.1, 0.3, 0.8, 0.9, 0.2, 0.5])
    # Buffers 0 and 1 (no border): (FPR, TPR, precision) = (1/5, 0, 0), (1/5, 1, 1/2), then TPR 1;
    # ROC = 1 - 1/5 = 0.8, PR = 1 * 1/2 = 0.5.
    # Buffer 2: border points 1 and 3 with s = sqrt(1 - 1/2); existence range [1, 3].
    #   k = 1 (point 3): TP = s, P_w = 1 + s/2, TPR1 = s / (1 + s/2), FPR1 = (1 - s) / (6 - P_w), precision s.
    #   k = 2 (+ point 2): TP = 1 + s >= P_w, TPR = 1, FPR unchanged, precision (1 + s) / 2; then TPR stays 1.
    #   TPR1 = 0.522407750, FPR1 = 0.063035959:
    #   ROC = FPR1 * TPR1 / 2 + (1 - FPR1) = 0.953429278; PR = TPR1 * s + (1 - TPR1) * (1 + s) / 2 = 0.777048547.
    s = math.sqrt(0.5)
    tpr1, fpr1 = s / (1 + s / 2), (1 - s) / (5 - s / 2)
    roc2, pr2 = fpr1 * tpr1 / 2 + (1 - fpr1), tpr1 * s + (1 - tpr1) * (1 + s) / 2
    assert roc2 == pytest.approx(0.953429278) and pr2 == pytest.approx(0.777048547)
    result = tsb_vus(labels, scores, window=2)
    # VUS = mean over the 3 buffers: (0.5 + 0.5 + 0.777048547) / 3, (0.8 + 0.8 + 0.953429278) / 3
    assert result["vus_pr"] == pytest.approx((1.0 + pr2) / 3, abs=1e-12)
    assert result["vus_roc"] == pytest.approx((1.6 + roc2) / 3, abs=1e-12)
    assert (result["vus_pr"], result["vus_roc"]) == pytest.approx((0.592349516, 0.851143093), abs=1e-9)
    assert result["window"] == 2


def test_only_the_order_of_the_scores_matters():
    rng = np.random.default_rng(0)
    labels = np.zeros(2000, dtype=int)
    labels[[100, 101, 102, 700, 1500, 1501]] = 1
    scores = rng.normal(size=2000) + 2 * labels
    reference = tsb_vus(labels, scores, window=30)
    for transformed in (np.exp(scores), scores**3 + 7, np.argsort(np.argsort(scores))):
        assert tsb_vus(labels, transformed, window=30) == pytest.approx(reference, abs=1e-12)


def test_a_perfect_score_gets_one():
    labels = np.zeros(300, dtype=int)
    labels[50:60] = labels[200:203] = labels[298:] = 1  # TSB-AD 1.5 gives (1.0, 1.0) here too
    assert tsb_vus(labels, labels.astype(float), window=20) == {"vus_pr": 1.0, "vus_roc": 1.0, "window": 20}


@pytest.mark.parametrize("period", [6, 12, 50, 100, 250, 303])
def test_dominant_period_of_a_sine_is_its_period(period):
    assert dominant_period(np.sin(2 * np.pi * np.arange(3000) / period)) == period


@pytest.mark.parametrize(
    "series",
    [np.sin(2 * np.pi * np.arange(3000) / 400), np.sin(2 * np.pi * np.arange(3000) / 5), np.ones(500)],
    ids=["period above 303", "period below 6", "constant"],
)
def test_dominant_period_falls_back_to_125(series):
    assert dominant_period(series) == FALLBACK_PERIOD == 125


def test_dominant_period_reads_only_the_first_20000_points():
    head = np.sin(2 * np.pi * np.arange(20_000) / 40)
    assert dominant_period(np.concatenate([head, np.sin(2 * np.pi * np.arange(20_000) / 90)])) == 40


def test_the_window_comes_from_the_series_given():
    rng = np.random.default_rng(1)
    series = np.sin(2 * np.pi * np.arange(1500) / 37) + 0.1 * rng.normal(size=1500)
    labels = np.zeros(1500, dtype=int)
    labels[600:640] = 1
    scores = rng.random(1500) + labels
    assert tsb_vus(labels, scores, series=series) == tsb_vus(labels, scores, window=37)
    with pytest.raises(ValueError, match="exactly one of window"):
        tsb_vus(labels, scores)
    with pytest.raises(ValueError, match="one non-empty channel"):
        tsb_vus(labels, scores, series=np.stack([series, series], axis=1))


def test_without_labelled_points_vus_is_nan():
    result = tsb_vus(np.zeros(50, dtype=int), np.arange(50.0), window=10)
    assert math.isnan(result["vus_pr"]) and math.isnan(result["vus_roc"])


def test_tsb_ad_values_on_a_real_msl_channel():
    # TSB-AD 1.5's own values (bench/results/tsb_vus_check.md): MSL C-1's TEST stretch, seeded
    # uniform score, window 264 from TEST column 0.
    folder = SHARED_DATA / "MSL"
    if not (folder / "channels.csv").exists():
        pytest.skip(f"{folder} is not present")
    test_len = 2264  # C-1 is the first channel of channels.csv: TEST rows 0 .. 2263
    test = np.load(folder / "test.npy", mmap_mode="r")[:test_len]
    labels = np.load(folder / "test_label.npy")[:test_len]
    scores = np.random.default_rng(0).random(test_len)
    result = tsb_vus(labels, scores, series=test[:, 0])
    assert result["window"] == 264
    assert result["vus_pr"] == pytest.approx(0.219568981, abs=1e-9)
    assert result["vus_roc"] == pytest.approx(0.656746686, abs=1e-9)
