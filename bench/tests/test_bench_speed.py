"""bench/speed.py measures ours and the code before the speed work side by side, and writes the rows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_speed_bench_writes_ours_before_and_their_ratio(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "speed.py"), "--configs", "defaults", "--batch-sizes", "4",
               "--steps", "1", "--repeats", "1", "--no-peer", "--no-fleet", "--data-dir", str(tmp_path / "none"),
               "--output", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((tmp_path / "out" / "speed.json").read_text())
    impls = {row["impl"]: row for row in document["rows"]}
    if "before" not in impls:
        pytest.skip(f"no git history here: {document['before']}")
    for side in ("before", "ours"):
        assert "error" not in impls[side], impls[side]
        assert impls[side]["train_windows_per_s"] > 0 and impls[side]["score_windows_per_s"] > 0
    assert impls["ours"]["default_score_windows_per_s"] > 0
    ours, before = impls["ours"], impls["before"]
    ratio = impls["ours / before"]
    assert ratio["train"] == pytest.approx(ours["train_windows_per_s"] / before["train_windows_per_s"])
    assert "| ours / before |" in (tmp_path / "out" / "speed.md").read_text()
