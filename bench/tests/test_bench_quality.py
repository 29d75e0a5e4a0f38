"""bench/quality.py keeps every finished seed on its own and rebuilds the tables from those files.

This is what a short GPU lease relies on (bench/gpu_check.sh runs one seed per call, and the
tables are built later with --aggregate), so it runs for real on the MSL arrays, with a tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TINY = ["--d-model", "8", "--n-heads", "2", "--e-layers", "1", "--d-ff", "8", "--train-stride", "2000"]

pytestmark = pytest.mark.skipif(not (SHARED / "MSL" / "train.npy").exists(), reason="../shared/data is absent")


def quality(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "bench/quality.py", "--data-dir", str(SHARED), "--datasets", "MSL", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tables(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_seeds_are_saved_one_by_one_and_aggregate_rebuilds_the_same_tables(tmp_path: Path) -> None:
    trained = quality("--seeds", "0", "1", "--device", "cpu", "--output", str(tmp_path), *TINY)
    assert trained.returncode == 0, trained.stderr[-2000:]
    direct = (tmp_path / "quality_MSL.md").read_text()
    record = json.loads((tmp_path / "quality_MSL.json").read_text())
    for seed in (0, 1):
        saved = json.loads((tmp_path / f"quality_MSL_seed{seed}.json").read_text())
        assert saved["run"]["seed"] == seed
        assert saved["train_config"]["seed"] == seed and saved["model_config"]["d_model"] == 8
        assert saved["run"]["methods"] == record["runs"][seed]["methods"]
        with np.load(tmp_path / f"quality_MSL_seed{seed}_scores.npz") as scores:
            assert scores["test_paper"].shape == (73729,)
    # The two seeds differ, so the spread is real, not a copy of one run.
    roc = record["summary"]["model (paper score)"]["default"]["roc_auc"]
    assert roc["values"][0] != roc["values"][1] and roc["std"] > 0

    (tmp_path / "quality_MSL.md").unlink()
    rebuilt = quality("--seeds", "0", "1", "--output", str(tmp_path), "--aggregate")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert tables((tmp_path / "quality_MSL.md").read_text()) == tables(direct)
    assert len(tables(direct)) > 20

    # Seeds that were not trained alike are refused, naming the file.
    twice = quality("--seeds", "0", "0", "--output", str(tmp_path), "--aggregate")
    assert twice.returncode != 0 and "names a seed twice" in twice.stderr
    path = tmp_path / "quality_MSL_seed1.json"
    saved = json.loads(path.read_text())
    saved["train_config"]["lr"] *= 2
    path.write_text(json.dumps(saved))
    mixed = quality("--seeds", "0", "1", "--output", str(tmp_path), "--aggregate")
    assert mixed.returncode != 0 and f"{path} differs from the other seeds or the data in train_config" in mixed.stderr


def test_aggregate_names_the_missing_seed(tmp_path: Path) -> None:
    missing = quality("--seeds", "3", "--output", str(tmp_path), "--aggregate")
    assert missing.returncode != 0
    assert f"{tmp_path / 'quality_MSL_seed3.json'} is missing" in missing.stderr
