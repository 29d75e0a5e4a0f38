"""bench/alarm_rules.py's score cache and bench/score_scales.py on two tiny fleets trained for real."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import train
from bench import alarm_rules, score_scales
from evaluation.fleet_report import evaluate_fleet
from model.fleet import fleet_path
from model.scoring import smooth_scores
from tests.test_fleet import write_fleet_data
from tests.tiny import TINY_TRAIN_FLAGS


@pytest.fixture(scope="module")
def fleets(tmp_path_factory):
    """CUSTOM data with entities and its fleets for seeds 0 and 1, laid out as bench/fleet_quality.py lays them."""
    root = tmp_path_factory.mktemp("bench_fleets")
    data = write_fleet_data(root)
    for seed in (0, 1):
        out = root / f"CUSTOM_seed{seed}"
        assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1", "--seed",
                           str(seed), "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    return data, root


def test_a_baseline_on_other_seeds_is_fitted_beside_the_model_and_cached_apart(fleets, capsys):
    data, root = fleets
    flags = ["--data-dir", str(data), "--fleets", str(root), "--datasets", "CUSTOM", "--rules", "guarded-1000"]
    assert alarm_rules.main([*flags, "--seeds", "0", "1", "--method", "pca"]) == 0
    assert "method pca, seeds 0 1" in capsys.readouterr().out
    cache = root / "alarm_scores"
    first = pickle.loads((cache / "CUSTOM_seed0.pkl").read_bytes())  # seed 0: the model and the study's baselines
    second = pickle.loads((cache / "CUSTOM_seed1_pca.pkl").read_bytes())  # seed 1: the model and pca alone
    assert set(second) == set(first) == {"east", "west"}  # the stub is too short to train
    assert set(second["east"]["test"]) == {"model", "pca"}
    # PCA is deterministic: the same entity's scores whichever seed fitted it; the two seeds' models differ.
    assert np.array_equal(first["east"]["test"]["pca"], second["east"]["test"]["pca"])
    assert not np.array_equal(first["east"]["test"]["model"], second["east"]["test"]["model"])


def test_the_shipped_span_over_the_unsmoothed_errors_is_the_default_score(fleets, capsys):
    data, root = fleets
    flags = ["--data-dir", str(data), "--fleets", str(root), "--datasets", "CUSTOM", "--seeds", "0"]
    assert score_scales.main([*flags, "--candidates", "s50,s10", "--versus", "s50"]) == 0
    printed = capsys.readouterr().out
    assert "| s50 |" in printed and "s10 against s50, CUSTOM seed 0" in printed
    unsmoothed = alarm_rules.cached_scores(root, data, "CUSTOM", 0, smooth=0)
    default = alarm_rules.cached_scores(root, data, "CUSTOM", 0)
    for entity, row in unsmoothed.items():
        assert row["window"] > 0
        for split in ("train", "test"):
            assert smooth_scores(row[split]["model"], 50) == pytest.approx(default[entity][split]["model"], rel=1e-6)


def test_another_score_is_cached_apart_and_is_what_evaluate_scores_with_it(fleets, capsys):
    data, root = fleets
    flags = ["--data-dir", str(data), "--fleets", str(root), "--datasets", "CUSTOM", "--seeds", "0"]
    assert score_scales.main([*flags, "--candidates", "s50,d50,sum50+d50"]) == 0
    assert "| d50 |" in capsys.readouterr().out
    unsmoothed = pickle.loads((root / "alarm_scores" / "CUSTOM_seed0_discrepancy_smooth0.pkl").read_bytes())
    reconstruction = alarm_rules.cached_scores(root, data, "CUSTOM", 0, smooth=0)
    direct = evaluate_fleet(fleet_path(root / "CUSTOM_seed0", "CUSTOM"), "CUSTOM", data, baselines=(), device="cpu",
                            whole_series=False, score="discrepancy", smooth=50, jobs=1)  # fmt: skip
    for result in direct.entities:
        discrepancy = unsmoothed[result.entity]["test"]["model"]
        assert smooth_scores(discrepancy, 50) == pytest.approx(result.test["model"], rel=1e-6)
        assert not np.allclose(discrepancy, reconstruction[result.entity]["test"]["model"])
