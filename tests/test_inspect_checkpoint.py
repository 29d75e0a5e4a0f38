"""inspect_checkpoint.py on a real checkpoint, and a booby-trapped pickle that no CLI may unpickle."""

import json
import pathlib
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

import detect
import evaluate
import inspect_checkpoint
import train
from data_factory import load_dataset
from model.detector import Detector
from model.fleet import open_fleet
from tests.tiny import TINY_TRAIN_FLAGS

TINY = [*TINY_TRAIN_FLAGS, "--epochs", "2"]


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY]) == 0
    return out / "SYNTH_checkpoint.pth"


def test_json_holds_what_a_person_opening_the_file_wants(checkpoint_path, capsys):
    assert inspect_checkpoint.main([str(checkpoint_path), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    stored = torch.load(checkpoint_path, weights_only=True)
    assert (
        described["dataset"]["name"] == "SYNTH"
        and described["dataset"]["fingerprint"] == stored["dataset"]["fingerprint"]
    )
    assert described["model_config"] == stored["model_config"] and described["config"]["epochs"] == 2
    assert described["config"] == stored["train_config"]  # the full DetectorConfig it was trained with
    assert described["parameters"] == sum(p.numel() for p in Detector.from_checkpoint(stored).model_.parameters())
    assert [record["epoch"] for record in described["history"]] == [1, 2]
    assert {"train_rec", "val_rec", "lr", "seconds"} <= described["history"][0].keys()
    assert described["best_epoch"] == stored["best_epoch"] and described["epochs_run"] == 2
    assert described["wall_seconds"] == pytest.approx(sum(record["seconds"] for record in stored["history"]))
    assert described["normalization"]["mean"] == pytest.approx(stored["normalization"]["mean"].tolist())
    assert len(described["normalization"]["std"]) == 12
    assert described["stored_thresholds"]["percentiles"] == stored["train_scores"]["percentiles"]
    assert described["scoring"] == stored["scoring"]
    rule = described["decision_rule"]  # the rule detect.py applies, as stored
    assert rule["stored"] and rule["kind"] == "guarded" and rule["threshold"] == stored["alarm_rule"]["threshold"]
    assert rule["train_scores_remembered"] == len(stored["alarm_rule"]["train_tail"])
    assert rule["train_spread"] == stored["alarm_rule"]["train_spread"]
    assert described["scoring_described"] == "reconstruction score, all channels, smoothed over 50 points"
    assert described["train_channel_error"] == pytest.approx(stored["train_channel_error"].tolist())
    assert len(described["train_channel_error"]) == 12 and min(described["train_channel_error"]) > 0
    assert described["versions"]["torch"] == str(torch.__version__)
    assert described["format_version"] == stored["format_version"] == 1
    created = datetime.fromisoformat(described["created"])
    assert created.tzinfo is not None and abs((datetime.now(UTC) - created).total_seconds()) < 3600


def test_text_names_every_section(checkpoint_path, capsys):
    assert inspect_checkpoint.main([str(checkpoint_path)]) == 0
    text = capsys.readouterr().out
    stored = torch.load(checkpoint_path, weights_only=True)
    for expected in (
        "dataset      SYNTH: 12 channels, train 10000 and test 10000 steps",
        f"fingerprint  {stored['dataset']['fingerprint']} (TRAIN and TEST); TRAIN alone, which evaluate.py "
        f"matches: {stored['dataset']['train_fingerprint']}",
        "parameters   ",
        f"history      2 epoch(s), best epoch {stored['best_epoch']}, wall time",
        "train_rec",
        "normalization  mean in",
        "sensor_11",
        f"99th {stored['train_scores']['percentiles']['99.0']:.6g}",
        f"torch {torch.__version__}",
        f"created      {stored['created']}",
        "MiB, format version 1)",
        "scoring      reconstruction score, all channels, smoothed over 50 points",
        "rule         guarded: 99th percentile of TRAIN scores",
    ):
        assert expected in text, expected
    # The scoring settings appear once, resolved, on the scoring line; not again among the training settings.
    training = next(line for line in text.splitlines() if line.startswith("training "))
    assert "epochs 2" in training and "val_ratio 0.2" in training
    assert not any(f"{key} " in training for key in ("score", "temperature", "score_channels", "smooth"))


def test_a_checkpoint_opens_as_a_fleet_of_one_named_by_its_data(checkpoint_path):
    fleet = open_fleet(checkpoint_path)
    assert fleet.single and fleet.dataset == "SYNTH" and fleet.order == ["SYNTH"] and fleet.complete
    series = load_dataset("SYNTH").test[:300]
    np.testing.assert_array_equal(fleet.detector("SYNTH").score(series), Detector.load(checkpoint_path).score(series))


def test_a_bundle_of_one_entity_is_shown_as_a_bundle(checkpoint_path, tmp_path, capsys):
    fleet = open_fleet(checkpoint_path)
    fleet.single = False  # the same model, saved as a fleet bundle
    bundle = fleet.save(tmp_path / "SYNTH_fleet.pth")
    assert not open_fleet(bundle).single
    assert inspect_checkpoint.main([str(bundle)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"fleet        {bundle} (") and "1 entities trained, 0 skipped" in text
    assert inspect_checkpoint.main([str(checkpoint_path)]) == 0
    assert capsys.readouterr().out.startswith(f"checkpoint   {checkpoint_path} (")


class _Trap:
    """Unpickling this runs Path.touch(marker): the kind of payload weights_only=True must refuse."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_malicious_pickle_is_refused_by_every_cli_and_never_runs(checkpoint_path, tmp_path, capsys):
    trap = tmp_path / "trap.pth"
    marker = tmp_path / "marker"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    checkpoint["history"] = _Trap(marker)  # a real checkpoint with one poisoned entry
    torch.save(checkpoint, trap)

    # The payload is live: plain unpickling of a copy with its own marker does run it.
    live = tmp_path / "live-marker"
    checkpoint["history"] = _Trap(live)
    torch.save(checkpoint, tmp_path / "live.pth")
    torch.load(tmp_path / "live.pth", weights_only=False)
    assert live.exists()

    np_input = tmp_path / "x.npy"
    np.save(np_input, np.zeros((100, 12), dtype=np.float32))
    runs = [
        (evaluate, ["--dataset", "SYNTH", "--checkpoint", str(trap), "--output-dir", str(tmp_path / "eval")]),
        (detect, ["--checkpoint", str(trap), "--input", str(np_input), "--output", str(tmp_path / "d.csv")]),
        (inspect_checkpoint, [str(trap)]),
        (inspect_checkpoint, [str(trap), "--json"]),
    ]
    for module, args in runs:
        assert module.main(args) == 2, module.__name__
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "not a safe checkpoint" in err, err
        assert not marker.exists()
    assert not (tmp_path / "d.csv").exists()


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert inspect_checkpoint.main([str(tmp_path / "none.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
