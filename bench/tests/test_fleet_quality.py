"""bench/fleet_quality.py --aggregate on a folder without the metrics files: one line, no traceback."""

from __future__ import annotations

from bench.fleet_quality import main


def test_aggregate_without_metrics_files_names_the_first_missing_and_the_fix(tmp_path, capsys):
    (tmp_path / "MSL_seed0").mkdir()  # a bundle's folder, as another checkout leaves it, without its metrics
    assert main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path), "--datasets", "MSL", "--seeds", "0",
                 "--aggregate"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert str(tmp_path / "MSL_seed0" / "MSL_fleet_metrics.json") in error and "--rescore" in error
