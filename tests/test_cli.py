import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import train
from model.config import config_from_flags
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_TRAIN_FLAGS, "--batch-size", "64"]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """One tiny real training run and evaluation on SYNTH, shared by the tests below."""
    out = tmp_path_factory.mktemp("artifacts")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY]) == 0
    checkpoint = out / "SYNTH_checkpoint.pth"
    assert evaluate.main(["--dataset", "SYNTH", "--checkpoint", str(checkpoint), "--output-dir", str(out)]) == 0
    return out


def test_train_help_lists_the_original_flags_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]  # past the usage line
    for flag, default in [
        ("--dataset", "SMAP"),
        ("--d-model", "256"),
        ("--n-heads", "8"),
        ("--e-layers", "3"),
        ("--d-ff", "512"),
        ("--win-size", "100"),
        ("--batch-size", "128"),
        ("--epochs", "10"),
        ("--lr", "1e-4"),
        ("--output-dir", "./artifacts"),
        ("--k", "3"),
        ("--val-ratio", "0.2"),
    ]:
        assert flag in text and f"(default: {default})" in text.split(f"{flag} ", 1)[1], flag
    for flag in ("--data-dir", "--seed", "--device", "--patience", "--num-workers", "--preset", "--amp"):
        assert flag in text
    assert "anomaly_data" in text


def test_evaluate_help_lists_its_flags_and_defaults(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--dataset", "--checkpoint", "--threshold-percentile", "--output-dir", "--data-dir"):
        assert flag in text
    assert "(default: the checkpoint's, 99 unless trained otherwise)" in text.split("--threshold-percentile ", 1)[1]


def train_settings(*flags: str):
    """The DetectorConfig train.py builds from these flags."""
    args = train.build_parser().parse_args(list(flags))
    return config_from_flags(args, args.preset, args.dataset)


def test_presets_set_sizes_and_explicit_flags_override_them():
    settings = train_settings("--preset", "paper", "--epochs", "7")
    assert (settings.d_model, settings.batch_size, settings.epochs) == (512, 256, 7)
    assert settings.score == "paper"  # the paper preset keeps the paper's criterion
    assert settings.val_ratio == 0.0  # and trains on all of TRAIN, as the reference does
    assert train_settings("--preset", "paper", "--score", "reconstruction").score == "reconstruction"
    assert train_settings("--preset", "paper", "--val-ratio", "0.1").val_ratio == 0.1
    smd = train_settings("--preset", "paper", "--dataset", "SMD")
    assert (smd.epochs, smd.train_stride, smd.d_model) == (10, 100, 512)  # the reference's SMD recipe
    assert train_settings("--preset", "paper", "--dataset", "SMD", "--epochs", "2").epochs == 2
    assert (train_settings("--preset", "paper", "--dataset", "MSL").epochs, settings.train_stride) == (3, 1)
    small = train_settings("--preset", "small")
    assert (small.d_model, small.e_layers, small.batch_size) == (128, 2, 128)
    default = train_settings()
    assert (default.d_model, default.e_layers, default.epochs, default.lr) == (256, 3, 10, 1e-4)
    assert (default.score, default.val_ratio) == ("reconstruction", 0.2)


def test_checkpoint_loads_with_weights_only_and_holds_everything(synth_run):
    checkpoint = torch.load(synth_run / "SYNTH_checkpoint.pth", weights_only=True)
    assert checkpoint["model_config"] == {
        "n_channels": 12,
        "win_size": 20,
        "d_model": 16,
        "n_heads": 2,
        "e_layers": 1,
        "d_ff": 32,
        "dropout": 0.0,
    }
    assert checkpoint["train_config"]["epochs"] == 1 and checkpoint["train_config"]["k"] == 3.0
    assert checkpoint["normalization"]["mean"].shape == (12,)
    assert checkpoint["dataset"]["name"] == "SYNTH" and len(checkpoint["dataset"]["fingerprint"]) == 64
    assert len(checkpoint["history"]) == 1 and {"train_rec", "val_rec", "lr"} <= checkpoint["history"][0].keys()
    assert checkpoint["versions"]["torch"] == str(torch.__version__)
    assert set(checkpoint["train_scores"]["percentiles"]) == {"90.0", "95.0", "99.0", "99.5", "99.9"}


def test_evaluate_rebuilds_the_model_and_reproduces_the_training_scores(synth_run):
    checkpoint = torch.load(synth_run / "SYNTH_checkpoint.pth", weights_only=True)
    results = np.load(synth_run / "SYNTH_evaluation.npz")
    # The threshold comes from TRAIN scores recomputed from the checkpoint alone: it must equal
    # the 99th percentile the training run stored.
    assert float(results["threshold"]) == pytest.approx(checkpoint["train_scores"]["percentiles"]["99.0"], rel=1e-5)
    assert results["scores"].shape == results["labels"].shape == results["predictions"].shape == (10_000,)
    np.testing.assert_array_equal(results["predictions"], results["scores"] > results["thresholds"])
    # The decision rule (budget, by default) starts at that threshold and never goes below it.
    assert (results["thresholds"] >= results["threshold"]).all()
    summary = json.loads((synth_run / "SYNTH_metrics.json").read_text())
    assert summary == json.loads(str(results["metrics_json"]))
    assert summary["protocol"] == "default" and summary["n_points"] == 10_000
    assert ["model", "random", "pca"] == list(summary["results"])
    for name, result in summary["results"].items():
        assert result["threshold_uses_test_scores"] is False and result["threshold_uses_test_labels"] is False
        for key in ("precision", "recall", "f1", "roc_auc", "pr_auc", "pa_precision", "pa_recall", "pa_f1"):
            assert 0 <= result[key] <= 1, (name, key)
    assert summary["results"]["model"]["threshold"] == pytest.approx(float(results["threshold"]))
    assert results["random_scores"].shape == results["pca_scores"].shape == (10_000,)
    assert (synth_run / "SYNTH_scores.png").read_bytes()[:4] == b"\x89PNG"


def run_cli(module, args, capsys):
    code = module.main(args)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "NOPE"], "unknown dataset 'NOPE'"),
        (["--dataset", "CUSTOM"], "needs --data-dir"),
        (["--dataset", "SYNTH", "--d-model", "30", "--n-heads", "4"], "--n-heads 4 does not divide --d-model 30"),
        (["--dataset", "SYNTH", "--epochs", "0"], "--epochs must be positive"),
        (["--dataset", "SYNTH", "--lr", "-1"], "--lr must be positive"),
        (["--dataset", "SYNTH", "--lr", "0"], "--lr must be positive"),
        (["--dataset", "SYNTH", "--win-size", "5000"], "fewer than the window of 5000"),
        # 20 % of SYNTH's 10,000 TRAIN steps is shorter than the window, the rest is not: hold out no tail
        (["--dataset", "SYNTH", "--win-size", "3000"], "or train on all of TRAIN with --val-ratio 0"),
        # a flag of the other mode (one model, a fleet) is refused rather than ignored
        (["--dataset", "SYNTH", "--entities", "a,b"], "--entities chooses the entities of a fleet: add --per-entity"),
        (["--dataset", "SYNTH", "--jobs", "2"], "--jobs is for --per-entity"),
        (["--dataset", "SYNTH", "--per-entity", "--save-every", "5"], "--save-every applies to one model"),
        (["--dataset", "SYNTH", "--per-entity", "--entity", "x"], "use --entities A,B to choose some"),
        (["--dataset", "SYNTH", "--per-entity", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    ],
)
def test_train_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    code, err = run_cli(train, [*args, "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 2
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_failed_run_leaves_the_existing_output_untouched(tmp_path, capsys):
    existing = tmp_path / "SYNTH_checkpoint.pth"
    existing.write_bytes(b"an older, precious checkpoint")
    code, _ = run_cli(train, ["--dataset", "SYNTH", "--win-size", "9000", "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert existing.read_bytes() == b"an older, precious checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SYNTH_checkpoint.pth"]


def test_custom_data_with_nan_is_reported_with_count_and_place(tmp_path, capsys):
    train_data = np.random.default_rng(0).normal(size=(300, 3))
    train_data[[10, 50], 2] = np.nan
    np.save(tmp_path / "train_data.npy", train_data)
    np.save(tmp_path / "test_data.npy", np.zeros((100, 3)))
    code, err = run_cli(
        train,
        ["--dataset", "CUSTOM", "--data-dir", str(tmp_path), *TINY, "--output-dir", str(tmp_path / "out")],
        capsys,
    )
    assert code == 2 and "2 NaN/Inf values in 2 rows (first at row 10, column 2)" in err


def test_evaluate_rejects_missing_corrupt_and_mismatched_checkpoints(tmp_path, capsys, synth_run):
    out = ["--output-dir", str(tmp_path)]
    code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", str(tmp_path / "none.pth"), *out], capsys)
    assert code == 2 and "does not exist" in err

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00not a checkpoint at all")
    table = tmp_path / "new.csv"  # a data file given as the model: torch's legacy reader fails with an IndexError
    table.write_text("a,b\n1,2\n")
    array = tmp_path / "new.npy"
    np.save(array, np.zeros(3))
    for wrong in (corrupt, table, array):
        code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", str(wrong), *out], capsys)
        assert code == 2 and "\n" not in err.strip(), err
        assert f"{wrong} is not a safe checkpoint of this tool, or is damaged" in err and "_checkpoint.pth" in err
        assert "file an issue" not in err
    code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", str(synth_run / "SYNTH_last.pth"), *out],
                        capsys)  # fmt: skip
    assert code == 2 and "pass the SYNTH_checkpoint.pth that train.py wrote beside it" in err
    renamed = tmp_path / "backup.pth"  # a state under another name: no file name guessed from it
    renamed.write_bytes((synth_run / "SYNTH_last.pth").read_bytes())
    code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", str(renamed), *out], capsys)
    assert code == 2 and "pass the {DATASET}_checkpoint.pth that train.py wrote beside it" in err

    rng = np.random.default_rng(1)
    custom = tmp_path / "custom"
    custom.mkdir()
    np.save(custom / "train_data.npy", rng.normal(size=(400, 12)))
    np.save(custom / "test_data.npy", rng.normal(size=(200, 12)))
    synth_checkpoint = str(synth_run / "SYNTH_checkpoint.pth")
    args = ["--dataset", "CUSTOM", "--data-dir", str(custom), "--checkpoint", synth_checkpoint, *out]
    code, err = run_cli(evaluate, args, capsys)
    assert code == 2 and "was trained on SYNTH, not CUSTOM" in err

    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(custom), *TINY, "--output-dir", str(tmp_path)]) == 0
    custom_checkpoint = str(tmp_path / "CUSTOM_checkpoint.pth")
    evaluate_custom = ["--dataset", "CUSTOM", "--data-dir", str(custom), "--checkpoint", custom_checkpoint, *out]
    np.save(custom / "train_data.npy", rng.normal(size=(400, 5)))
    np.save(custom / "test_data.npy", rng.normal(size=(200, 5)))
    code, err = run_cli(evaluate, evaluate_custom, capsys)
    assert code == 2 and "expects 12 channels but CUSTOM data have 5" in err

    np.save(custom / "train_data.npy", rng.normal(size=(400, 12)))
    np.save(custom / "test_data.npy", rng.normal(size=(200, 12)))
    code, err = run_cli(evaluate, evaluate_custom, capsys)
    assert code == 2 and "fingerprint mismatch" in err
    assert not (tmp_path / "CUSTOM_evaluation.npz").exists()


def write_labelled_period(folder: Path, seed: int, test_rows: int, train_from: Path | None = None) -> Path:
    """A CUSTOM folder with a labelled TEST drawn from `seed`; its TRAIN a byte copy of train_from's, or drawn too."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    if train_from is None:
        np.save(folder / "train_data.npy", rng.normal(size=(400, 4)))
    else:
        shutil.copyfile(train_from / "train_data.npy", folder / "train_data.npy")
    test, labels = rng.normal(size=(test_rows, 4)), np.zeros(test_rows, dtype=np.uint8)
    test[100:120, 1] += 4.0
    labels[100:120] = 1
    np.save(folder / "test_data.npy", test)
    np.save(folder / "test_labels.npy", labels)
    return folder


@pytest.fixture(scope="module")
def custom_periods(tmp_path_factory):
    """A model trained on a CUSTOM folder, a folder with the same TRAIN and a new TEST, and one with a new TRAIN."""
    root = tmp_path_factory.mktemp("periods")
    first = write_labelled_period(root / "first", seed=0, test_rows=200)
    out = root / "out"
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(first), *TINY, "--output-dir", str(out)]) == 0
    return {
        "first": first,
        "checkpoint": out / "CUSTOM_checkpoint.pth",
        "new_test": write_labelled_period(root / "new_test", seed=1, test_rows=240, train_from=first),
        "new_train": write_labelled_period(root / "new_train", seed=2, test_rows=240),
    }


def test_a_checkpoint_of_another_entity_names_the_flags_that_load_its_data(tmp_path, capsys):
    rng = np.random.default_rng(2)
    folder = tmp_path / "plant"
    folder.mkdir()
    np.save(folder / "train_data.npy", rng.normal(size=(400, 3)))
    np.save(folder / "test_data.npy", rng.normal(size=(200, 3)))
    rows = ["entity,train_start,train_len,test_start,test_len", "east,0,200,0,100", "west,200,200,100,100"]
    (folder / "entities.csv").write_text("\n".join(rows) + "\n")
    data = ["--dataset", "CUSTOM", "--data-dir", str(folder), "--output-dir", str(tmp_path)]
    assert train.main([*data, "--entity", "east", *TINY]) == 0
    east = str(tmp_path / "CUSTOM_east_checkpoint.pth")
    code, err = run_cli(evaluate, [*data, "--entity", "west", "--checkpoint", east], capsys)
    # --dataset CUSTOM_east would be refused as an unknown dataset: the fix names both flags.
    assert code == 2 and "pass --dataset CUSTOM --entity east or the CUSTOM_west checkpoint" in err
    assert evaluate.main([*data, "--entity", "east", "--checkpoint", east]) == 0


def test_a_model_grades_a_new_test_period_beside_the_same_train_and_refuses_another_train(
    custom_periods, tmp_path, capsys
):
    shutil.copyfile(custom_periods["checkpoint"], tmp_path / "CUSTOM_checkpoint.pth")  # as a user copies it
    evaluate_on = ["--dataset", "CUSTOM", "--output-dir", str(tmp_path), "--data-dir"]
    code, err = run_cli(evaluate, [*evaluate_on, str(custom_periods["new_test"])], capsys)
    assert code == 0, err
    graded = np.load(tmp_path / "CUSTOM_evaluation.npz")
    np.testing.assert_array_equal(graded["labels"], np.load(custom_periods["new_test"] / "test_labels.npy"))
    assert json.loads((tmp_path / "CUSTOM_metrics.json").read_text())["n_points"] == 240

    code, err = run_cli(evaluate, [*evaluate_on, str(custom_periods["new_train"])], capsys)
    assert code == 2 and "\n" not in err
    assert "was trained on different CUSTOM TRAIN data (fingerprint mismatch); retrain on these data" in err


def test_a_checkpoint_without_a_train_fingerprint_loads_and_must_match_train_and_test(custom_periods, tmp_path, capsys):
    checkpoint = torch.load(custom_periods["checkpoint"], weights_only=True)
    del checkpoint["dataset"]["train_fingerprint"]  # as checkpoints were written before it
    old = tmp_path / "old_checkpoint.pth"
    torch.save(checkpoint, old)
    evaluate_on = ["--dataset", "CUSTOM", "--checkpoint", str(old), "--output-dir", str(tmp_path), "--data-dir"]
    code, err = run_cli(evaluate, [*evaluate_on, str(custom_periods["first"])], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "CUSTOM_metrics.json").read_text())["n_points"] == 200

    code, err = run_cli(evaluate, [*evaluate_on, str(custom_periods["new_test"])], capsys)
    assert code == 2 and "\n" not in err
    assert "(fingerprint mismatch) and predates matching on TRAIN alone, so a new TEST needs a retrain too" in err


def test_a_resumable_state_without_a_train_fingerprint_still_resumes_on_its_data(custom_periods, tmp_path):
    state = torch.load(custom_periods["checkpoint"].with_name("CUSTOM_last.pth"), weights_only=True)
    del state["dataset"]["train_fingerprint"]  # as resumable states were written before it
    torch.save(state, tmp_path / "CUSTOM_last.pth")
    resume = ["--resume", "--dataset", "CUSTOM", "--output-dir", str(tmp_path), "--no-progress"]
    assert train.main([*resume, "--data-dir", str(custom_periods["first"])]) == 0  # redoes the final TRAIN scoring
    assert (tmp_path / "CUSTOM_checkpoint.pth").is_file()


def test_a_test_split_shorter_than_the_window_is_named_with_the_retraining_fix(tmp_path, capsys):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "train_data.npy", rng.normal(size=(300, 3)))
    np.save(tmp_path / "test_data.npy", rng.normal(size=(12, 3)))
    np.save(tmp_path / "test_labels.npy", np.zeros(12, dtype=np.uint8))
    args = ["--dataset", "CUSTOM", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    assert train.main([*args, *TINY]) == 0  # the window of 20 fits TRAIN only
    capsys.readouterr()
    code, err = run_cli(evaluate, [*args, "--device", "cpu"], capsys)
    assert code == 2 and "\n" not in err
    assert err == ("error: TEST of CUSTOM has 12 time steps, fewer than the window of 20; retrain with a smaller "
                   "train.py --win-size, or give a longer series")  # evaluate.py has no --win-size to lower


def test_a_model_of_other_data_in_the_output_folder_is_kept_not_replaced(tmp_path, capsys):
    rng = np.random.default_rng(3)
    folders = {}
    for name, channels in (("pump", 4), ("fan", 3)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        np.save(folders[name] / "train_data.npy", rng.normal(size=(300, channels)))
        np.save(folders[name] / "test_data.npy", rng.normal(size=(150, channels)))
    out = tmp_path / "out"
    checkpoint = out / "CUSTOM_checkpoint.pth"

    def train_on(name: str) -> str:
        args = ["--dataset", "CUSTOM", "--data-dir", str(folders[name]), *TINY, "--output-dir", str(out)]
        assert train.main(args) == 0
        return capsys.readouterr().out

    train_on("pump")
    pump_model = checkpoint.read_bytes()
    said = train_on("fan")
    (kept,) = [path for path in out.glob("CUSTOM_checkpoint.*.pth")]
    assert f"the model of other CUSTOM data that was there is kept as {kept}" in said
    assert kept.read_bytes() == pump_model  # the pump model, untouched, under its data's fingerprint
    assert torch.load(checkpoint, weights_only=True)["dataset"]["n_channels"] == 3
    assert "kept as" not in train_on("fan")  # the same data again: replaced, as a retrain should
    assert {path.name for path in out.glob("CUSTOM_checkpoint*.pth")} == {"CUSTOM_checkpoint.pth", kept.name}


def test_a_new_test_period_beside_the_same_train_neither_stops_a_resume_nor_sets_the_model_aside(tmp_path, capsys):
    rng = np.random.default_rng(4)
    data, out = tmp_path / "plant", tmp_path / "out"
    data.mkdir()
    np.save(data / "train_data.npy", rng.normal(size=(300, 3)))
    np.save(data / "test_data.npy", rng.normal(size=(150, 3)))
    args = ["--dataset", "CUSTOM", "--data-dir", str(data), *TINY, "--output-dir", str(out)]
    assert train.main(args) == 0
    np.save(data / "test_data.npy", rng.normal(size=(200, 3)))  # next week's TEST
    capsys.readouterr()
    assert train.main(args) == 0  # a retrain on the same TRAIN replaces its model
    assert "kept as" not in capsys.readouterr().out and list(out.glob("CUSTOM_checkpoint.*.pth")) == []
    (out / "CUSTOM_checkpoint.pth").unlink()  # a finished run whose model was lost: the resume redoes its end
    np.save(data / "test_data.npy", rng.normal(size=(250, 3)))
    assert train.main([*args, "--resume"]) == 0
    (out / "CUSTOM_checkpoint.pth").unlink()
    np.save(data / "train_data.npy", rng.normal(size=(300, 3)))  # other TRAIN: that run cannot go on
    assert train.main([*args, "--resume"]) == 2
    assert "was trained on other data than CUSTOM here; resume is impossible" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--threshold", "train", "--alarm-rule", "budget"], "--threshold train replaces the decision rule, so --alarm-"),
    (["--protocol", "paper", "--alarm-window", "5"], "--protocol paper replaces the decision rule, so --alarm-window"),
])  # fmt: skip
def test_a_threshold_rule_with_decision_rule_flags_is_refused(synth_run, tmp_path, capsys, flags, message):
    checkpoint = str(synth_run / "SYNTH_checkpoint.pth")
    code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(tmp_path),
                                   *flags], capsys)  # fmt: skip
    assert code == 2 and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("flags", "message"), [
    (["--anomaly-ratio", "2"], "--anomaly-ratio is read only by --protocol paper, so under the decision rule"),
    (["--threshold", "pot", "--anomaly-ratio", "2"], "--anomaly-ratio is read only by --protocol paper"),
    (["--protocol", "paper", "--threshold-percentile", "95"], "--threshold-percentile is read only by the "
                                                               "decision rule or --threshold train/val, so under "
                                                               "--protocol paper"),
    (["--threshold", "fixed", "--threshold-value", "1", "--threshold-percentile", "90"], "under --threshold fixed"),
    (["--threshold-value", "3"], "--threshold-value is read only by --threshold fixed"),
    (["--threshold", "train", "--pot-risk", "0.01"], "--pot-risk is read only by --threshold pot"),
])  # fmt: skip
def test_a_setting_of_a_threshold_rule_not_in_use_is_refused_not_ignored(synth_run, tmp_path, capsys, flags, message):
    checkpoint = str(synth_run / "SYNTH_checkpoint.pth")
    code, err = run_cli(evaluate, ["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(tmp_path),
                                   *flags], capsys)  # fmt: skip
    assert code == 2 and message in err and err.startswith("error: ") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_a_paper_protocol_ratio_and_a_pot_risk_still_apply_where_their_rule_is_used(synth_run, tmp_path):
    checkpoint = str(synth_run / "SYNTH_checkpoint.pth")
    common = ["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(tmp_path), "--baselines", "none"]
    assert evaluate.main([*common, "--protocol", "paper", "--anomaly-ratio", "5"]) == 0
    results = json.loads((tmp_path / "SYNTH_metrics.json").read_text())["results"]["model"]
    assert results["threshold_rule"].startswith("95th percentile of TRAIN + TEST")
    assert evaluate.main([*common, "--threshold", "pot", "--pot-risk", "0.01"]) == 0
    results = json.loads((tmp_path / "SYNTH_metrics.json").read_text())["results"]["model"]
    assert results["threshold_rule"] == "POT on TRAIN scores, risk 0.01"


def test_custom_without_labels_scores_and_flags(tmp_path, capsys):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "train_data.npy", rng.normal(size=(400, 3)))
    np.save(tmp_path / "test_data.npy", rng.normal(size=(150, 3)))
    args = ["--dataset", "CUSTOM", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    assert train.main([*args, *TINY]) == 0
    assert evaluate.main(args) == 0
    assert "no test labels" in capsys.readouterr().out
    results = np.load(tmp_path / "CUSTOM_evaluation.npz")
    assert results["scores"].shape == (150,) and results["labels"].shape == (0,)


def test_cli_error_is_one_line_without_traceback_in_a_real_process(tmp_path):
    completed = subprocess.run(
        [sys.executable, "train.py", "--dataset", "NOPE", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error: unknown dataset 'NOPE'")
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


def test_deterministic_flag_is_stored_with_the_run(tmp_path):
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY, "--deterministic"]) == 0
    for name in ("SYNTH_checkpoint.pth", "SYNTH_last.pth"):  # --resume reads it from _last.pth
        assert torch.load(tmp_path / name, weights_only=True)["train_config"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_refused_run_leaves_no_folder_it_created_and_keeps_the_ones_that_were_there(tmp_path, capsys):
    import detect

    table = tmp_path / "rows.csv"
    table.write_text("a,b\n1,2\n")
    missing = str(tmp_path / "none.pth")
    runs = {
        "train": (train, ["--dataset", "CUSTOM", "--data-dir", str(tmp_path / "no-data"), "--output-dir"]),
        "evaluate": (evaluate, ["--dataset", "SYNTH", "--output-dir"]),
        "evaluate --per-entity": (evaluate, ["--dataset", "SYNTH", "--per-entity", "--output-dir"]),
        "detect": (detect, ["--checkpoint", missing, "--input", str(table), "--output"]),
        "detect --follow": (detect, ["--checkpoint", missing, "--input", str(table), "--follow", "--state"]),
    }
    for number, (name, (module, args)) in enumerate(runs.items()):
        target = tmp_path / f"new{number}" / "deeper" / ("out.csv" if name.startswith("detect") else "run")
        code, err = run_cli(module, [*args, str(target)], capsys)
        assert code == 2 and err.startswith("error: "), (name, err)
        assert not (tmp_path / f"new{number}").exists(), name
    there = tmp_path / "there"
    there.mkdir()
    assert run_cli(evaluate, ["--dataset", "SYNTH", "--output-dir", str(there)], capsys)[0] == 2
    assert there.is_dir() and not any(there.iterdir())


def test_the_metric_table_keeps_long_baseline_names_apart_from_each_other(synth_run, tmp_path, capsys):
    checkpoint = str(synth_run / "SYNTH_checkpoint.pth")
    names = ["sarfraz_range", "kmeans_level_series"]
    args = ["--dataset", "SYNTH", "--checkpoint", checkpoint, "--output-dir", str(tmp_path)]
    assert evaluate.main([*args, "--baselines", ",".join(names)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("metric "))
    assert header.split() == ["metric", "model", *names]  # not 'sarfraz_rangekmeans_level_series'
    row = next(line for line in lines if line.startswith("ROC-AUC"))
    assert len(row) == len(header)  # each value right-aligned under its name


def test_amp_on_a_cpu_says_it_trains_in_float32(tmp_path, capsys):
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), *TINY, "--amp", "--device", "cpu"]) == 0
    assert "note: --amp applies on CUDA only; on cpu training runs in float32" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--win-size", "50"], "--win-size is fixed when a model is trained, so evaluate.py reads it from the checkpoint; "
                           "retrain with train.py --win-size 50"),
    (["--plots", "2"], "--plots is for --per-entity (the worst and best entities)"),
])
def test_evaluate_names_the_flags_that_belong_elsewhere(tmp_path, capsys, flags, message):
    assert evaluate.main(["--dataset", "SYNTH", "--output-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
