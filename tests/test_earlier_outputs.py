"""Files of an earlier evaluation beside a model: evaluate.py and train.py say which no longer match it."""

import evaluate
import train
from tests.test_fleet import train_tiny_fleet
from tests.tiny import TINY_TRAIN_FLAGS


def test_evaluate_names_the_report_it_did_not_write_and_train_names_what_a_new_model_outdates(tmp_path, capsys):
    data, out = train_tiny_fleet(tmp_path)
    common = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), "--device", "cpu",
              "--per-entity", "--baselines", "pca", "--jobs", "1"]  # fmt: skip
    capsys.readouterr()
    assert evaluate.main([*common, "--report", "html"]) == 0
    assert "note:" not in capsys.readouterr().err  # a first evaluation leaves nothing behind

    assert evaluate.main(common) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "CUSTOM_fleet_report.html" in note[0] and "not written by this run" in note[0]
    assert "CUSTOM_fleet_metrics.json" not in note[0]  # this run wrote it

    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--jobs", "1",
                       "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    logged = capsys.readouterr()
    line = next(line for line in (logged.out + logged.err).splitlines() if "evaluation of the model before" in line)
    assert "CUSTOM_fleet_metrics.json" in line and "CUSTOM_fleet_report.html" in line
    assert (out / "CUSTOM_fleet_metrics.json").is_file()  # named, not removed


def test_a_new_model_notes_nothing_in_an_empty_folder_and_its_evaluation_names_its_earlier_report(tmp_path, capsys):
    data, out = train_tiny_fleet(tmp_path)
    capsys.readouterr()
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--entity", "east", "--output-dir",
                       str(tmp_path / "single"), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    assert "evaluation of the model before" not in capsys.readouterr().out
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--entity", "east", "--output-dir",
                          str(tmp_path / "single"), "--device", "cpu", "--report", "html"]) == 0  # fmt: skip
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--entity", "east", "--output-dir",
                          str(tmp_path / "single"), "--device", "cpu"]) == 0  # fmt: skip
    assert "CUSTOM_east_report.html" in capsys.readouterr().err
