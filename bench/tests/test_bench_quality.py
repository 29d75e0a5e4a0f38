"""bench/quality.py keeps every finished seed on its own and rebuilds the tables from those files.

This is what a short GPU lease relies on (bench/gpu_check.sh runs one seed per call, and the
tables are built later with --aggregate), so it runs for real on the MSL arrays, with a tiny model.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from bench.quality import model_rows, variant_scorer
from model import SCORES, Detector, DetectorConfig
from model.score_settings import resolve_score_settings

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TINY = ["--d-model", "8", "--n-heads", "2", "--e-layers", "1", "--d-ff", "8", "--train-stride", "2000"]

needs_msl = pytest.mark.skipif(not (SHARED / "MSL" / "train.npy").exists(), reason="../shared/data is absent")


def quality(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "bench/quality.py", "--data-dir", str(SHARED), "--datasets", "MSL", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tables(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_every_row_scores_as_the_detector_does_with_that_setting_smoothed_rows_included() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 3)).astype(np.float32), rng.normal(size=(250, 3)).astype(np.float32)
    config = DetectorConfig(win_size=20, d_model=8, n_heads=2, e_layers=1, d_ff=8, epochs=1, val_ratio=0.0, seed=0)
    detector = Detector(config).fit(train)
    names = [f"channel_{index:02d}" for index in range(3)]
    resolve = partial(resolve_score_settings, channel_names=names, target_channels=[1], temperature=50.0)
    plain, options = model_rows(resolve)
    assert len(plain) == len(SCORES) and all(settings.smooth == 0 for settings in plain.values())
    assert any(settings.smooth > 1 for settings in options.values())
    scores_of = variant_scorer(detector, train, test)
    for row, settings in {**plain, **options}.items():
        direct = detector.rescored(settings)
        for got, part in zip(scores_of(settings), (train, test), strict=True):
            assert np.array_equal(got, direct.score_points(part).scores), row


@needs_msl
def test_seeds_are_saved_one_by_one_and_aggregate_rebuilds_the_same_tables(tmp_path: Path) -> None:
    trained = quality("--seeds", "0", "1", "--device", "cpu", "--output", str(tmp_path), *TINY)
    assert trained.returncode == 0, trained.stderr[-2000:]
    direct = (tmp_path / "quality_MSL.md").read_text()
    record = json.loads((tmp_path / "quality_MSL.json").read_text())
    saved_scores = {
        f"{split}_{name}{suffix}" for split in ("train", "test") for name in SCORES for suffix in ("", "_target")
    }
    for seed in (0, 1):
        saved = json.loads((tmp_path / f"quality_MSL_seed{seed}.json").read_text())
        assert saved["run"]["seed"] == seed
        assert saved["config"]["seed"] == seed and saved["config"]["d_model"] == 8
        assert saved["run"]["methods"] == record["runs"][seed]["methods"]
        with np.load(tmp_path / f"quality_MSL_seed{seed}_scores.npz") as scores:
            assert set(scores.files) == saved_scores
            assert scores["test_paper"].shape == (73729,)
            # the telemetry value alone scores differently from all 55 channels
            assert not np.array_equal(scores["test_reconstruction_target"], scores["test_reconstruction"])
    for name in SCORES:
        assert f"model ({name} score)" in record["summary"] and f"model ({name}, target channels)" in record["summary"]
    assert "model (reconstruction, target channels, smoothed 50) = default" in record["summary"]
    # The two seeds differ, so the spread is real, not a copy of one run.
    roc = record["summary"]["model (paper score)"]["default"]["roc_auc"]
    assert roc["values"][0] != roc["values"][1] and roc["std"] > 0

    (tmp_path / "quality_MSL.md").unlink()
    rebuilt = quality("--seeds", "0", "1", "--output", str(tmp_path), "--aggregate")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert tables((tmp_path / "quality_MSL.md").read_text()) == tables(direct)
    assert len(tables(direct)) > 20

    # Seeds that were not trained alike, or not tabled alike, are refused, naming the file.
    twice = quality("--seeds", "0", "0", "--output", str(tmp_path), "--aggregate")
    assert twice.returncode != 0 and "names a seed twice" in twice.stderr
    path = tmp_path / "quality_MSL_seed1.json"
    original = json.loads(path.read_text())

    def refusal(saved: dict) -> str:
        path.write_text(json.dumps(saved))
        mixed = quality("--seeds", "0", "1", "--output", str(tmp_path), "--aggregate")
        assert mixed.returncode != 0
        return mixed.stderr

    other_lr = {**original, "config": {**original["config"], "lr": original["config"]["lr"] * 2}}
    assert f"{path} differs from the other seeds or the data in config" in refusal(other_lr)
    fewer_rows = copy.deepcopy(original)
    del fewer_rows["run"]["methods"]["model (discrepancy, target channels)"]
    assert f"{path} differs from the other seeds or the data in methods" in refusal(fewer_rows)


@needs_msl
def test_aggregate_names_the_missing_seed(tmp_path: Path) -> None:
    missing = quality("--seeds", "3", "--output", str(tmp_path), "--aggregate")
    assert missing.returncode != 0
    assert f"{tmp_path / 'quality_MSL_seed3.json'} is missing" in missing.stderr
