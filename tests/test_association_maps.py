"""Association maps of a real tiny model: what the npz holds, how windows are chosen, and the figure.
(evaluate.py --explain itself runs in tests/test_attribution.py.)"""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import train
from data_factory.registry import load_synth
from data_factory.windows import scoring_starts
from evaluation.association_maps import (
    association_figure,
    choose_windows,
    explain_windows,
    plot_association_maps,
    save_association_npz,
    window_kind,
)
from model.detector import Detector
from model.score_settings import ScoreSettings
from model.scoring import score_series
from tests.tiny import TINY_TRAIN_FLAGS

TINY = [*TINY_TRAIN_FLAGS, "--e-layers", "2"]
PAPER = ScoreSettings("paper", 50.0, None, 0)  # the reference's criterion: every channel, unsmoothed
DISCREPANCY = ScoreSettings("discrepancy", 50.0, None, 0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 2-layer SYNTH model, its test scores flagged at the stored 99th percentile, and 3 + 3 windows' maps."""
    out = tmp_path_factory.mktemp("maps")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY]) == 0
    data = load_synth()
    detector = Detector.load(out / "SYNTH_checkpoint.pth", data)
    model = detector.model_
    test = detector.normalizer_.transform(data.test)
    scores = score_series(model, test, PAPER, batch_size=128).scores
    threshold = detector.train_score_stats_["percentiles"]["99.0"]
    predictions = (scores > threshold).astype(np.uint8)
    maps = explain_windows(model, test, scores, predictions, data.test_labels, 3, "SYNTH", threshold=threshold)
    save_association_npz(maps, out / "maps.npz")
    plot_association_maps(maps, out / "maps.png")
    return {
        "dir": out,
        "model": model,
        "test": test,
        "maps": dict(np.load(out / "maps.npz")),
        "scores": scores,
        "threshold": threshold,
        "predictions": predictions,
        "labels": data.test_labels,
    }


def test_npz_holds_s_p_and_sigma_per_layer_and_head(run):
    maps = run["maps"]
    assert int(maps["win_size"]) == 20
    for group in ("anomalous", "normal"):
        assert maps[f"{group}_starts"].shape == (3,)
        assert maps[f"{group}_series"].shape == maps[f"{group}_prior"].shape == (3, 2, 2, 20, 20)  # n, layer, head
        assert maps[f"{group}_sigma"].shape == (3, 2, 2, 20)
        assert maps[f"{group}_discrepancy"].shape == maps[f"{group}_scores"].shape == (3, 20)
        np.testing.assert_allclose(maps[f"{group}_series"].sum(axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(maps[f"{group}_prior"].sum(axis=-1), 1.0, rtol=1e-5)
        assert (maps[f"{group}_sigma"] > 0).all() and (maps[f"{group}_sigma"] <= 2.0001).all()  # 3^(1+1e-5) - 1
    assert maps["stretch_discrepancy"].shape == maps["stretch_scores"].shape
    assert len(maps["stretch_scores"]) % 20 == 0 and int(maps["stretch_start"]) <= int(maps["anomalous_starts"][0])


def test_chosen_windows_are_the_top_scoring_and_quiet_normal_ones(run):
    maps, scores, predictions, labels = run["maps"], run["scores"], run["predictions"], run["labels"]
    peaks = {int(start): scores[start : start + 20].max() for start in scoring_starts(len(scores), 20)}
    top = sorted(peaks, key=lambda start: -peaks[start])[:3]
    assert maps["anomalous_starts"].tolist() == top
    for start in maps["normal_starts"]:
        assert not predictions[start : start + 20].any() and not labels[start : start + 20].any()
    np.testing.assert_array_equal(maps["anomalous_scores"][0], scores[top[0] : top[0] + 20])


def test_saved_discrepancy_is_the_one_the_discrepancy_score_uses(run):
    model, test = run["model"], run["test"]
    for group in ("anomalous", "normal"):
        for start, values in zip(run["maps"][f"{group}_starts"], run["maps"][f"{group}_discrepancy"], strict=True):
            window = test[start : start + 20]  # scored alone: one window, so the score is that window's
            scores = score_series(model, window, DISCREPANCY, batch_size=128).scores
            np.testing.assert_allclose(-scores, values, rtol=1e-5)


def test_choose_windows_prefers_typical_quiet_windows():
    scores = np.tile(np.linspace(0, 1, 10), 6)  # six windows of 10
    scores[25], scores[44] = 9.0, 5.0  # windows 2 and 4 peak highest
    predictions = np.zeros(60, dtype=np.uint8)
    predictions[[25, 44]] = 1
    labels = np.zeros(60, dtype=np.uint8)
    labels[0] = 1  # window 0 is labelled: never "normal"
    anomalous, normal = choose_windows(scores, 10, 2, predictions, labels)
    assert anomalous.tolist() == [20, 40]
    assert sorted(normal.tolist()) == [10, 30]


def test_figure_is_a_readable_png(run):
    import matplotlib.image

    path = run["dir"] / "maps.png"
    assert path.read_bytes()[:4] == b"\x89PNG"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= 1000 and height >= 1000  # four heatmaps, a colour bar and a time panel


def test_window_kind_names_flags_against_labels():
    assert window_kind(flagged=True, labelled=True) == "anomalous"
    assert window_kind(flagged=True, labelled=False) == "false positive"
    assert window_kind(flagged=False, labelled=False) == "normal"
    assert window_kind(flagged=False, labelled=True) == "anomalous, not flagged"
    assert window_kind(flagged=True, labelled=None) == "flagged"
    assert window_kind(flagged=False, labelled=None) == "normal"


def _heatmap_headings(maps) -> list[str]:
    """The first line of the four heatmap titles: normal S, normal P, top S, top P."""
    figure = association_figure(maps)
    titles = [axis.get_title().split(":")[0] for axis in figure.axes[:4]]
    plt.close(figure)
    return titles


def test_windows_are_titled_by_their_labels_and_flags(run):
    model, test, scores, predictions = run["model"], run["test"], run["scores"], run["predictions"]
    top = int(run["maps"]["anomalous_starts"][0])
    top_steps = slice(top, top + 20)
    assert predictions[top_steps].any()  # the top window crosses the 99th percentile of TRAIN
    expected = [
        window_kind(bool(predictions[start : start + 20].any()), bool(run["labels"][start : start + 20].any()))
        for start in run["maps"]["anomalous_starts"]
    ]
    assert run["maps"]["anomalous_kinds"].tolist() == expected
    assert run["maps"]["normal_kinds"].tolist() == ["normal"] * 3

    unlabelled_top = run["labels"].copy()
    unlabelled_top[top_steps] = 0
    labelled_top = run["labels"].copy()
    labelled_top[top + 5] = 1
    for labels, kind in ((unlabelled_top, "false positive"), (labelled_top, "anomalous"), (None, "flagged")):
        maps = explain_windows(model, test, scores, predictions, labels, 3, "SYNTH", threshold=run["threshold"])
        assert int(maps.groups["anomalous"]["starts"][0]) == top
        headings = _heatmap_headings(maps)
        normal = int(maps.groups["normal"]["starts"][0])
        assert headings[:2] == [f"normal window, steps {normal}-{normal + 19}"] * 2
        assert headings[2:] == [f"{kind} window (highest score), steps {top}-{top + 19}"] * 2


def test_threshold_is_saved_and_the_flags_sit_on_the_score_curve_above_it(run):
    maps = run["maps"]
    assert float(maps["threshold"]) == pytest.approx(run["threshold"])
    stretch_scores, stretch_flags = maps["stretch_scores"], maps["stretch_predictions"]
    np.testing.assert_array_equal(stretch_flags, stretch_scores > run["threshold"])
    assert stretch_flags.any() and not stretch_flags.all()

    args = (run["model"], run["test"], run["scores"], run["predictions"], run["labels"], 3, "SYNTH")
    figure = association_figure(explain_windows(*args, threshold=run["threshold"]))
    (score_axis,) = [axis for axis in figure.axes if axis.get_ylabel() == "anomaly score"]
    (line,) = [line for line in score_axis.get_lines() if line.get_label() == "threshold"]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), run["threshold"], rtol=1e-12)
    (flags,) = [points for points in score_axis.collections if points.get_label() == "flagged"]
    first = int(maps["stretch_start"])
    np.testing.assert_allclose(flags.get_offsets()[:, 0], first + np.flatnonzero(stretch_flags))
    np.testing.assert_allclose(flags.get_offsets()[:, 1], stretch_scores[stretch_flags.astype(bool)], rtol=1e-6)
    assert (flags.get_offsets()[:, 1] > run["threshold"]).all()
    plt.close(figure)
