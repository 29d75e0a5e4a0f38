"""Degenerate methods: the rule, the metrics it leaves out, and the report on a constant channel
(a toy that always runs, and SMAP's A-1 from ../shared/data where present)."""

import json
from pathlib import Path

import numpy as np
import pytest

import evaluate
import train
from data_factory.registry import load_dataset
from data_factory.windows import Normalizer
from evaluation.baselines import pca_baseline_scores
from evaluation.degenerate import degenerate_reason, is_constant
from evaluation.grading import grade
from evaluation.thresholds import choose_threshold
from tests.tiny import TINY_TRAIN_FLAGS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLAG_METRICS = ("precision", "recall", "f1", "pa_f1", "pa_k20_f1", "event_f1", "affiliation_precision")


def test_threshold_free_metrics_are_exactly_those_that_ignore_the_flags_and_a_degenerate_method_keeps_them():
    rng = np.random.default_rng(0)
    labels = np.zeros(600, dtype=np.uint8)
    labels[100:140] = labels[400:430] = 1
    scores = rng.random(600) + labels
    train = rng.random(600)
    exact, sloppy = labels.copy(), np.zeros(600, dtype=np.uint8)
    sloppy[[120, 300, 500]] = 1
    first = grade(labels, train, scores, exact, 1.0, panel=True).panel
    second = grade(labels, train, scores, sloppy, 1.0, panel=True).panel
    unchanged = {key for key in first if first[key] == second[key]}
    threshold_free = {"roc_auc", "pr_auc", "vus_roc", "vus_pr", "best_f1"}
    assert unchanged == {*threshold_free, "anomaly_share"}
    masked = grade(labels, np.zeros(600), scores, exact, 1.0, panel=True)  # constant TRAIN scores: degenerate
    assert masked.degenerate_reason == "its TRAIN scores are constant (0)"
    assert {key for key, value in masked.panel.items() if value is not None} == {*unchanged, "flagged_share"}
    kept = {"anomaly_share", "flagged_share", "within_flag_bound"}  # whether it floods is still known
    assert {key for key, value in masked.alarms.items() if value is not None} == kept


def test_degenerate_reason_names_each_case_and_passes_a_working_score():
    rng = np.random.default_rng(1)
    varying_train, varying_test = rng.random(500), rng.random(300)
    assert degenerate_reason(varying_train, varying_test, 0.99) is None
    assert degenerate_reason(np.zeros(500), varying_test + 1e-6, 0.0) == (
        "its TRAIN scores are constant (0); the threshold 0 flags all 300 TEST points"
    )
    assert degenerate_reason(varying_train, np.full(300, 0.5), 0.99) == "its TEST scores are constant (0.5)"
    assert degenerate_reason(varying_train, varying_test + 2, 0.99) == "the threshold 0.99 flags all 300 TEST points"
    # float32 round-off around a constant is still constant; a spread of 1e-4 is not.
    assert is_constant(np.float32(3.0) + np.float32(1e-7) * rng.standard_normal(500).astype(np.float32))
    assert not is_constant(3.0 + 1e-4 * rng.standard_normal(500))


def test_a_constant_channel_makes_the_pca_baseline_degenerate_in_the_report(tmp_path, capsys):
    """CUSTOM data whose channel 0 never moves over TRAIN: PCA reconstructs it exactly, so scored on
    that channel its TRAIN scores are all 0. The model, scored on the same channel, is not degenerate."""
    rng = np.random.default_rng(2)
    train_data = rng.normal(size=(2000, 3)).astype(np.float32)
    train_data[:, 0] = 5.0
    test_data = rng.normal(size=(1000, 3)).astype(np.float32)
    test_data[:, 0] = 5.0
    test_data[400:450, 0] = 6.0
    labels = np.zeros(1000, dtype=np.uint8)
    labels[400:450] = 1
    data = tmp_path / "data"
    data.mkdir()
    for name, array in (("train_data", train_data), ("test_data", test_data), ("test_labels", labels)):
        np.save(data / f"{name}.npy", array)
    args = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(tmp_path)]
    assert train.main([*args, *TINY_TRAIN_FLAGS]) == 0
    capsys.readouterr()
    # random and pca beside the model; the budget rule, under which the model and random flag some points here, so
    # that their flag metrics are all defined (under the guarded default one of them flags no point of this toy)
    assert evaluate.main([*args, "--score-channels", "0", "--smooth", "0", "--device", "cpu",
                          "--alarm-rule", "budget"]) == 0  # fmt: skip
    printed = capsys.readouterr().out

    results = json.loads((tmp_path / "CUSTOM_metrics.json").read_text())["results"]
    pca = results["pca"]
    assert pca["degenerate"] is True
    assert pca["degenerate_reason"] == "its TRAIN scores are constant (0)"  # the bump is not flagged everywhere
    assert pca["threshold"] == 0.0 and pca["n_flagged"] == 50
    assert all(pca[key] is None for key in FLAG_METRICS)
    assert pca["roc_auc"] == pytest.approx(1.0) and pca["flagged_share"] == pytest.approx(0.05)
    for name in ("model", "random"):
        assert results[name]["degenerate"] is False and results[name]["degenerate_reason"] is None
        assert all(isinstance(results[name][key], float) for key in FLAG_METRICS)

    assert "pca is degenerate: its TRAIN scores are constant (0); its threshold metrics are left out (-)" in printed
    (f1_row,) = [line for line in printed.splitlines() if line.startswith("point F1 ")]
    assert f1_row.split()[-1] == "-" and len(f1_row.split()) == 5  # point, F1, model, random, pca
    assert "random is degenerate" not in printed and "model is degenerate" not in printed


def test_the_fleet_metrics_name_why_a_method_is_degenerate_on_an_entity(tmp_path):
    """Two CUSTOM entities; channel 0 never moves over east's TRAIN, so PCA scored on it is degenerate there
    alone, and the fleet JSON says why its alarm metrics are null, as evaluate.py's does for one model."""
    rng = np.random.default_rng(3)
    train_data = rng.normal(size=(1200, 3)).astype(np.float32)
    train_data[:600, 0] = 5.0
    test_data = rng.normal(size=(600, 3)).astype(np.float32)
    test_data[:300, 0] = 5.0
    labels = np.zeros(600, dtype=np.uint8)
    for start in (100, 400):
        test_data[start : start + 30, 0] += 3.0
        labels[start : start + 30] = 1
    data = tmp_path / "data"
    data.mkdir()
    for name, array in (("train_data", train_data), ("test_data", test_data), ("test_labels", labels)):
        np.save(data / f"{name}.npy", array)
    rows = ["entity,train_start,train_len,test_start,test_len", "east,0,600,0,300", "west,600,600,300,300"]
    (data / "entities.csv").write_text("\n".join(rows) + "\n")
    args = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(tmp_path), "--per-entity"]
    assert train.main([*args, "--jobs", "1", *TINY_TRAIN_FLAGS]) == 0
    flags = ["--baselines", "pca", "--score-channels", "0", "--smooth", "0", "--plots", "0", "--jobs", "1"]
    assert evaluate.main([*args, *flags]) == 0

    entities = json.loads((tmp_path / "CUSTOM_fleet_metrics.json").read_text())["entities"]
    assert entities["east"]["degenerate"]["pca"] == "its TRAIN scores are constant (0)"
    assert entities["east"]["pca"]["f1"] is None
    assert "pca" not in entities["west"]["degenerate"] and entities["west"]["pca"]["f1"] is not None


@pytest.mark.skipif(not (SHARED_DATA / "SMAP" / "channels.csv").exists(), reason="../shared/data/SMAP is absent")
def test_pca_on_smap_a1_is_degenerate_it_flags_every_test_point():
    """The real case: A-1's telemetry (the SMAP target channel) is flat over TRAIN."""
    dataset = load_dataset("SMAP", SHARED_DATA, "A-1")
    normalizer = Normalizer.fit(dataset.train)
    train_scores, test_scores = pca_baseline_scores(
        normalizer.transform(dataset.train), normalizer.transform(dataset.test), channels=dataset.target_channels
    )
    threshold = choose_threshold("train", train_scores, test_scores).value
    assert threshold == 0.0 and (test_scores > threshold).all()
    assert degenerate_reason(train_scores, test_scores, threshold) == (
        "its TRAIN scores are constant (0); the threshold 0 flags all 8640 TEST points"
    )
