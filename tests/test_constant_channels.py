"""A channel that never moved in TRAIN: recorded with the model, named at training, by inspect_checkpoint.py and
in the drift warning (in its own units, since it has no TRAIN spread), and told apart from a channel whose TRAIN
was standardised beforehand (std exactly 1, which files written before the record mark alone)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import detect
import inspect_checkpoint
import train
from tests.tiny import TINY_TRAIN_FLAGS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("constant")
    rng = np.random.default_rng(0)
    steps = np.arange(1000)
    scaled = rng.normal(size=600)
    train_frame = pd.DataFrame({
        "flow": np.sin(steps[:600] / 15) + 0.1 * rng.normal(size=600),
        "stuck": np.full(600, 5.0),  # a sensor stuck through all of TRAIN
        "scaled": (scaled - scaled.mean()) / scaled.std(),  # standardised by its user: std exactly 1
    })
    test_frame = pd.DataFrame({
        "flow": np.sin(steps[600:] / 15) + 0.1 * rng.normal(size=400),
        "stuck": 5.0 + 4.0 * np.sin(steps[600:] / 7),  # mended: it moves now
        "scaled": rng.normal(size=400),
    })
    train_frame.to_csv(folder / "train_data.csv", index=False, float_format="%.9g")
    test_frame.to_csv(folder / "test_data.csv", index=False, float_format="%.9g")
    out = folder / "out"
    return {"data": folder, "out": out, "checkpoint": out / "CUSTOM_checkpoint.pth", "test": folder / "test_data.csv"}


def test_training_names_the_channel_that_never_moved_in_train(run, capsys):
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(run["data"]), "--output-dir", str(run["out"]),
                       *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "note: 1 constant in TRAIN (stuck): the model never saw them move" in out
    stored = torch.load(run["checkpoint"], weights_only=True)["normalization"]
    assert stored["std"][2].item() == 1.0  # the premise: the standardised channel's std is exactly 1 ...
    assert stored["constant"].tolist() == [False, True, False]  # ... yet only the stuck one is constant


def test_inspect_lists_the_constant_channels_and_says_when_a_file_does_not_record_them(run, tmp_path, capsys):
    assert inspect_checkpoint.main([str(run["checkpoint"]), "--json"]) == 0
    normalization = json.loads(capsys.readouterr().out)["normalization"]
    assert normalization["constant_in_train"] == ["stuck"] and normalization["constant_recorded"]
    assert inspect_checkpoint.main([str(run["checkpoint"])]) == 0
    assert "1 constant in TRAIN (stuck)" in capsys.readouterr().out
    older = torch.load(run["checkpoint"], weights_only=True)
    del older["normalization"]["constant"]  # as files written before the record
    torch.save(older, tmp_path / "older.pth")
    assert inspect_checkpoint.main([str(tmp_path / "older.pth")]) == 0
    assert "2 channels with std exactly 1 (constant in TRAIN, or standardised beforehand" in capsys.readouterr().out


def test_the_drift_warning_gives_a_constant_channel_in_its_own_units(run, tmp_path, capsys):
    output = tmp_path / "detections.csv"
    assert detect.main(["--checkpoint", str(run["checkpoint"]), "--input", str(run["test"]), "--output", str(output),
                        "--device", "cpu"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    moved = pd.read_csv(run["test"])["stuck"]
    assert f"stuck (constant in TRAIN, now mean {moved.mean() - 5.0:+.3g} and spread {moved.std(ddof=0):.3g} in " \
           "its own units)" in err  # fmt: skip
    channels = {c["name"]: c for c in json.loads(output.with_suffix(".json").read_text())["drift"]["channels"]}
    assert channels["stuck"]["constant_in_train"] and channels["stuck"]["drifted"]
    assert not channels["scaled"]["constant_in_train"] and not channels["flow"]["constant_in_train"]


def test_a_fleet_counts_each_entity_s_constant_channels_in_its_own_train(run, tmp_path, capsys):
    data = tmp_path / "fleet"
    data.mkdir()
    frame = pd.read_csv(run["data"] / "train_data.csv")
    frame["stuck"] = frame["stuck"].astype(float)
    frame.loc[300:, "stuck"] = np.linspace(4.0, 6.0, len(frame) - 300)  # stuck in east's TRAIN only
    frame.to_csv(data / "train_data.csv", index=False, float_format="%.9g")
    (data / "test_data.csv").write_text(run["test"].read_text())
    (data / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\n"
                                       "east,0,300,0,200\nwest,300,300,200,200\n")  # fmt: skip
    out = tmp_path / "out"
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), "--per-entity",
                       "--jobs", "1", *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    assert "note: channels constant in TRAIN, which the entity's model never saw move, in 1 of 2 entities " \
           "(east 1: how many)" in capsys.readouterr().out  # fmt: skip
    assert inspect_checkpoint.main([str(out / "CUSTOM_fleet.pth"), "--json"]) == 0
    entities = json.loads(capsys.readouterr().out)["entities"]
    assert entities["east"]["constant_in_train"] == ["stuck"] and entities["west"]["constant_in_train"] == []
