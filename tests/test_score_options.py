"""The scoring options: --score-channels, --smooth, and the defaults each score brings."""

import json

import numpy as np
import pytest
import torch

import evaluate
import train
from commands.training import config_from_state
from model.detector import stored_scoring
from model.score_settings import ScoreSettings, override_score_settings, resolve_channels, resolve_score_settings
from model.scores import SCORES, WindowOutputs
from model.scoring import CentredSmoother, PointValues, smooth_point_stream, smooth_scores
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.errors import UserInputError
from tests.tiny import TINY_TRAIN_FLAGS

NAMES = ["telemetry", "command_01", "command_02", "command_03"]


def brute_force_centred_mean(values: np.ndarray, span: int) -> np.ndarray:
    left = span // 2
    return np.array([values[max(0, i - left) : i - left + span].mean() for i in range(len(values))])


@pytest.mark.parametrize("span", [1, 2, 3, 10, 50, 51])
@pytest.mark.parametrize("length", [1, 7, 60, 500])
def test_smoothing_is_the_centred_mean_of_the_points_that_exist(span, length):
    values = np.random.default_rng(span * 1000 + length).random(length).astype(np.float32)
    smoothed = smooth_scores(values, span)
    assert smoothed.dtype == np.float32 and smoothed.shape == values.shape
    np.testing.assert_allclose(smoothed, brute_force_centred_mean(values.astype(np.float64), span), rtol=1e-6)


@pytest.mark.parametrize("cuts", [[], [1], [3, 4, 4, 90], list(range(1, 300, 7)), [299]])
def test_streamed_smoothing_is_bit_identical_whatever_the_chunks(cuts):
    values = np.random.default_rng(1).random(300).astype(np.float32)
    smoother = CentredSmoother(50)
    parts = [smoother.push(chunk) for chunk in np.split(values, cuts)] + [smoother.finish()]
    assert np.array_equal(np.concatenate(parts), smooth_scores(values, 50))


def test_smoothed_stream_keeps_each_points_own_errors():
    rng = np.random.default_rng(2)
    scores, errors = rng.random(230).astype(np.float32), rng.random((230, 3)).astype(np.float32)
    chunks = [PointValues(scores[a:b], errors[a:b]) for a, b in ((0, 10), (10, 11), (11, 200), (200, 230))]
    out = list(smooth_point_stream(chunks, 25))
    assert np.array_equal(np.concatenate([p.scores for p in out]), smooth_scores(scores, 25))
    assert np.array_equal(np.concatenate([p.errors for p in out]), errors)
    assert all(len(p.scores) == len(p.errors) for p in out)


def test_score_channels_limit_the_reconstruction_error_to_those_channels():
    torch.manual_seed(0)
    model = AnomalyTransformer(ModelConfig(n_channels=4, win_size=10, d_model=16, n_heads=2, e_layers=1, d_ff=16))
    x = torch.randn(3, 10, 4)
    with torch.no_grad():
        outputs = WindowOutputs(x, *model(x))
    reconstruction = outputs.reconstruction
    only_first = SCORES["reconstruction"].compute(outputs, [0], 50.0)
    assert torch.equal(only_first, (reconstruction[..., 0] - x[..., 0]) ** 2)
    two = SCORES["reconstruction"].compute(outputs, [1, 3], 50.0)
    assert torch.allclose(two, ((reconstruction - x) ** 2)[..., [1, 3]].mean(-1))
    everything = SCORES["paper"].compute(outputs, None, 50.0)
    assert torch.equal(everything, SCORES["paper"].compute(outputs, [0, 1, 2, 3], 50.0))


def test_channel_specs_resolve_to_indices_or_fail_clearly():
    assert resolve_channels("all", NAMES, [0]) is None
    assert resolve_channels("target", NAMES, [0]) == (0,)
    assert resolve_channels("target", NAMES, None) is None  # no declared target: every channel
    assert resolve_channels("command_02, 0", NAMES, None) == (0, 2)
    with pytest.raises(UserInputError, match="no channel 'pressure'.*telemetry"):
        resolve_channels("pressure", NAMES, None)
    with pytest.raises(UserInputError, match="no channel '4'"):
        resolve_channels("4", NAMES, None)
    with pytest.raises(UserInputError, match="twice"):
        resolve_channels("0,telemetry", NAMES, None)


def test_each_score_brings_its_defaults_and_flags_override_single_fields():
    paper = resolve_score_settings("paper", None, None, NAMES, [0], 50.0)
    assert (paper.channels, paper.smooth) == (None, 0)  # the reference's criterion, untouched
    default = resolve_score_settings("reconstruction", None, None, NAMES, [0], 50.0)
    assert (default.channels, default.smooth) == ((0,), 50)
    assert resolve_score_settings("reconstruction", "all", 0, NAMES, [0], 50.0) == ScoreSettings(
        "reconstruction", 50.0, None, 0
    )
    assert resolve_score_settings("paper", None, None, NAMES, [0], 20.0).temperature == 20.0
    stored = ScoreSettings("reconstruction", 50.0, (0,), 50)
    assert override_score_settings(stored, None, None, None, NAMES, [0]) == stored
    assert override_score_settings(stored, None, None, 5, NAMES, [0]).smooth == 5
    assert override_score_settings(stored, "paper", None, None, NAMES, [0]) == ScoreSettings("paper", 50.0, None, 0)
    assert override_score_settings(stored, "paper", "target", None, NAMES, [0]).channels == (0,)
    with pytest.raises(UserInputError, match="--smooth"):
        resolve_score_settings("reconstruction", None, -1, NAMES, [0], 50.0)
    with pytest.raises(UserInputError, match="unknown score 'magic'"):
        resolve_score_settings("magic", None, None, NAMES, [0], 50.0)


def test_cli_stores_the_scoring_and_evaluate_applies_it_to_model_and_baselines(tmp_path, capsys):
    out = str(tmp_path)
    flags = ["--dataset", "SYNTH", "--output-dir", out, *TINY_TRAIN_FLAGS]
    assert train.main([*flags, "--score-channels", "sensor_03,1", "--smooth", "7"]) == 0
    stored = torch.load(tmp_path / "SYNTH_checkpoint.pth", weights_only=True)
    assert stored_scoring(stored) == ScoreSettings("reconstruction", 50.0, (1, 3), 7)

    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", out, "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "SYNTH_metrics.json").read_text())
    assert report["scoring"] == {"variant": "reconstruction", "temperature": 50.0, "channels": [1, 3], "smooth": 7}
    assert "channels [1, 3], smoothed over 7 points" in capsys.readouterr().out
    smoothed = np.load(tmp_path / "SYNTH_evaluation.npz")
    # The same 7-point centred mean is applied, after scoring, to the model and to both baselines.
    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", out, "--device", "cpu", "--smooth", "0"]) == 0
    raw = np.load(tmp_path / "SYNTH_evaluation.npz")
    for key in ("scores", "train_scores", "pca_scores", "random_scores"):
        assert np.allclose(smoothed[key], smooth_scores(raw[key], 7), rtol=1e-5, atol=1e-7), key

    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", out, "--device", "cpu", "--score", "paper"]) == 0
    report = json.loads((tmp_path / "SYNTH_metrics.json").read_text())
    assert report["scoring"] == {"variant": "paper", "temperature": 50.0, "channels": None, "smooth": 0}


def test_evaluate_rescores_the_paper_score_at_another_temperature_as_a_model_trained_with_it(tmp_path, capsys):
    """The temperature reads no weight: a model scored at --temperature 5 scores as one trained with it."""
    trained_at_5, trained_at_50 = tmp_path / "t5", tmp_path / "t50"
    for folder, temperature in ((trained_at_5, "5"), (trained_at_50, "50")):
        flags = ["--dataset", "SYNTH", "--output-dir", str(folder), *TINY_TRAIN_FLAGS, "--score", "paper"]
        assert train.main([*flags, "--temperature", temperature]) == 0
    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", str(trained_at_5), "--baselines", "none"]) == 0
    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", str(trained_at_50), "--baselines", "none",
                          "--temperature", "5"]) == 0  # fmt: skip
    assert "paper score at temperature 5, all channels" in capsys.readouterr().out
    report = json.loads((trained_at_50 / "SYNTH_metrics.json").read_text())
    assert report["scoring"] == {"variant": "paper", "temperature": 5.0, "channels": None, "smooth": 0}
    expected, rescored = np.load(trained_at_5 / "SYNTH_evaluation.npz"), np.load(trained_at_50 / "SYNTH_evaluation.npz")
    for key in ("scores", "train_scores", "predictions"):
        np.testing.assert_array_equal(rescored[key], expected[key], err_msg=key)

    bad = tmp_path / "bad"
    code = evaluate.main(["--dataset", "SYNTH", "--checkpoint", str(trained_at_50 / "SYNTH_checkpoint.pth"),
                          "--output-dir", str(bad), "--temperature", "0"])  # fmt: skip
    assert code == 2 and "--temperature must be a positive finite number, got 0.0" in capsys.readouterr().err
    assert not bad.exists()


def test_a_bad_channel_fails_before_training_and_writes_nothing(tmp_path, capsys):
    code = train.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY_TRAIN_FLAGS, "--score-channels", "x"])
    assert code == 2
    assert "--score-channels: no channel 'x'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pth"))


def test_checkpoints_and_runs_from_before_the_options_score_as_they_did(tmp_path, capsys):
    """Before --score-channels and --smooth, every score read all channels, unsmoothed."""
    flags = ["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY_TRAIN_FLAGS, "--score", "reconstruction"]
    assert train.main([*flags, "--score-channels", "all", "--smooth", "0"]) == 0
    path = tmp_path / "SYNTH_checkpoint.pth"
    evaluate_args = ["--dataset", "SYNTH", "--output-dir", str(tmp_path), "--device", "cpu", "--baselines", "none"]
    assert evaluate.main(evaluate_args) == 0
    current = np.load(tmp_path / "SYNTH_evaluation.npz")["scores"]
    stored = torch.load(path, weights_only=True)
    # What a checkpoint of that time held: the score named score_variant, no scoring, no TRAIN error per channel.
    for key in ("scoring", "train_channel_error"):
        del stored[key]
    stored["train_config"]["score_variant"] = stored["train_config"].pop("score")
    for key in ("score_channels", "smooth"):
        del stored["train_config"][key]
    torch.save(stored, path)
    assert stored_scoring(stored) == ScoreSettings("reconstruction", 50.0, None, 0)  # not the score's new defaults
    assert evaluate.main(evaluate_args) == 0
    assert np.array_equal(np.load(tmp_path / "SYNTH_evaluation.npz")["scores"], current)

    last = torch.load(tmp_path / "SYNTH_last.pth", weights_only=True)
    last["train_config"]["score_variant"] = last["train_config"].pop("score")
    for key in ("score_channels", "smooth"):
        del last["train_config"][key]
    resumed = config_from_state(last)
    assert (resumed.score, resumed.score_channels, resumed.smooth) == ("reconstruction", "all", 0)


def test_a_smoothing_span_longer_than_train_is_refused_before_training(tmp_path, capsys):
    code = train.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY_TRAIN_FLAGS, "--smooth", "10001"])
    assert code == 2
    assert "--smooth 10001 is longer than the 10000 TRAIN points" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pth"))
