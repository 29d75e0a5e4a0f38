"""bench/quality.py on SMD and PSM, the datasets kept untouched for grading the honest-quality remedies.

Small files in the original formats stand in for them, so the test needs no data; the run is
real (a tiny model trained and scored), and the test checks what changes with the dataset: the
reference's anomaly ratio and epochs, the published F1-PA, and "target channels" meaning all of
them when the dataset names none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from model import SCORES
from tests.test_smd_psm import write_psm, write_smd

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--d-model", "8", "--n-heads", "2", "--e-layers", "1", "--d-ff", "8", "--win-size", "10"]


def quality(data_dir: Path, output: Path, dataset: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "bench/quality.py", "--data-dir", str(data_dir), "--datasets", dataset]
    command += ["--seeds", "0", "--device", "cpu", "--train-stride", "5", "--output", str(output), *TINY]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_smd_gets_the_reference_ratio_and_epochs_and_scores_every_channel_as_target(tmp_path: Path) -> None:
    write_smd(tmp_path / "data" / "ServerMachineDataset")
    run = quality(tmp_path / "data", tmp_path / "out", "SMD")
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "quality_SMD.json").read_text())
    assert record["config"]["anomaly_ratio"] == 0.5 and record["paper_f1_pa"] == 0.9233
    # the reference's SMD recipe (--preset paper on SMD): 10 epochs on windows 100 steps apart
    assert {"epochs 10 -> 1", "train_stride 100 -> 5"} <= set(record["changes_from_paper"])
    assert record["target_channels"] == [] and record["n_channels"] == 38
    assert "all channels, as the dataset names none" in (tmp_path / "out" / "quality_SMD.md").read_text()
    with np.load(tmp_path / "out" / "quality_SMD_seed0_scores.npz") as scores:
        for name in SCORES:
            assert np.array_equal(scores[f"test_{name}_target"], scores[f"test_{name}"])
        pooled = np.concatenate([scores["train_paper"], scores["test_paper"]])
    # the paper protocol's threshold is the 99.5th percentile of TRAIN + TEST scores (top 0.5 %), not the 99th
    paper = record["runs"][0]["methods"]["model (paper score)"]["paper"]
    assert paper["threshold"] == np.percentile(pooled, 99.5) != np.percentile(pooled, 99.0)


def test_psm_keeps_the_ratio_of_1_percent_and_3_epochs(tmp_path: Path) -> None:
    rows = 400
    rng = np.random.default_rng(0)
    features = ",".join(f"feature_{index}" for index in range(25))

    def table(values: np.ndarray, start: int) -> str:
        lines = (f"{start + t}.0," + ",".join(f"{v:.4f}" for v in row) for t, row in enumerate(values))
        return f"timestamp_(min),{features}\n" + "\n".join(lines) + "\n"

    labels = "timestamp_(min),label\n" + "".join(f"{rows + t}.0,{int(200 <= t < 230)}\n" for t in range(rows))
    write_psm(
        tmp_path / "data" / "PSM",
        table(rng.normal(size=(rows, 25)), 0),
        table(rng.normal(size=(rows, 25)), rows),
        labels,
    )
    run = quality(tmp_path / "data", tmp_path / "out", "PSM")
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "quality_PSM.json").read_text())
    assert record["config"]["anomaly_ratio"] == 1.0 and record["paper_f1_pa"] == 0.9789
    assert "epochs 3 -> 1" in record["changes_from_paper"] and record["n_channels"] == 25
