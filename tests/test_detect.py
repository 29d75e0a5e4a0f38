"""detect.py on real files from a real tiny model: exact agreement with evaluate.py, chunking, drift, bad input."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import detect
import evaluate
import train
from data_factory.registry import load_synth
from evaluation.attribution import train_error_scale
from evaluation.report import ThresholdSettings, evaluate_checkpoint
from evaluation.thresholds import percentile_threshold
from model.alarm_rule import AlarmRule
from model.detector import Detector, stored_scoring
from model.score_settings import ScoreSettings
from model.scoring import score_chunks, score_series, score_stream, smooth_scores
from model.transformer import AnomalyTransformer, ModelConfig
from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_TRAIN_FLAGS]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny SYNTH model, the test scores evaluate.py computes for it, and the test split as .npy."""
    out = tmp_path_factory.mktemp("detect")
    assert train.main(["--dataset", "SYNTH", "--output-dir", str(out), *TINY]) == 0
    checkpoint = out / "SYNTH_checkpoint.pth"
    evaluation = evaluate_checkpoint(checkpoint, "SYNTH", baselines=(), device="cpu")  # what evaluate.py calls
    data = load_synth()
    np.save(out / "test.npy", data.test)
    return {
        "dir": out,
        "checkpoint": checkpoint,
        "data": data,
        "scores": evaluation.model.scores,
        "flags": evaluation.model.predictions,
        "stored": torch.load(checkpoint, weights_only=True),
    }


def detect_cli(run, source, folder, *extra):
    """detect.main writing detections.csv (and .json) into a fresh subfolder of `folder`."""
    output = folder / f"out{len(list(folder.glob('out*')))}" / "detections.csv"
    output.parent.mkdir()
    args = ["--checkpoint", str(run["checkpoint"]), "--input", str(source), "--output", str(output), *extra]
    code = detect.main([*args, "--device", "cpu"])
    return code, output


def test_detect_reproduces_evaluate_scores_exactly_from_npy_csv_and_parquet(run, tmp_path, capsys):
    data, reference = run["data"], run["scores"]
    csv_path = tmp_path / "test.csv"
    pd.DataFrame(data.test, columns=data.channel_names).to_csv(csv_path, index=False, float_format="%.9g")
    parquet_path = tmp_path / "test.parquet"
    frame = pd.DataFrame(data.test, columns=data.channel_names)
    frame.insert(0, "timestamp", pd.date_range("2024-01-01", periods=len(frame), freq="min"))
    frame.to_parquet(parquet_path)
    threshold = run["stored"]["train_scores"]["percentiles"]["99.0"]
    rule = AlarmRule.from_checkpoint(run["stored"]["alarm_rule"])  # the decision rule trained with the model
    assert rule.kind == "guarded" and rule.threshold == threshold
    expected_flags = rule.flags(reference)[0]
    # evaluate.py applies the rule the checkpoint stores, as detect does: it reports exactly what detect raises.
    np.testing.assert_array_equal(run["flags"], expected_flags)
    # A flagged point's top sensors: each channel's squared error over its mean TRAIN error, as shares.
    detector = Detector.load(run["checkpoint"])
    errors = detector.score_points(data.test).errors.astype(np.float64)
    relative = errors / train_error_scale(run["stored"]["train_channel_error"].numpy())
    shares = relative / relative.sum(axis=1, keepdims=True)
    for source in (run["dir"] / "test.npy", csv_path, parquet_path):
        code, output = detect_cli(run, source, tmp_path)
        assert code == 0, capsys.readouterr().err
        result = pd.read_csv(output, keep_default_na=False)
        # 9 significant digits make a float32 read back bit for bit.
        np.testing.assert_array_equal(result["score"].to_numpy(np.float32), reference)
        np.testing.assert_array_equal(result["flag"].to_numpy(), expected_flags)
        # Each point's own threshold, read back exactly: a flag is the score above it.
        np.testing.assert_array_equal(result["threshold"].to_numpy(), rule.flags(reference)[1])
        read = result["score"].to_numpy(np.float32).astype(np.float64)  # the float32 score, as the rule compares it
        np.testing.assert_array_equal(result["flag"].to_numpy(), read > result["threshold"].to_numpy())
        flagged = result[result["flag"] == 1]
        assert len(flagged) > 0 and (result.loc[result["flag"] == 0, "top_sensors"] == "").all()
        first = flagged["top_sensors"].iloc[0].split(";")
        assert len(first) == 3 and all(item.split(":")[0] in data.channel_names for item in first)
        point = int(flagged.index[0])
        top = np.argsort(-shares[point], kind="stable")[:3]
        assert first == [f"{data.channel_names[c]}:{shares[point, c]:.2f}" for c in top]
        report = json.loads(output.with_suffix(".json").read_text())
        assert report["rows"] == 10_000 and report["n_flagged"] == len(flagged)
        _, thresholds, _ = rule.flags(reference)
        assert report["threshold"] == {"value": threshold, "source": rule.describe(), "rule": "guarded",
                                       "lowest": thresholds.min(), "highest": thresholds.max()}  # fmt: skip
        assert thresholds.max() > thresholds.min() >= threshold  # the rule raises it from the TRAIN percentile
    assert result.columns[0] == "timestamp" and result["timestamp"].iloc[1] == "2024-01-01 00:01:00"
    # Read in chunks of 333 rows, the rule carries its recent scores across them: the same flags.
    code, output = detect_cli(run, run["dir"] / "test.npy", tmp_path, "--chunk-rows", "333")
    assert code == 0
    np.testing.assert_array_equal(pd.read_csv(output, keep_default_na=False)["flag"].to_numpy(), expected_flags)


@pytest.mark.parametrize("written", ["before the rule was stored", "before the guard's spread was stored"])
def test_evaluate_flags_what_detect_raises_for_a_checkpoint_of_an_older_format(run, tmp_path, written):
    stored = dict(run["stored"])
    if written == "before the rule was stored":
        del stored["alarm_rule"]
    else:
        stored["alarm_rule"] = {key: value for key, value in stored["alarm_rule"].items() if key != "train_spread"}
    older = tmp_path / "older.pth"
    torch.save(stored, older)
    evaluated = evaluate_checkpoint(older, "SYNTH", baselines=(), device="cpu").model.predictions
    code, output = detect_cli({**run, "checkpoint": older}, run["dir"] / "test.npy", tmp_path)
    assert code == 0
    np.testing.assert_array_equal(pd.read_csv(output)["flag"].to_numpy(), evaluated)


def test_evaluate_reads_a_percentile_the_checkpoint_does_not_store_from_the_train_scores(run):
    model = evaluate_checkpoint(run["checkpoint"], "SYNTH", threshold=ThresholdSettings(percentile=97.0),
                                baselines=(), device="cpu").model  # fmt: skip
    assert "97.0" not in run["stored"]["train_scores"]["percentiles"]  # detect.py refuses it; evaluate.py reads it
    assert model.threshold.value == percentile_threshold(model.train_scores, 97.0)
    stored = AlarmRule.from_checkpoint(run["stored"]["alarm_rule"])
    expected = dataclasses.replace(stored, percentile=97.0, threshold=model.threshold.value).flags(model.scores)[0]
    np.testing.assert_array_equal(model.predictions, expected)  # the stored rule otherwise: its tail and spread


def test_chunked_scoring_equals_unchunked_bit_for_bit():
    torch.manual_seed(0)
    model = AnomalyTransformer(ModelConfig(n_channels=3, win_size=20, d_model=16, n_heads=2, e_layers=2, d_ff=32))
    series = np.random.default_rng(0).normal(size=(253, 3)).astype(np.float32)  # 12 windows and a 13-step tail
    paper = ScoreSettings("paper", 50.0, None, 0)
    smoothed = ScoreSettings("paper", 50.0, None, 7)
    for batch_size in (5, 128):  # 5: the tail window shares the last batch; 128: one batch
        whole = score_series(model, series, paper, batch_size=batch_size)
        assert whole.scores.shape == (253,) and whole.errors.shape == (253, 3)
        reconstruction = score_series(model, series, ScoreSettings("reconstruction", 50.0, None, 0), batch_size=128)
        np.testing.assert_allclose(whole.errors.mean(axis=1), reconstruction.scores, rtol=1e-5)  # float32 means
        whole_smoothed = score_series(model, series, smoothed, batch_size=batch_size)
        np.testing.assert_array_equal(whole_smoothed.scores, smooth_scores(whole.scores, 7))
        np.testing.assert_array_equal(whole_smoothed.errors, whole.errors)  # smoothing leaves the errors alone
        for chunk in (1, 13, 20, 33, 300):
            pieces = [series[i : i + chunk] for i in range(0, 253, chunk)]
            parts = list(score_chunks(model, pieces, paper, batch_size=batch_size))
            np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), whole.scores)
            np.testing.assert_array_equal(np.concatenate([p.errors for p in parts]), whole.errors)
            streamed = list(score_stream(model, pieces, smoothed, batch_size=batch_size))
            np.testing.assert_array_equal(np.concatenate([p.scores for p in streamed]), whole_smoothed.scores)
            np.testing.assert_array_equal(np.concatenate([p.errors for p in streamed]), whole.errors)


def test_small_chunks_from_stdin_in_a_real_process_give_the_same_scores(run):
    data = run["data"]
    text = pd.DataFrame(data.test[:1000]).to_csv(index=False, header=False, float_format="%.9g")
    completed = subprocess.run(
        [sys.executable, "detect.py", "--checkpoint", str(run["checkpoint"]), "--input", "-", "--output", "-"]
        + ["--chunk-rows", "37", "--device", "cpu"],
        input=text,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "index,score,threshold,flag,top_sensors" and len(lines) == 1001
    scores = np.array([float(line.split(",")[1]) for line in lines[1:]], dtype=np.float32)
    model = Detector.from_checkpoint(run["stored"]).model_
    normalised = (data.test[:1000] - run["stored"]["normalization"]["mean"].numpy()) / run["stored"]["normalization"][
        "std"
    ].numpy()
    scoring = stored_scoring(run["stored"])
    assert scoring.smooth > 1  # the default scoring smooths: the stream must line scores up across chunks
    unsmoothed = replace(scoring, smooth=0)
    expected = score_series(model, normalised.astype(np.float32), unsmoothed, batch_size=128).scores
    np.testing.assert_array_equal(scores, smooth_scores(expected, scoring.smooth))
    assert "scored 1000 rows of stdin" in completed.stderr


def test_columns_are_matched_by_name_and_timestamps_echoed(run, tmp_path):
    data = run["data"]
    frame = pd.DataFrame(data.test[:500], columns=data.channel_names)
    frame = frame[list(reversed(data.channel_names))]
    frame.insert(0, "when", [f"t{i}" for i in range(500)])
    source = tmp_path / "reordered.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    code, output = detect_cli(run, source, tmp_path, "--timestamp-column", "when")
    assert code == 0
    result = pd.read_csv(output, keep_default_na=False)
    assert result["when"].tolist() == [f"t{i}" for i in range(500)]
    plain = tmp_path / "plain.npy"
    np.save(plain, data.test[:500])
    code, plain_output = detect_cli(run, plain, tmp_path)
    np.testing.assert_array_equal(pd.read_csv(plain_output)["score"], result["score"])
    assert json.loads(output.with_suffix(".json").read_text())["columns"] == "reordered by name"


def test_a_first_column_named_as_times_is_read_as_times_as_custom_reads_it(run, tmp_path):
    data = run["data"]
    frame = pd.DataFrame(data.test[:300], columns=data.channel_names)
    frame.insert(0, "Time", [f"2026-01-01 {i // 60:02d}:{i % 60:02d}" for i in range(300)])
    source = tmp_path / "timed.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    code, output = detect_cli(run, source, tmp_path)  # no --timestamp-column: the default finds no "timestamp"
    assert code == 0
    result = pd.read_csv(output, keep_default_na=False)
    assert result.columns[0] == "Time" and result["Time"].tolist() == frame["Time"].tolist()


def test_a_parquet_saved_with_its_time_index_is_read_with_its_times(run, tmp_path):
    """df.set_index("timestamp").to_parquet(): pandas stores the index as a column that it reads back as the
    index; it is the time column, and pandas' unnamed row index (after a filter) is no sensor."""
    data = run["data"]
    frame = pd.DataFrame(data.test[:300], columns=data.channel_names)
    frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=300, freq="min"))
    plain, indexed, filtered = tmp_path / "plain.parquet", tmp_path / "indexed.parquet", tmp_path / "filtered.parquet"
    frame.to_parquet(plain, index=False)
    frame.set_index("timestamp").to_parquet(indexed)
    frame.set_index(pd.Index(np.arange(300) * 7)).to_parquet(filtered)  # not a range: stored as __index_level_0__
    code, expected = detect_cli(run, plain, tmp_path)
    assert code == 0
    expected = pd.read_csv(expected, keep_default_na=False)
    for source in (indexed, filtered):
        code, output = detect_cli(run, source, tmp_path)
        assert code == 0
        pd.testing.assert_frame_equal(pd.read_csv(output, keep_default_na=False), expected)


@pytest.mark.parametrize("chunk_rows", ["100", "1000"])
def test_times_that_go_back_or_repeat_are_warned_of_as_custom_warns(run, tmp_path, capsys, chunk_rows):
    """Rows are scored in file order: a historian export with a repeated block or rows out of order gives windows
    that join points out of time order, which CUSTOM warns of and detect.py must too (across chunks as well)."""
    data = run["data"]
    times = pd.date_range("2026-01-01", periods=400, freq="min").astype(str).tolist()
    frame = pd.DataFrame(data.test[:400], columns=data.channel_names)
    frame.insert(0, "timestamp", times)
    source = tmp_path / "ordered.csv"
    frame.to_csv(source, index=False, float_format="%.9g")
    code, output = detect_cli(run, source, tmp_path, "--chunk-rows", chunk_rows)
    assert code == 0 and "'s time" not in capsys.readouterr().err
    assert json.loads(output.with_suffix(".json").read_text())["time_order"] is None
    cases = (
        (times[:100] + times[90:390], "goes back at row 100"),
        (times[:250] + times[249:399], "repeats at row 250"),
    )
    for stamps, how in cases:
        frame["timestamp"] = stamps
        frame.to_csv(source, index=False, float_format="%.9g")
        code, output = detect_cli(run, source, tmp_path, "--chunk-rows", chunk_rows)
        err = capsys.readouterr().err
        assert code == 0
        row = int(how.split()[-1])
        line = f"warning: {source}'s time {how} ({stamps[row - 1]}, then {stamps[row]})"
        assert line in err
        assert json.loads(output.with_suffix(".json").read_text())["time_order"].startswith(line)


def test_columns_named_otherwise_are_taken_in_order_with_a_warning(run, tmp_path, capsys):
    data = run["data"]
    names = [f"gauge_{i}" for i in range(data.n_channels)]
    source = tmp_path / "renamed.csv"
    pd.DataFrame(data.test[:500], columns=names).to_csv(source, index=False, float_format="%.9g")
    code, output = detect_cli(run, source, tmp_path)
    err = capsys.readouterr().err
    assert code == 0
    assert ("warning: columns matched by position: the input's column names are not the checkpoint's (missing "
            f"{', '.join(data.channel_names[:4])}, ...; extra gauge_0, gauge_1, gauge_2, gauge_3, ...)") in err
    plain = tmp_path / "plain.npy"
    np.save(plain, data.test[:500])
    code, plain_output = detect_cli(run, plain, tmp_path)
    assert code == 0 and "warning: columns" not in capsys.readouterr().err  # no names: nothing to mismatch
    np.testing.assert_array_equal(pd.read_csv(plain_output)["score"], pd.read_csv(output)["score"])


def test_drift_warning_fires_on_shifted_data_and_stays_quiet_on_train_like_data(run, tmp_path, capsys):
    data = run["data"]
    code, output = detect_cli(run, run["dir"] / "test.npy", tmp_path)
    assert code == 0 and "warning:" not in capsys.readouterr().err
    assert json.loads(output.with_suffix(".json").read_text())["drift"]["drifted"] == []

    std = data.train.std(axis=0)
    shifted = data.test.copy()
    shifted[:, 3] += 1.0 * std[3]  # an offset sensor: mean moves by 1 TRAIN std
    shifted[:, 7] = shifted[0, 7]  # a stuck sensor: its spread collapses
    np.save(tmp_path / "shifted.npy", shifted)
    code, output = detect_cli(run, tmp_path / "shifted.npy", tmp_path)
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: drift in 2 of 12 channels" in err and "sensor_03" in err and "sensor_07" in err
    drift = json.loads(output.with_suffix(".json").read_text())["drift"]
    assert drift["drifted"] == ["sensor_03", "sensor_07"]
    assert drift["bound"] == {"mean_shift_std": 0.5, "spread_ratio": [0.5, 2.0]}
    channel_3 = drift["channels"][3]
    assert channel_3["mean_shift_std"] == pytest.approx(
        1.0 + (data.test[:, 3].mean() - data.train[:, 3].mean()) / std[3]
    )


def test_drift_warning_names_the_farthest_drifted_channels_first(run, tmp_path, capsys):
    """A pressure tag exported in kPa instead of Pa, the last column, among eleven mildly moved ones: the warning
    shows ten channels, so in column order it hid the one whose units changed."""
    data = run["data"]
    std = data.train.std(axis=0)
    shifted = data.test + 1.0 * std  # every channel a little off (after a shutdown, say)
    shifted[:, 11] = data.test[:, 11] + 30 * std[11]  # one far off (its units changed: Pa read as kPa)
    np.save(tmp_path / "units.npy", shifted)
    code, output = detect_cli(run, tmp_path / "units.npy", tmp_path)
    (line,) = drift_lines(capsys.readouterr().err)
    assert code == 0 and "warning: drift in 12 of 12 channels" in line
    drift = json.loads(output.with_suffix(".json").read_text())["drift"]
    assert drift["drifted"] == data.channel_names  # the report keeps the column order
    farthest = max(drift["channels"], key=lambda c: abs(c["mean_shift_std"]))
    assert farthest["name"] == "sensor_11"
    assert line.split("the farthest first: ")[1].startswith(f"sensor_11 (mean {farthest['mean_shift_std']:+.2f} std")


def drift_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning: drift" in line]


def test_evaluate_warns_of_drift_in_test_with_the_line_detect_prints_for_the_same_rows(run, tmp_path, capsys):
    data = run["data"]
    quiet = ["--dataset", "SYNTH", "--checkpoint", str(run["checkpoint"]), "--output-dir", str(tmp_path / "synth")]
    assert evaluate.main([*quiet, "--baselines", "none", "--device", "cpu"]) == 0
    assert drift_lines(capsys.readouterr().err) == []  # SYNTH's own TEST stays within the bound

    shifted = data.test.copy()
    shifted[:, 3] += 1.0 * data.train[:, 3].std()  # an offset sensor
    shifted[:, 7] = shifted[0, 7]  # a stuck sensor
    folder = tmp_path / "custom"
    folder.mkdir()
    np.save(folder / "train_data.npy", data.train)
    np.save(folder / "test_data.npy", shifted)
    np.save(folder / "test_labels.npy", data.test_labels)
    args = ["--dataset", "CUSTOM", "--data-dir", str(folder), "--output-dir", str(folder / "out")]
    assert train.main([*args, *TINY]) == 0
    capsys.readouterr()
    assert evaluate.main([*args, "--baselines", "none", "--device", "cpu"]) == 0
    evaluated = drift_lines(capsys.readouterr().err)
    assert len(evaluated) == 1 and "warning: drift in 2 of 12 channels" in evaluated[0]
    written = json.loads((folder / "out" / "CUSTOM_metrics.json").read_text())["drift"]
    assert written["drifted"] == ["ch3", "ch7"]  # a CUSTOM .npy names its channels by position
    np.save(folder / "shifted.npy", shifted)
    assert detect.main(["--checkpoint", str(folder / "out" / "CUSTOM_checkpoint.pth"), "--input",
                        str(folder / "shifted.npy"), "--output", str(folder / "detections.csv"),
                        "--device", "cpu"]) == 0  # fmt: skip
    assert drift_lines(capsys.readouterr().err) == evaluated


def test_nan_fill_carries_the_last_value_forward(run, tmp_path, capsys):
    data = run["data"]
    holes = data.test[:400].copy()
    holes[[0, 1], 2] = np.nan  # before any value: the TRAIN mean
    holes[[50, 51, 52], 5] = np.nan
    holes[300, 0] = np.inf
    np.save(tmp_path / "holes.npy", holes)
    code, output = detect_cli(run, tmp_path / "holes.npy", tmp_path, "--nan", "fill", "--chunk-rows", "51")
    assert code == 0
    filled = holes.copy()
    filled[[0, 1], 2] = data.train[:, 2].mean()
    filled[[50, 51, 52], 5] = holes[49, 5]
    filled[300, 0] = holes[299, 0]
    np.save(tmp_path / "filled.npy", filled)
    code, expected = detect_cli(run, tmp_path / "filled.npy", tmp_path)
    np.testing.assert_allclose(pd.read_csv(output)["score"], pd.read_csv(expected)["score"], rtol=1e-5, atol=1e-7)
    assert json.loads(output.with_suffix(".json").read_text())["filled_values"] == 6
    assert "filled 6 NaN/Inf values" in capsys.readouterr().err


def test_nan_fill_names_the_channels_it_filled_and_a_dead_one(run, tmp_path, capsys):
    """A tag with no reading in the whole export is scored as its TRAIN mean throughout: the count of filled
    values alone did not say which sensor the model was blind to."""
    data = run["data"]
    holes = data.test[:300].copy()
    holes[:, 4] = np.nan  # a dead tag
    holes[[10, 11], 9] = np.nan
    np.save(tmp_path / "dead.npy", holes)
    code, output = detect_cli(run, tmp_path / "dead.npy", tmp_path, "--nan", "fill", "--chunk-rows", "64")
    assert code == 0
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["filled_values"] == 302 and report["filled_channels"] == {"sensor_04": 300, "sensor_09": 2}
    assert ("filled 302 NaN/Inf values (--nan fill): sensor_04 300 of 300 rows (every row: scored as its TRAIN "
            "mean), sensor_09 2 of 300 rows") in capsys.readouterr().err  # fmt: skip


ROW = ",".join(["1"] * 12) + "\n"
RETRAIN = "retrain with a smaller train.py --win-size, or give a longer series"  # detect.py has no --win-size


def bad_input(kind: str, data, folder: Path) -> tuple[Path, list[str], str]:
    """(input file, extra flags, expected message) of each kind of bad input."""
    if kind == "channel count":
        np.save(folder / "x.npy", data.test[:200, :5])
        return folder / "x.npy", [], "has 5 sensor columns but the checkpoint expects 12 (sensor_00, sensor_01"
    if kind == "named channel count":
        (folder / "x.csv").write_text("a,b\n" + "1,2\n" * 30)
        return folder / "x.csv", [], "has 2 sensor columns but the checkpoint expects 12"
    if kind == "extra column":
        (folder / "x.csv").write_text(",".join([*data.channel_names, "spare"]) + "\n" + ("1," * 12 + "2\n") * 30)
        return folder / "x.csv", [], "the checkpoint expects 12 (sensor_00, sensor_01, sensor_02, sensor_03, " \
            "sensor_04, sensor_05, sensor_06, sensor_07, ...); extra spare"
    if kind == "time column":
        # A time column after the sensors: only a first one is read as times without the flag.
        (folder / "x.csv").write_text(",".join([*data.channel_names, "time"]) + "\n" + ("1," * 12 + "2\n") * 30)
        return folder / "x.csv", [], "extra time (if time holds times: --timestamp-column time)"
    if kind == "non-numeric":
        bad = "1,1,oops" + ",1" * 9 + "\n"
        (folder / "x.csv").write_text(",".join(data.channel_names) + "\n" + ROW * 5 + bad + ROW * 30)
        return folder / "x.csv", [], "has non-numeric columns ['sensor_02'] (first: 'oops' in row 5)"
    if kind == "nan":
        (folder / "x.csv").write_text(ROW * 7 + "1,,1" + ",1" * 9 + "\n" + ROW * 30)
        return (
            folder / "x.csv",
            [],
            "has NaN/Inf values (first at row 7, column sensor_01); clean the data or pass --nan fill",
        )
    if kind == "short":
        np.save(folder / "x.npy", data.test[:10])
        return folder / "x.npy", [], f"{folder / 'x.npy'} has 10 time steps, fewer than the window of 20; {RETRAIN}"
    if kind == "header only":
        (folder / "x.csv").write_text(",".join(data.channel_names) + "\n")
        return folder / "x.csv", [], f"{folder / 'x.csv'} has 0 time steps, fewer than the window of 20; {RETRAIN}"
    if kind == "truncated":
        np.save(folder / "x.npy", data.test[:100])
        (folder / "x.npy").write_bytes((folder / "x.npy").read_bytes()[:2000])
        return folder / "x.npy", [], "is truncated: its header promises 100 x 12 values"
    if kind == "missing":
        return folder / "missing.csv", [], "does not exist"
    if kind == "suffix":
        (folder / "x.xlsx").write_text("1")
        return folder / "x.xlsx", [], "unknown suffix '.xlsx'"
    np.save(folder / "x.npy", data.test[:100])  # a percentile the checkpoint does not store
    message = "--threshold-percentile 97 is not stored in the checkpoint; choose one of 90, 95, 99, 99.5, 99.9"
    return folder / "x.npy", ["--threshold-percentile", "97"], message


@pytest.mark.parametrize(
    "kind",
    [
        "channel count",
        "named channel count",
        "extra column",
        "time column",
        "non-numeric",
        "nan",
        "short",
        "header only",
        "truncated",
        "missing",
        "suffix",
        "percentile",
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(run, tmp_path, capsys, kind):
    source, extra, message = bad_input(kind, run["data"], tmp_path)
    code, output = detect_cli(run, source, tmp_path, *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not output.exists() and not output.with_suffix(".json").exists()


def test_a_fixed_threshold_with_rule_flags_is_refused_not_half_applied(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", run["data"].test[:300])
    code, output = detect_cli(run, tmp_path / "x.npy", tmp_path, "--threshold", "0.5", "--alarm-window", "200")
    err = capsys.readouterr().err
    assert code == 2 and "--threshold VALUE flags above one fixed value, so --alarm-window would be ignored" in err
    assert not output.exists()


def test_threshold_value_overrides_the_stored_percentile(run, tmp_path):
    np.save(tmp_path / "x.npy", run["data"].test[:1000])
    code, output = detect_cli(run, tmp_path / "x.npy", tmp_path, "--threshold", "0.5")
    result = pd.read_csv(output)
    assert code == 0 and (result["flag"] == (result["score"] > 0.5)).all()
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["threshold"] == {"value": 0.5, "source": "--threshold value", "rule": "train", "lowest": 0.5,
                                   "highest": 0.5}  # fmt: skip
