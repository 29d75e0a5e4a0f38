"""A fleet bundle written by an earlier version of the code (tests/fixtures/fleet_bundle_CUSTOM.pth,
trained with tests.tiny's flags on tests.test_fleet's three-entity CUSTOM data, one thread) still loads
in every command, and its detectors score as they did then: the .npz beside it holds each trained
entity's TRAIN and TEST scores as that code computed them."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import detect
import evaluate
import inspect_checkpoint
from data_factory import load_dataset
from model.fleet import Fleet
from runtime.workers import one_thread
from tests.test_fleet import write_fleet_data

FIXTURES = Path(__file__).parent / "fixtures"
SCORE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}  # float32 rounding, should the kernels be reordered


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("stored")
    data = write_fleet_data(root)
    out = root / "out"
    out.mkdir()
    bundle = out / "CUSTOM_fleet.pth"
    shutil.copyfile(FIXTURES / "fleet_bundle_CUSTOM.pth", bundle)
    return {"data": data, "out": out, "bundle": bundle, "expected": np.load(FIXTURES / "fleet_bundle_CUSTOM.npz")}


def test_the_stored_bundle_scores_as_it_did(stored):
    fleet = Fleet.load(stored["bundle"])
    assert list(fleet.detectors) == ["east", "west"] and list(fleet.skipped) == ["stub"]
    for name, detector in fleet.detectors.items():
        entity = load_dataset("CUSTOM", stored["data"], name)
        with one_thread():  # as the stored scores were computed
            train, test = detector.score(entity.train), detector.score(entity.test)
        np.testing.assert_allclose(train, stored["expected"][f"{name}/train"], **SCORE_TOLERANCE)
        np.testing.assert_allclose(test, stored["expected"][f"{name}/test"], **SCORE_TOLERANCE)


def test_detect_routes_the_stored_bundle(stored, tmp_path):
    west = load_dataset("CUSTOM", stored["data"], "west").test
    source, output = tmp_path / "west.npy", tmp_path / "west.csv"
    np.save(source, west)
    assert detect.main(["--checkpoint", str(stored["bundle"]), "--input", str(source), "--output", str(output),
                        "--entity", "west"]) == 0  # fmt: skip
    with open(output, newline="") as handle:
        scores = np.array([float(row["score"]) for row in csv.DictReader(handle)])
    np.testing.assert_allclose(scores, stored["expected"]["west/test"], **SCORE_TOLERANCE)


def test_evaluate_and_inspect_read_the_stored_bundle(stored, capsys):
    data, out = str(stored["data"]), str(stored["out"])
    args = ["--dataset", "CUSTOM", "--data-dir", data, "--per-entity", "--output-dir", out]
    assert evaluate.main([*args, "--device", "cpu", "--baselines", "pca"]) == 0
    report = json.loads((stored["out"] / "CUSTOM_fleet_metrics.json").read_text())
    assert set(report["entities"]) == {"east", "west"} and set(report["skipped"]) == {"stub"}
    capsys.readouterr()
    assert inspect_checkpoint.main([str(stored["bundle"]), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["entities"]) == {"east", "west"}
