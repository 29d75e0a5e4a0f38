"""Fleet mode end to end on a small CUSTOM dataset of three entities: training, the bundle, resume,
routing in detect, evaluate and inspect on a bundle."""

import csv
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import detect
import evaluate
import inspect_checkpoint
import train
from data_factory import load_dataset
from data_factory.custom import read_entity_rows
from data_factory.entities import entity_names
from evaluation.fleet_report import entities_figure, evaluate_fleet, plotted_entities
from evaluation.metrics import roc_auc
from model import Detector, DetectorConfig
from model.fleet import Fleet
from runtime.errors import UserInputError
from tests.tiny import TINY_TRAIN_FLAGS

ROWS = {"east": (400, 300), "west": (360, 280), "stub": (12, 30)}  # entity: (train rows, test rows)


def write_fleet_data(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    trains, tests, labels, rows = [], [], [], []
    train_at = test_at = 0
    for index, (name, (n_train, n_test)) in enumerate(ROWS.items()):
        phase = np.arange(n_train + n_test)[:, None] / (7 + index) + np.arange(3)
        series = np.sin(phase) + 0.05 * rng.standard_normal(phase.shape) + index
        test = series[n_train:].copy()
        mark = np.zeros(n_test, dtype=np.uint8)
        if n_test > 100:
            test[100:120, 1] += 3.0
            mark[100:120] = 1
        trains.append(series[:n_train])
        tests.append(test)
        labels.append(mark)
        rows.append([name, train_at, n_train, test_at, n_test])
        train_at, test_at = train_at + n_train, test_at + n_test
    np.save(folder / "train_data.npy", np.concatenate(trains).astype(np.float32))
    np.save(folder / "test_data.npy", np.concatenate(tests).astype(np.float32))
    np.save(folder / "test_labels.npy", np.concatenate(labels))
    with open(folder / "entities.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "train_start", "train_len", "test_start", "test_len"])
        writer.writerows(rows)
    return folder


def train_tiny_fleet(root: Path, jobs: int = 1) -> tuple[Path, Path]:
    """The three-entity data written under root and a fleet trained on it with the tiny flags: (data, out)."""
    data = write_fleet_data(root)
    out = root / "out"
    code = train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", str(jobs),
                       "--output-dir", str(out), *TINY_TRAIN_FLAGS])  # fmt: skip
    assert code == 0
    return data, out


def write_routed_csv(data: Path, path: Path) -> list[tuple[str, np.ndarray]]:
    """east's first 150 TEST rows, west's first 200, then east's rest, as a CSV with an entity column; the
    (entity, row) pairs in file order."""
    east = load_dataset("CUSTOM", data, "east").test
    west = load_dataset("CUSTOM", data, "west").test
    rows = [("east", r) for r in east[:150]] + [("west", r) for r in west[:200]] + [("east", r) for r in east[150:]]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "ch0", "ch1", "ch2"])
        writer.writerows([name, *values.tolist()] for name, values in rows)
    return rows


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    data, out = train_tiny_fleet(tmp_path_factory.mktemp("fleet"), jobs=2)
    return {"data": data, "out": out, "bundle": out / "CUSTOM_fleet.pth"}


def test_custom_entities_come_from_entities_csv(fleet_run):
    assert entity_names("CUSTOM", fleet_run["data"]) == ["east", "west", "stub"]
    east = load_dataset("CUSTOM", fleet_run["data"], "east")
    assert east.name == "CUSTOM_east" and east.train.shape == (400, 3) and east.test_labels.sum() == 20


def test_entities_csv_takes_spaces_after_commas_and_names_what_is_wrong(tmp_path):
    np.save(tmp_path / "train_data.npy", np.zeros((10, 2), dtype=np.float32))
    (tmp_path / "entities.csv").write_text("entity, train_start, train_len, test_start, test_len\na, 0, 5, 0, 5\n")
    assert read_entity_rows(tmp_path) == [{"entity": "a", "train_start": 0, "train_len": 5, "test_start": 0,
                                           "test_len": 5}]  # fmt: skip
    (tmp_path / "entities.csv").write_text("entity,start,train_len,test_start,test_len\na,0,5,0,5\n")
    with pytest.raises(UserInputError, match="needs the columns entity,train_start.*; it has entity,start,train_len"):
        read_entity_rows(tmp_path)
    (tmp_path / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\na,0,5,0,5\nb,5,5,5,5\n"
                                           "a,0,5,0,5\n")  # fmt: skip
    with pytest.raises(UserInputError, match=r"entities.csv names a twice; give each entity one row"):
        read_entity_rows(tmp_path)


def test_one_model_on_data_with_entities_says_it_learns_them_as_one_series(tmp_path, capsys):
    data = write_fleet_data(tmp_path)
    common = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(tmp_path / "out"), *TINY_TRAIN_FLAGS]
    assert train.main(common) == 0
    assert "note: entities.csv lists 3 entities; this one model learns them as one series" in capsys.readouterr().out
    assert train.main([*common, "--entity", "east"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_an_entity_that_cannot_train_is_skipped_and_the_rest_train(fleet_run):
    fleet = Fleet.load(fleet_run["bundle"])
    assert list(fleet.detectors) == ["east", "west"]
    assert "fewer than the window of 20" in fleet.skipped["stub"]
    assert fleet.complete
    torch.load(fleet_run["bundle"], weights_only=True)


def test_a_nan_in_one_entity_skips_that_entity_alone_and_the_rest_train_and_evaluate(tmp_path, capsys):
    data = write_fleet_data(tmp_path)
    train_rows = np.load(data / "train_data.npy")
    west_start = ROWS["east"][0]
    train_rows[west_start + 7, 1] = np.nan  # west's row 7, in the file's rows
    np.save(data / "train_data.npy", train_rows)
    out = tmp_path / "out"
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1",
                       "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    fleet = Fleet.load(out / "CUSTOM_fleet.pth")
    assert list(fleet.detectors) == ["east"]
    assert f"(entity west) has 1 NaN/Inf values in 1 rows (first at row {west_start + 7}, column 1)" in (
        fleet.skipped["west"])
    assert "offsets in entities.csv" in fleet.skipped["west"]
    capsys.readouterr()
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out),
                          "--per-entity", "--jobs", "1", "--baselines", "none"]) == 0  # fmt: skip
    assert "1 entities scored by their own model" in capsys.readouterr().out  # east; west and stub skipped


def test_constant_train_data_stop_one_model_and_a_fleet_with_no_entity_trained_fails(tmp_path, capsys):
    data = tmp_path / "flat"
    data.mkdir()
    np.save(data / "train_data.npy", np.ones((300, 3), dtype=np.float32))
    np.save(data / "test_data.npy", np.ones((100, 3), dtype=np.float32))
    (data / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\na,0,150,0,50\n"
                                       "b,150,150,50,50\n")  # fmt: skip
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), *TINY_TRAIN_FLAGS]
    assert train.main([*flags, "--output-dir", str(tmp_path / "one")]) == 2
    assert "CUSTOM: TRAIN is constant in every channel, so there is nothing to learn" in capsys.readouterr().err
    assert not (tmp_path / "one" / "CUSTOM_checkpoint.pth").exists()
    assert train.main([*flags, "--output-dir", str(tmp_path / "fleet"), "--per-entity", "--jobs", "1"]) == 1
    captured = capsys.readouterr()
    assert "skipped a: TRAIN is constant in every channel" in captured.out
    assert "no entity of CUSTOM could train" in captured.err


def test_an_entity_whose_test_is_shorter_than_the_window_is_left_out_of_the_evaluation(fleet_run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(fleet_run["data"], data)
    rows = (data / "entities.csv").read_text().replace("west,400,360,300,280", "west,400,360,300,9")
    (data / "entities.csv").write_text(rows)
    out = tmp_path / "out"
    shutil.copytree(fleet_run["out"], out)
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out),
                          "--per-entity", "--jobs", "1", "--baselines", "none"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "1 entities scored by their own model" in printed
    assert "left out west: TEST (9 rows) is shorter than its model's window of 20" in printed
    (data / "entities.csv").write_text(rows.replace("east,0,400,0,300", "east,0,400,0,8"))
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out),
                          "--per-entity", "--jobs", "1", "--baselines", "none"]) == 2  # fmt: skip
    assert "no entity of" in capsys.readouterr().err  # every entity left out: one line, no traceback


def test_each_entity_in_the_bundle_is_that_entity_trained_alone(fleet_run):
    fleet = Fleet.load(fleet_run["bundle"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the fleet's workers
    try:
        alone = Detector(fleet.config).fit(load_dataset("CUSTOM", fleet_run["data"], "west"))
    finally:
        torch.set_num_threads(threads)
    for key, tensor in alone.model_.state_dict().items():
        assert torch.equal(fleet.detectors["west"].model_.state_dict()[key], tensor), key
    assert fleet.detectors["west"].threshold_ == alone.threshold_


def test_the_bundle_round_trips(fleet_run, tmp_path):
    fleet = Fleet.load(fleet_run["bundle"])
    again = Fleet.load(fleet.save(tmp_path / "copy.pth"))
    east = load_dataset("CUSTOM", fleet_run["data"], "east")
    np.testing.assert_array_equal(again.detectors["east"].score(east.test), fleet.detectors["east"].score(east.test))
    assert again.config == fleet.config and again.skipped == fleet.skipped


def test_resume_keeps_the_entities_already_trained(fleet_run, tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity", "--jobs", "1",
            "--output-dir", str(out), *TINY_TRAIN_FLAGS]  # fmt: skip
    assert train.main([*args, "--entities", "east"]) == 0
    first = Fleet.load(out / "CUSTOM_fleet.pth")
    assert list(first.detectors) == ["east"] and first.complete  # complete for what was asked
    assert train.main(["--resume", *args, "--epochs", "5"]) == 0  # the stored config wins over new flags
    resumed = Fleet.load(out / "CUSTOM_fleet.pth")
    assert list(resumed.detectors) == ["east", "west"] and "stub" in resumed.skipped
    assert resumed.config.epochs == 1
    kept, before = resumed.detectors["east"].model_.state_dict(), first.detectors["east"].model_.state_dict()
    assert all(torch.equal(kept[key], before[key]) for key in before)
    whole = Fleet.load(fleet_run["bundle"]).detectors["west"].model_.state_dict()
    assert all(torch.equal(resumed.detectors["west"].model_.state_dict()[key], whole[key]) for key in whole)


def test_detect_routes_each_row_to_its_entitys_model(fleet_run, tmp_path):
    fleet = Fleet.load(fleet_run["bundle"])
    east = load_dataset("CUSTOM", fleet_run["data"], "east").test
    west = load_dataset("CUSTOM", fleet_run["data"], "west").test
    source = tmp_path / "mixed.csv"
    rows = write_routed_csv(fleet_run["data"], source)
    out = tmp_path / "routed.csv"
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output", str(out),
                        "--entity-column", "entity"]) == 0  # fmt: skip
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["entity"] for row in written] == [name for name, _ in rows]
    east_scores = np.array([float(row["score"]) for row in written if row["entity"] == "east"], dtype=np.float32)
    np.testing.assert_array_equal(east_scores, fleet.detectors["east"].score(east))
    single = tmp_path / "west.csv"
    west_file = tmp_path / "west_in.npy"
    np.save(west_file, west)
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(west_file), "--output",
                        str(single), "--entity", "west"]) == 0  # fmt: skip
    with open(single, newline="") as handle:
        west_scores = np.array([float(row["score"]) for row in csv.DictReader(handle)], dtype=np.float32)
    np.testing.assert_array_equal(west_scores, fleet.detectors["west"].score(west))


def test_a_nan_among_one_entitys_rows_is_named_by_its_row_in_the_input_batch_and_live(fleet_run, tmp_path, capsys):
    source = tmp_path / "routed.csv"
    write_routed_csv(fleet_run["data"], source)
    frame = pd.read_csv(source)
    frame.loc[159, "ch1"] = np.nan  # west's 10th row: east's first 150 rows come before it
    frame.loc[400, "ch0"] = np.nan  # an east row after it: east's model is run first, yet the file's first NaN is named
    frame.to_csv(source, index=False, float_format="%.9g")
    flags = ["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--entity-column", "entity"]
    assert detect.main([*flags, "--output", str(tmp_path / "out.csv")]) == 2
    assert "(entity west) has NaN/Inf values (first at row 159, column ch1)" in capsys.readouterr().err
    live = subprocess.run([sys.executable, "detect.py", *flags[:2], "--entity-column", "entity", "--input", "-",
                           "--follow", "--device", "cpu"], input=source.read_text(), capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)  # fmt: skip
    assert live.returncode == 2 and "has NaN/Inf values (first at row 159, column ch1)" in live.stderr


def test_evaluate_gives_incidents_the_times_of_a_custom_test_csv(tmp_path):
    data, out = train_tiny_fleet(tmp_path)
    test = np.load(data / "test_data.npy")
    stamps = pd.date_range("2026-03-01", periods=len(test), freq="min").strftime("%Y-%m-%d %H:%M")
    frame = pd.DataFrame(test, columns=["ch0", "ch1", "ch2"])
    frame.insert(0, "timestamp", stamps)
    frame.to_csv(data / "test_data.csv", index=False, float_format="%.9g")
    (data / "test_data.npy").unlink()
    common = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), "--device", "cpu"]
    assert evaluate.main([*common, "--per-entity", "--jobs", "1", "--baselines", "none"]) == 0
    incidents = pd.read_csv(out / "CUSTOM_fleet_incidents.csv")
    offsets = {row["entity"]: row["test_start"] for row in read_entity_rows(data)}
    assert len(incidents) > 0
    for _, incident in incidents.iterrows():  # start is the entity's own row; its time is that row's in the file
        assert incident["start_time"] == stamps[offsets[incident["entity"]] + incident["start"]]
        assert incident["end_time"] == stamps[offsets[incident["entity"]] + incident["end"]]
    assert evaluate.main([*common, "--entity", "west", "--baselines", "none"]) == 0
    west = pd.read_csv(out / "CUSTOM_west_incidents.csv")
    assert len(west) > 0 and (west["start_time"] == [stamps[offsets["west"] + i] for i in west["start"]]).all()


def test_detect_leaves_an_entity_with_too_few_rows_blank_and_scores_the_others(fleet_run, tmp_path, capsys):
    fleet = Fleet.load(fleet_run["bundle"])
    east = load_dataset("CUSTOM", fleet_run["data"], "east").test
    west = load_dataset("CUSTOM", fleet_run["data"], "west").test[:7]  # a machine that sent little today
    source = tmp_path / "day.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "ch0", "ch1", "ch2"])
        writer.writerows([["west", *row] for row in west.tolist()] + [["east", *row] for row in east.tolist()])
    out = tmp_path / "routed.csv"
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output", str(out),
                        "--entity-column", "entity"]) == 0  # fmt: skip
    assert "west: not scored (7 rows, fewer than its model's window of 20); its rows are left blank" in (
        capsys.readouterr().err)  # detect.py's summary goes to stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["rows"], report["rows_not_scored"]) == (len(east), 7) and list(report["not_scored"]) == ["west"]
    written = pd.read_csv(out, keep_default_na=False)
    assert (written[written["entity"] == "west"][["score", "threshold", "flag"]] == "").all().all()
    east_scores = written[written["entity"] == "east"]["score"].astype(np.float32).to_numpy()
    np.testing.assert_array_equal(east_scores, fleet.detectors["east"].score(east))
    only_west = tmp_path / "west.csv"
    only_west.write_text("entity,ch0,ch1,ch2\n" + "".join(f"west,{a},{b},{c}\n" for a, b, c in west.tolist()))
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(only_west), "--output",
                        str(tmp_path / "none.csv"), "--entity-column", "entity"]) == 2  # fmt: skip
    assert "no entity has rows enough to score (west: 7 rows" in capsys.readouterr().err


def test_an_entity_column_read_with_entity_names_the_entity_column_flag(fleet_run, tmp_path, capsys):
    # Following a hint to read the entity names as times would score every entity's rows with one model.
    source = tmp_path / "mixed.csv"
    write_routed_csv(fleet_run["data"], source)
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output",
                        str(tmp_path / "o.csv"), "--entity", "west"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "has non-numeric columns ['entity']" in error and "--entity-column entity (entity names)" in error


def test_a_text_sensor_column_is_not_offered_as_the_entity_or_time_column_already_given(fleet_run, tmp_path, capsys):
    # A SCADA export: times and turbine named on the command line, a status column left as text. Suggesting
    # --entity-column status would route every row to a turbine named RUN.
    source = tmp_path / "status.csv"
    rows = write_routed_csv(fleet_run["data"], tmp_path / "routed.csv")
    source.write_text("timestamp,entity,ch0,ch1,ch2\n" + "".join(f"2026-01-01 {i // 60:02d}:{i % 60:02d},{name},"
                      f"{values[0]},{values[1]},RUN\n" for i, (name, values) in enumerate(rows)))  # fmt: skip
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output",
                        str(tmp_path / "o.csv"), "--entity-column", "entity"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "has non-numeric columns ['ch2'] (first: 'RUN' in row 0)" in error[0]
    assert "--entity-column ch2" not in error[0] and "--timestamp-column ch2" not in error[0]
    assert "as numbers" in error[0]


def test_an_unknown_or_skipped_entity_is_a_clear_error(fleet_run, tmp_path, capsys):
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((50, 3), dtype=np.float32))
    unknown = "unknown entity 'north' in the CUSTOM fleet (it has east, west): a fleet scores only the entities"
    for entity, message in (("north", unknown), ("stub", "was skipped in training")):
        assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output",
                            str(tmp_path / "o.csv"), "--entity", entity]) == 2  # fmt: skip
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0]


def test_a_bundle_without_an_entity_names_both_ways_to_use_it(fleet_run, tmp_path, capsys):
    from model.fleet import load_detector
    from runtime.errors import UserInputError

    with pytest.raises(UserInputError, match="pass --entity NAME .*--entity-column COLUMN"):
        load_detector(fleet_run["bundle"])
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((50, 3), dtype=np.float32))
    assert detect.main(["--checkpoint", str(fleet_run["bundle"]), "--input", str(source), "--output",
                        str(tmp_path / "o.csv")]) == 2  # fmt: skip
    assert "--entity-column COLUMN" in capsys.readouterr().err


def test_evaluate_as_one_model_on_a_bundle_names_per_entity_and_entity(fleet_run, tmp_path, capsys):
    common = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--device", "cpu"]
    before = sorted(fleet_run["out"].iterdir())
    assert evaluate.main([*common, "--output-dir", str(fleet_run["out"])]) == 2  # the folder holds only the bundle
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and f"the fleet bundle {fleet_run['bundle']} does" in error
    assert "--per-entity (every entity) or --entity NAME (one)" in error
    assert sorted(fleet_run["out"].iterdir()) == before
    given = ["--checkpoint", str(fleet_run["bundle"]), "--output-dir", str(tmp_path / "out")]
    assert evaluate.main([*common, *given]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pass --entity NAME" in error and "--per-entity for every entity" in error
    assert not (tmp_path / "out").exists()


def test_inspect_lists_a_bundle_one_line_per_entity(fleet_run, capsys):
    assert inspect_checkpoint.main([str(fleet_run["bundle"])]) == 0
    text = capsys.readouterr().out
    assert "2 entities trained, 1 skipped" in text
    assert any(line.split()[:1] == ["east"] for line in text.splitlines())
    assert "stub             skipped:" in text
    assert inspect_checkpoint.main([str(fleet_run["bundle"]), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert set(described["entities"]) == {"east", "west"}


def test_evaluate_on_a_bundle_reports_every_entity_and_the_aggregate(fleet_run, capsys):
    out = fleet_run["out"]
    code = evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity",
                          "--output-dir", str(out), "--device", "cpu", "--plots", "1"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "CUSTOM_fleet_metrics.json").read_text())
    assert set(report["entities"]) == {"east", "west"} and report["skipped"].keys() == {"stub"}
    assert report["methods"][0] == "model" and "kmeans" in report["methods"]
    east = report["entities"]["east"]["model"]
    assert 0 <= east["roc_auc"] <= 1 and 0 <= east["tsb_vus_pr"] <= 1
    assert east["flagged_share"] == pytest.approx(
        east["anomaly_share"] * (1 - east["missed_alarm_rate"]) + (1 - east["anomaly_share"]) * east["false_alarm_rate"]
    )  # the alarm metrics of one set of flags agree with each other
    mean = np.mean([report["entities"][e]["model"]["roc_auc"] for e in ("east", "west")])
    assert report["aggregate"]["model"]["roc_auc"]["mean"] == pytest.approx(mean)
    with open(out / "CUSTOM_fleet_entities.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 2 * len(report["methods"])
    assert (out / "CUSTOM_fleet_worst.png").stat().st_size > 0
    assert "per-entity protocol" in capsys.readouterr().out


def test_evaluate_checks_the_scoring_flags_once_on_either_path(fleet_run, tmp_path, monkeypatch):
    import evaluation.fleet_report
    import evaluation.report
    from evaluation.method_scores import check_scoring_flags

    calls = []

    def counted(*args):
        calls.append(args)
        check_scoring_flags(*args)

    for module in (evaluate, evaluation.report, evaluation.fleet_report):
        monkeypatch.setattr(module, "check_scoring_flags", counted)
    common = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--device", "cpu", "--baselines", "random",
              "--checkpoint", str(fleet_run["bundle"])]  # fmt: skip
    for path, flags in (("one entity", ["--entity", "east"]), ("per entity", ["--per-entity", "--plots", "0"])):
        calls.clear()
        assert evaluate.main([*common, *flags, "--output-dir", str(tmp_path / path)]) == 0, path
        assert calls == [(128, 0, "cpu")], path


def test_evaluate_per_entity_warns_of_drift_for_the_entity_whose_test_moved_as_detect_does(tmp_path, capsys):
    data = write_fleet_data(tmp_path)
    n_train, n_test = ROWS["east"]
    test = np.load(data / "test_data.npy")
    test[:n_test, 0] += np.load(data / "train_data.npy")[:n_train, 0].std()  # east's TEST: an offset sensor
    np.save(data / "test_data.npy", test)
    common = ["--dataset", "CUSTOM", "--data-dir", str(data)]
    evaluated = ["--per-entity", "--device", "cpu", "--baselines", "none", "--plots", "0", "--jobs", "1",
                 "--report", "html"]
    out = tmp_path / "out"
    assert train.main([*common, "--per-entity", "--jobs", "1", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0
    capsys.readouterr()
    assert evaluate.main([*common, *evaluated, "--output-dir", str(out)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning: drift" in line]
    assert len(warned) == 1 and warned[0].startswith("east: warning: drift in 1 of 3 channels")
    # The operator who reads the files, not the console, sees it too: in the metrics JSON and the report.
    entities = json.loads((out / "CUSTOM_fleet_metrics.json").read_text())["entities"]
    assert entities["east"]["drift"]["drifted"] == ["ch0"] and entities["west"]["drift"]["drifted"] == []
    report = html.unescape((out / "CUSTOM_fleet_report.html").read_text())
    assert report.count("warning: drift in") == 1 and warned[0].removeprefix("east: ") in report
    np.save(tmp_path / "east.npy", test[:n_test])
    assert detect.main(["--checkpoint", str(out / "CUSTOM_fleet.pth"), "--entity", "east", "--input",
                        str(tmp_path / "east.npy"), "--output", str(tmp_path / "east.csv"), "--device", "cpu"]) == 0
    assert [f"east: {line}" for line in capsys.readouterr().err.splitlines() if "warning: drift" in line] == warned
    # One model of the whole dataset normalises by every entity's TRAIN: entities that differ are not drift.
    shared = tmp_path / "shared"
    assert train.main([*common, "--output-dir", str(shared), *TINY_TRAIN_FLAGS]) == 0
    capsys.readouterr()
    assert evaluate.main([*common, *evaluated, "--output-dir", str(shared)]) == 0
    assert "warning: drift" not in capsys.readouterr().err


def test_the_worst_and_best_plots_say_what_they_show_and_share_no_entity(fleet_run):
    evaluation = evaluate_fleet(fleet_run["bundle"], "CUSTOM", fleet_run["data"], baselines=(), device="cpu", jobs=1)
    lowest, highest = sorted(evaluation.entities, key=lambda entity: entity.metrics["model"]["tsb_vus_pr"])
    plots = plotted_entities(evaluation, 3)  # 2 graded entities, fewer than twice 3: split, not shown twice
    assert {key: ([entity.entity for entity in chosen], title) for key, (chosen, title) in plots.items()} == {
        "worst": ([lowest.entity], "CUSTOM fleet: the 1 entity with the lowest VUS-PR, of 2 graded"),
        "best": ([highest.entity], "CUSTOM fleet: the 1 entity with the highest VUS-PR, of 2 graded"),
    }
    for chosen, title in plots.values():
        figure = entities_figure(chosen, title)
        metrics = chosen[0].metrics["model"]
        assert figure.get_suptitle() == title  # the figure's own title, not its last panel's
        assert [axis.get_title() for axis in figure.axes] == [
            f"{chosen[0].entity}: VUS-PR {metrics['tsb_vus_pr']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}"
        ]
        plt.close(figure)
    assert plotted_entities(evaluation, 0)["best"] == ([], "CUSTOM fleet: no entity plotted (--plots 0)")


def test_evaluating_entities_in_parallel_gives_exactly_the_serial_result(fleet_run):
    # Each entity is evaluated on one thread wherever it runs, so workers change the time, not the numbers.
    serial, parallel = (evaluate_fleet(fleet_run["bundle"], "CUSTOM", fleet_run["data"], device="cpu", jobs=jobs)
                        for jobs in (1, 2))  # fmt: skip
    assert [entity.entity for entity in parallel.entities] == ["east", "west"]
    for one, other in zip(serial.entities, parallel.entities, strict=True):
        np.testing.assert_equal(one.metrics, other.metrics)  # assert_equal: a NaN equals a NaN
        assert one.failed == other.failed
        for method in serial.methods:
            np.testing.assert_array_equal(one.test[method], other.test[method])
            np.testing.assert_array_equal(one.train[method], other.train[method])
    np.testing.assert_equal(serial.whole_series, parallel.whole_series)


def test_one_model_of_the_whole_dataset_is_graded_per_entity_when_there_is_no_bundle(fleet_run, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--output-dir", str(out)]
    assert train.main([*common, *TINY_TRAIN_FLAGS]) == 0
    capsys.readouterr()
    assert evaluate.main([*common, "--per-entity", "--device", "cpu", "--baselines", "pca", "--jobs", "1"]) == 0
    assert "CUSTOM shared model: 2 entities scored by the one shared model" in capsys.readouterr().out
    report = json.loads((out / "CUSTOM_shared_metrics.json").read_text())
    assert report["models"] == "one shared model for every entity" and set(report["entities"]) == {"east", "west"}
    assert "shorter than the model's window of 20" in report["skipped"]["stub"]  # 12 TRAIN rows: left out
    model = Detector.load(out / "CUSTOM_checkpoint.pth")
    for name in ("east", "west"):  # each entity's own series, scored by the one model
        data = load_dataset("CUSTOM", fleet_run["data"], name)
        expected = roc_auc(data.test_labels, model.score(data.test))
        assert report["entities"][name]["model"]["roc_auc"] == pytest.approx(expected)
    serial, parallel = (evaluate_fleet(out / "CUSTOM_checkpoint.pth", "CUSTOM", fleet_run["data"], baselines=(),
                                       device="cpu", jobs=jobs) for jobs in (1, 2))  # fmt: skip
    assert parallel.skipped.keys() == {"stub"} and parallel.shared
    for one, other in zip(serial.entities, parallel.entities, strict=True):
        np.testing.assert_equal(one.metrics, other.metrics)
    one_entity = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--output-dir", str(tmp_path)]
    assert train.main([*one_entity, "--entity", "east", *TINY_TRAIN_FLAGS]) == 0
    capsys.readouterr()
    code = evaluate.main([*one_entity, "--per-entity", "--checkpoint", str(tmp_path / "CUSTOM_east_checkpoint.pth")])
    assert code == 2 and "is one model of CUSTOM_east alone" in capsys.readouterr().err


def test_jobs_is_a_per_entity_flag(fleet_run, capsys):
    args = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--output-dir", str(fleet_run["out"]),
            "--entity", "east", "--device", "cpu", "--jobs", "2"]  # fmt: skip
    assert evaluate.main(args) == 2
    assert "--jobs is for --per-entity" in capsys.readouterr().err
    assert evaluate.main([*args[:6], "--per-entity", "--device", "cpu", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def spawned_children(parent: int) -> list[int]:
    """The multiprocessing spawn workers whose parent is `parent`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_text(errors="replace")
        except (OSError, ValueError, IndexError):  # the process ended while being read
            continue
        if ppid == parent and "spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def test_a_worker_killed_mid_evaluation_is_a_one_line_error_naming_jobs(fleet_run, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    flags = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity", "--checkpoint",
             str(fleet_run["bundle"]), "--output-dir", str(tmp_path), "--device", "cpu", "--jobs", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen([sys.executable, "evaluate.py", *flags], cwd=root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and child.poll() is None:
        for pid in spawned_children(child.pid):  # a worker spends seconds importing torch before it scores: kill it
            os.kill(pid, signal.SIGKILL)
            killed = pid
            break
        time.sleep(0.02)
    _, stderr = child.communicate(timeout=120)
    assert killed is not None and child.returncode == 2, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert "a worker process died while evaluating the CUSTOM fleet" in line and "lower --jobs (it was 2)" in line
    assert not (tmp_path / "CUSTOM_fleet_metrics.json").exists()


def test_evaluate_one_entity_of_a_bundle_gives_its_full_report(fleet_run, capsys):
    out = fleet_run["out"]
    code = evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--entity", "east",
                          "--output-dir", str(out), "--device", "cpu", "--explain", "1"])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "CUSTOM_east_metrics.json").read_text())
    assert metrics["dataset"] == "CUSTOM_east" and (out / "CUSTOM_east_associations.png").is_file()
    assert (out / "CUSTOM_east_attribution.json").is_file()
    assert DetectorConfig.from_dict(Fleet.load(fleet_run["bundle"]).config.to_dict()).win_size == 20


def copy_with_new(data: Path, folder: Path, split: str) -> Path:
    """A copy of the fleet's CUSTOM folder whose `split` ("train" or "test") data are new (noise added)."""
    folder.mkdir()
    for name in ("train_data.npy", "test_data.npy", "test_labels.npy", "entities.csv"):
        shutil.copyfile(data / name, folder / name)
    values = np.load(data / f"{split}_data.npy")
    noise = 0.05 * np.random.default_rng(7).standard_normal(values.shape)
    np.save(folder / f"{split}_data.npy", (values + noise).astype(np.float32))
    return folder


def test_a_bundle_grades_a_new_test_period_beside_the_same_train_and_refuses_another_train(fleet_run, tmp_path, capsys):
    new_test = copy_with_new(fleet_run["data"], tmp_path / "new_test", "test")
    new_train = copy_with_new(fleet_run["data"], tmp_path / "new_train", "train")
    bundle = ["--dataset", "CUSTOM", "--checkpoint", str(fleet_run["bundle"]), "--device", "cpu",
              "--output-dir", str(tmp_path)]  # fmt: skip
    per_entity, one_entity = ["--per-entity", "--baselines", "pca"], ["--entity", "east"]
    assert evaluate.main([*bundle, "--data-dir", str(new_test), *per_entity]) == 0
    assert set(json.loads((tmp_path / "CUSTOM_fleet_metrics.json").read_text())["entities"]) == {"east", "west"}
    assert evaluate.main([*bundle, "--data-dir", str(new_test), *one_entity]) == 0
    assert (tmp_path / "CUSTOM_east_metrics.json").is_file()
    capsys.readouterr()
    for flags in (per_entity, one_entity):
        assert evaluate.main([*bundle, "--data-dir", str(new_train), *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and "different CUSTOM_east TRAIN data (fingerprint mismatch)" in error


@pytest.mark.slow
def test_a_two_process_fleet_equals_the_one_process_fleet_entity_by_entity(fleet_run, tmp_path):
    from tests.test_distributed import torchrun

    out = tmp_path / "out"
    completed = torchrun("train.py", "--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity",
                         "--jobs", "1", "--output-dir", str(out), *TINY_TRAIN_FLAGS)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("saved ") == 1  # rank 0 alone writes
    split = torch.load(out / "CUSTOM_fleet.pth", weights_only=True)
    whole = torch.load(fleet_run["bundle"], weights_only=True)
    assert split["order"] == whole["order"] and split["skipped"] == whole["skipped"]
    assert list(whole["skipped"]) == ["stub"]
    assert list(split["entities"]) == list(whole["entities"]) == ["east", "west"]
    for name in ("east", "west"):  # each entity trained on one thread wherever it ran: the same record, bit for bit
        assert_same(split["entities"][name], whole["entities"][name], name)
    assert "entities trained this run: rank 0 took " in completed.stdout and not list(out.glob("*.shard-*"))


def assert_same(mine: object, theirs: object, where: str) -> None:
    """Equal all the way down, wall times and dates aside: tensors bit for bit, everything else with ==."""
    if isinstance(theirs, dict):
        assert isinstance(mine, dict) and mine.keys() == theirs.keys(), where
        for key in theirs.keys() - {"seconds", "created"}:
            assert_same(mine[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs), where
        for index, (one, other) in enumerate(zip(mine, theirs, strict=True)):
            assert_same(one, other, f"{where}[{index}]")
    elif isinstance(theirs, torch.Tensor):
        assert torch.equal(mine, theirs), where
    else:
        assert mine == theirs, where


def test_resuming_with_other_entities_keeps_the_ones_already_trained(fleet_run, tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity", "--jobs", "1",
            "--output-dir", str(out), *TINY_TRAIN_FLAGS]  # fmt: skip
    assert train.main([*args, "--entities", "west"]) == 0
    assert train.main(["--resume", *args, "--entities", "east"]) == 0
    fleet = Fleet.load(out / "CUSTOM_fleet.pth")
    assert set(fleet.detectors) == {"west", "east"} and fleet.order == ["west", "east"]


def test_global_normalisation_uses_every_entitys_train_and_survives_resume(fleet_run, tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "CUSTOM", "--data-dir", str(fleet_run["data"]), "--per-entity", "--jobs", "1",
            "--normalisation", "global", "--output-dir", str(out), *TINY_TRAIN_FLAGS]  # fmt: skip
    assert train.main([*args, "--entities", "east"]) == 0
    whole = np.load(fleet_run["data"] / "train_data.npy")
    first = Fleet.load(out / "CUSTOM_fleet.pth")
    np.testing.assert_allclose(first.shared_normaliser.mean, whole.mean(axis=0), rtol=1e-5)
    assert first.detectors["east"].normalizer_.mean.tolist() == first.shared_normaliser.mean.tolist()
    assert train.main(["--resume", *args, "--entities", "west"]) == 0
    resumed = Fleet.load(out / "CUSTOM_fleet.pth")
    assert resumed.normalisation == "global"
    assert resumed.detectors["west"].normalizer_.std.tolist() == first.shared_normaliser.std.tolist()


def write_slow_fleet(folder: Path, entities: int = 6) -> Path:
    """Entities long enough that training one takes a few seconds on one thread."""
    rng = np.random.default_rng(1)
    n = 1500
    series = np.sin(np.arange(entities * n)[:, None] / 9 + np.arange(3)) + 0.05 * rng.standard_normal((entities * n, 3))
    np.save(folder / "train_data.npy", series.astype(np.float32))
    np.save(folder / "test_data.npy", series.astype(np.float32))
    with open(folder / "entities.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "train_start", "train_len", "test_start", "test_len"])
        writer.writerows([f"e{i}", i * n, n, i * n, n] for i in range(entities))
    return folder


@pytest.mark.slow
def test_sigterm_stops_a_fleet_with_the_finished_entities_saved_and_resume_completes_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = write_slow_fleet(tmp_path)
    out = tmp_path / "out"
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "2", "--output-dir", str(out),
             "--d-model", "16", "--n-heads", "2", "--e-layers", "1", "--d-ff", "32", "--win-size", "20",
             "--epochs", "3", "--no-progress", "--device", "cpu"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "train.py", *flags], cwd=root, env=env, stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    bundle = out / "CUSTOM_fleet.pth"
    deadline = time.time() + 240
    while not bundle.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=240)
    assert child.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    assert "stopped by SIGTERM after" in message and "--per-entity" in message and str(bundle) in message
    stopped = Fleet.load(bundle)
    assert 1 <= len(stopped.detectors) < 6 and not stopped.complete
    assert train.main(["--resume", *flags]) == 0
    assert len(Fleet.load(bundle).detectors) == 6
