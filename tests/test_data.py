import os

import numpy as np
import pandas as pd
import pytest

from data_factory import UserInputError, load_dataset
from data_factory.readers import FIRST_TIME_COLUMN, open_input
from data_factory.registry import load_synth
from data_factory.synthetic import ANOMALY_KINDS, SynthSpec, generate_synthetic
from data_factory.windows import (
    Normalizer,
    WindowDataset,
    scoring_starts,
    stitch_window_values,
    training_starts,
)


def test_synth_is_deterministic_for_a_seed_and_changes_with_it():
    first, again = generate_synthetic(SynthSpec(seed=5)), generate_synthetic(SynthSpec(seed=5))
    other = generate_synthetic(SynthSpec(seed=6))
    np.testing.assert_array_equal(first["test"], again["test"])
    assert first["anomalies"] == again["anomalies"]
    assert not np.array_equal(first["test"], other["test"])


def test_synth_labels_match_its_anomaly_records_and_cover_every_kind():
    data = generate_synthetic()
    rebuilt = np.zeros_like(data["test_labels"])
    for anomaly in data["anomalies"]:
        rebuilt[anomaly["start"] : anomaly["end"] + 1] = 1
        assert anomaly["channels"] and all(0 <= c < 12 for c in anomaly["channels"])
    np.testing.assert_array_equal(rebuilt, data["test_labels"])
    assert {a["kind"] for a in data["anomalies"]} == set(ANOMALY_KINDS)
    assert data["train"].shape == (10_000, 12) and data["train"].dtype == np.float32
    assert 0.03 < data["test_labels"].mean() < 0.2


def test_synth_anomalies_change_only_the_stretches_and_channels_they_record():
    data = generate_synthetic()
    expected = np.zeros(data["test"].shape, dtype=bool)
    for anomaly in data["anomalies"]:
        expected[anomaly["start"] : anomaly["end"] + 1, anomaly["channels"]] = True
    changed = data["test"] != data["test_without_anomalies"]
    assert not (changed & ~expected).any()
    for anomaly in data["anomalies"]:  # and every recorded channel really changed
        stretch = changed[anomaly["start"] : anomaly["end"] + 1]
        assert stretch[:, anomaly["channels"]].any(axis=0).all(), anomaly


def test_synth_timing_anomalies_stay_inside_the_normal_value_range():
    data = generate_synthetic()
    low, high = data["train"].min(axis=0), data["train"].max(axis=0)
    for anomaly in (a for a in data["anomalies"] if a["kind"] == "timing"):
        channel = anomaly["channels"][0]
        values = data["test"][anomaly["start"] : anomaly["end"] + 1, channel]
        assert values.min() >= low[channel] - 0.5 and values.max() <= high[channel] + 0.5


def test_normalizer_uses_train_statistics_only_and_keeps_constant_columns_finite():
    train = np.column_stack([np.arange(10.0), np.full(10, 3.0)]).astype(np.float32)
    normalizer = Normalizer.fit(train)
    np.testing.assert_allclose(normalizer.mean, [4.5, 3.0])
    np.testing.assert_allclose(normalizer.std, [np.std(np.arange(10.0)), 1.0], rtol=1e-6)
    test = np.array([[4.5, 3.0], [100.0, 5.0]], dtype=np.float32)
    np.testing.assert_allclose(normalizer.transform(test), [[0.0, 0.0], [(100 - 4.5) / normalizer.std[0], 2.0]])


def test_windows_are_views_of_the_series():
    series = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    windows = WindowDataset(series, training_starts(50, 10, stride=1), 10)
    assert len(windows) == 41
    item = windows[7]
    assert item.shape == (10, 3)
    assert item.untyped_storage().data_ptr() == windows.series.untyped_storage().data_ptr()
    np.testing.assert_array_equal(item.numpy(), series[7:17])


@pytest.mark.parametrize("length", [10, 11, 19, 20, 21, 99, 100, 101, 137])
def test_scoring_windows_cover_every_point_exactly_once_including_the_tail(length):
    win = 10
    starts = scoring_starts(length, win)
    assert starts[-1] + win == length
    positions = starts[:, None] + np.arange(win)  # the time index each window value belongs to
    np.testing.assert_array_equal(stitch_window_values(positions, length, win), np.arange(length))


def test_series_shorter_than_the_window_is_a_clear_error():
    with pytest.raises(UserInputError, match="fewer than the window of 10"):
        scoring_starts(9, 10)


def write_custom(folder, train, test, labels=None, fmt="npy"):
    for stem, array in (("train_data", train), ("test_data", test), ("test_labels", labels)):
        if array is None:
            continue
        if fmt == "npy":
            np.save(folder / f"{stem}.npy", array)
        else:
            np.savetxt(folder / f"{stem}.csv", np.atleast_2d(array.T).T, delimiter=",")


def test_custom_loads_npy_and_csv_folders(tmp_path):
    rng = np.random.default_rng(0)
    train, test, labels = rng.normal(size=(80, 3)), rng.normal(size=(60, 3)), (rng.random(60) > 0.9).astype(int)
    (tmp_path / "npy").mkdir()
    (tmp_path / "csv").mkdir()
    write_custom(tmp_path / "npy", train, test, labels)
    write_custom(tmp_path / "csv", train, test, labels, fmt="csv")
    from_npy, from_csv = load_dataset("CUSTOM", tmp_path / "npy"), load_dataset("custom", tmp_path / "csv")
    for dataset in (from_npy, from_csv):
        assert dataset.name == "CUSTOM" and dataset.train.dtype == np.float32
        np.testing.assert_allclose(dataset.test, test.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(dataset.test_labels, labels)
    assert from_npy.fingerprint() == from_csv.fingerprint()


def test_custom_reads_a_parquet_historian_export_as_its_csv(tmp_path):
    """A historian export saved as parquet, its time a column or the index (int counts, datetimes): the same
    dataset as the CSV of the same rows, times and labels included."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2026-01-01", periods=140, freq="min")
    frame = pd.DataFrame({"timestamp": times, "FI-101": rng.normal(50, 1, 140), "PT-600.PA": rng.normal(4e5, 500, 140),
                          "CNT-700": rng.poisson(20, 140)})  # fmt: skip
    labels = pd.DataFrame({"timestamp": times[80:], "label": (rng.random(60) > 0.9).astype(int)})
    for name in ("csv", "parquet"):
        (tmp_path / name).mkdir()
        labels.to_csv(tmp_path / name / "test_labels.csv", index=False)
    frame[:80].to_csv(tmp_path / "csv" / "train_data.csv", index=False)
    frame[80:].to_csv(tmp_path / "csv" / "test_data.csv", index=False)
    frame[:80].to_parquet(tmp_path / "parquet" / "train_data.parquet", index=False)
    frame[80:].set_index("timestamp").to_parquet(tmp_path / "parquet" / "test_data.parquet")
    from_csv, from_parquet = load_dataset("CUSTOM", tmp_path / "csv"), load_dataset("CUSTOM", tmp_path / "parquet")
    assert from_parquet.channel_names == ["FI-101", "PT-600.PA", "CNT-700"]
    np.testing.assert_array_equal(from_parquet.train, from_csv.train)
    np.testing.assert_array_equal(from_parquet.test, from_csv.test)
    np.testing.assert_array_equal(from_parquet.test_labels, from_csv.test_labels)
    assert from_parquet.test_stamps.tolist() == from_csv.test_stamps.tolist()
    frame[:80].to_csv(tmp_path / "parquet" / "train_data.csv", index=False)
    with pytest.raises(UserInputError, match="has both train_data.csv and train_data.parquet; keep the one"):
        load_dataset("CUSTOM", tmp_path / "parquet")


def test_custom_csv_header_names_the_channels(tmp_path):
    (tmp_path / "train_data.csv").write_text("temp,pressure\n1,2\n3,4\n5,7\n")
    (tmp_path / "test_data.csv").write_text("temp,pressure\n1,2\n")
    dataset = load_dataset("CUSTOM", tmp_path)
    assert dataset.channel_names == ["temp", "pressure"]
    assert dataset.test_labels is None


@pytest.mark.parametrize(
    ("train", "test", "labels", "message"),
    [
        (np.zeros((20, 3, 2)), np.zeros((10, 3)), None, "must be a 2-D array"),
        (np.zeros((20, 3)), np.zeros((10, 4)), None, "has 4 channels but 3 were expected"),
        (np.zeros((20, 3)), np.zeros((10, 3)), np.zeros(9), r"must have shape \(10,\)"),
        (np.zeros((20, 3)), np.zeros((10, 3)), np.full(10, 2), "only 0 \\(normal\\) and 1"),
        (np.zeros((20, 3)), np.zeros((10, 3)), np.zeros((10, 2)), "has 2 columns; keep one, the label"),
    ],
)
def test_custom_rejects_bad_shapes_with_a_clear_message(tmp_path, train, test, labels, message):
    write_custom(tmp_path, train, test, labels)
    with pytest.raises(UserInputError, match=message):
        load_dataset("CUSTOM", tmp_path)


def test_custom_reports_how_many_nan_values_and_where(tmp_path):
    train = np.zeros((30, 2))
    train[[4, 4, 9], [0, 1, 1]] = [np.nan, np.inf, np.nan]
    write_custom(tmp_path, train, np.zeros((10, 2)))
    with pytest.raises(UserInputError, match=r"3 NaN/Inf values in 2 rows \(first at row 4, column 0\)"):
        load_dataset("CUSTOM", tmp_path)


def test_custom_csv_with_nan_names_the_column_and_keeps_the_labels_in_mind(tmp_path):
    (tmp_path / "train_data.csv").write_text("supply_temp,return_temp\n1,2\n3,4\n5,7\n")
    (tmp_path / "test_data.csv").write_text("supply_temp,return_temp\n1,2\n3,\n")
    with pytest.raises(UserInputError) as error:
        load_dataset("CUSTOM", tmp_path)
    assert "test_data.csv has 1 NaN/Inf values in 1 rows (first at row 1, column return_temp)" in str(error.value)
    assert "and their labels with them" in str(error.value) and "training" not in str(error.value)


def test_custom_matches_test_columns_to_train_columns_by_their_header_names(tmp_path):
    (tmp_path / "train_data.csv").write_text("flow,temp,level\n1,10,100\n2,20,200\n3,30,300\n")
    (tmp_path / "test_data.csv").write_text("level,flow,temp\n400,4,40\n")
    assert load_dataset("CUSTOM", tmp_path).test.tolist() == [[4.0, 40.0, 400.0]]
    (tmp_path / "test_data.csv").write_text("level,flow,pressure\n400,4,40\n")
    with pytest.raises(UserInputError) as error:
        load_dataset("CUSTOM", tmp_path)
    assert "test_data.csv's columns are not train_data.csv's (missing temp; extra pressure)" in str(error.value)


def test_custom_csv_reads_a_byte_order_mark_and_a_leading_timestamp_column(tmp_path):
    bom = "\ufeff"
    (tmp_path / "train_data.csv").write_text(f"{bom}timestamp,flow,temp\n2026-01-01 00:00,1,10\n"
                                             "2026-01-01 00:01,2,20\n")  # fmt: skip
    (tmp_path / "test_data.csv").write_text("Time,flow,temp\n2026-02-01 00:00,3,30\n2026-02-01 00:01,4,40\n")
    (tmp_path / "test_labels.csv").write_text("timestamp,label\n2026-02-01 00:00,0\n2026-02-01 00:01,1\n")
    dataset = load_dataset("CUSTOM", tmp_path)
    assert dataset.channel_names == ["flow", "temp"]
    assert dataset.train.tolist() == [[1.0, 10.0], [2.0, 20.0]] and dataset.test_labels.tolist() == [0, 1]
    (tmp_path / "test_data.csv").write_text("time\n2026-02-01 00:00\n")
    with pytest.raises(UserInputError, match="test_data.csv has no column besides its time column 'time'"):
        load_dataset("CUSTOM", tmp_path)
    (tmp_path / "test_data.csv").write_text("when,flow,temp\n2026-02-01 00:00,3,30\n")
    with pytest.raises(UserInputError, match=r"non-numeric columns \['when'\].*a first column named timestamp"):
        load_dataset("CUSTOM", tmp_path)


def test_a_custom_file_with_an_entity_column_is_pointed_at_entities_csv_not_detect_flags(tmp_path):
    # One long export with a turbine column: train.py has no --timestamp-column or --entity-column, so the
    # message must name what CUSTOM reads (entities.csv), not detect.py's flags.
    (tmp_path / "train_data.csv").write_text("timestamp,turbine,power,status\n2026-01-01 00:00,WTG01,1,RUN\n"
                                             "2026-01-01 00:10,WTG01,2,RUN\n")  # fmt: skip
    (tmp_path / "test_data.csv").write_text("timestamp,turbine,power,status\n2026-02-01 00:00,WTG01,3,RUN\n")
    with pytest.raises(UserInputError) as refused:
        load_dataset("CUSTOM", tmp_path)
    message = str(refused.value)
    assert "non-numeric columns ['turbine', 'status']" in message and "entities.csv" in message
    assert "drop the turbine column" in message and "--timestamp-column" not in message
    assert "--entity-column" not in message


@pytest.mark.parametrize(
    ("text", "separator"),
    [
        ("timestamp;flow;temp\n2026-01-01 00:00;1,5;10,25\n2026-01-01 00:01;2,5;20,5\n", "';'"),
        ("flow;temp\n1,5;10,25\n2,5;20,5\n", "';'"),
        ("1,5;10,25\n2,5;20,5\n", "';'"),
        ("timestamp\tflow\ttemp\n2026-01-01 00:00\t1.5\t10.25\n", "'\\t'"),
    ],
)
def test_a_csv_saved_with_european_separators_is_refused_by_name(tmp_path, text, separator):
    # Read with commas, the header was one column (or a time column) and the decimal commas split the numbers.
    (tmp_path / "train_data.csv").write_text(text)
    (tmp_path / "test_data.csv").write_text("flow,temp\n1.5,10.25\n")
    with pytest.raises(UserInputError) as error:
        load_dataset("CUSTOM", tmp_path)
    assert f"train_data.csv separates its fields with {separator}, not commas; save it as comma-separated" in str(
        error.value
    )


def test_custom_labels_at_other_times_than_test_are_refused_not_matched_by_row(tmp_path):
    (tmp_path / "train_data.csv").write_text("timestamp,flow\n2026-01-01 00:00,1\n2026-01-01 00:01,2\n")
    (tmp_path / "test_data.csv").write_text("timestamp,flow\n2026-02-01 00:00,3\n2026-02-01 00:01,4\n")
    # The same instants written otherwise, or no time column at all: matched by row.
    (tmp_path / "test_labels.csv").write_text("timestamp,label\n2026-02-01T00:00:00,0\n2026-02-01T00:01:00,1\n")
    assert load_dataset("CUSTOM", tmp_path).test_labels.tolist() == [0, 1]
    (tmp_path / "test_labels.csv").write_text("label\n0\n1\n")
    assert load_dataset("CUSTOM", tmp_path).test_labels.tolist() == [0, 1]
    (tmp_path / "test_data.csv").write_text("timestamp,flow\n1700000000,3\n1700000060,4\n")  # epoch seconds
    (tmp_path / "test_labels.csv").write_text("timestamp,label\n1700000000.0,0\n1700000060.0,1\n")
    assert load_dataset("CUSTOM", tmp_path).test_labels.tolist() == [0, 1]
    (tmp_path / "test_data.csv").write_text("timestamp,flow\n2026-02-01 00:00,3\n2026-02-01 00:01,4\n")
    # Labels exported for a period an hour later would grade the wrong rows.
    (tmp_path / "test_labels.csv").write_text("timestamp,label\n2026-02-01 01:00,0\n2026-02-01 01:01,1\n")
    with pytest.raises(UserInputError, match="test_labels.csv's times are not test_data's: row 0 is 2026-02-01 01:00 "
                                             "there and 2026-02-01 00:00 in test_data"):  # fmt: skip
        load_dataset("CUSTOM", tmp_path)


def test_a_csv_column_without_a_name_is_refused_not_read_as_a_sensor(tmp_path):
    import pandas as pd

    # pandas' to_csv without index=False writes the row index as an unnamed first column: a counter, not a sensor.
    frame = pd.DataFrame({"flow": [1.0, 2.0, 3.0], "temp": [10.0, 20.0, 30.0]})
    frame.to_csv(tmp_path / "train_data.csv")
    frame.to_csv(tmp_path / "test_data.csv", index=False)
    with pytest.raises(UserInputError, match="train_data.csv's header leaves column 0 without a name .*index=False"):
        load_dataset("CUSTOM", tmp_path)
    (tmp_path / "train_data.csv").write_text("flow,temp,\n1,10,\n2,20,\n3,30,\n")  # a comma ending each line
    with pytest.raises(UserInputError, match="train_data.csv's header leaves column 2 without a name"):
        load_dataset("CUSTOM", tmp_path)


@pytest.mark.parametrize("name", ["PS 1/North", "..\\..\\pump"])
def test_an_entity_name_with_a_path_separator_is_refused_before_it_names_a_file(tmp_path, name):
    # Its files would be CUSTOM_PS 1/North_checkpoint.pth: a folder that does not exist, or one elsewhere.
    write_custom(tmp_path, np.zeros((30, 2)), np.zeros((10, 2)))
    (tmp_path / "entities.csv").write_text(f"entity,train_start,train_len,test_start,test_len\n{name},0,30,0,10\n")
    with pytest.raises(UserInputError) as error:
        load_dataset("CUSTOM", tmp_path, name)
    assert f"entities.csv line 2: entity name {name!r} holds" in str(error.value)
    assert "use another character" in str(error.value)


def test_custom_refuses_a_misnamed_labels_file_and_a_stem_given_twice(tmp_path):
    write_custom(tmp_path, np.zeros((30, 2)), np.zeros((10, 2)))
    np.save(tmp_path / "test_label.npy", np.zeros(10))
    with pytest.raises(UserInputError, match="has test_label.npy, but CUSTOM reads its labels from test_labels.npy"):
        load_dataset("CUSTOM", tmp_path)
    (tmp_path / "test_label.npy").rename(tmp_path / "test_labels.npy")
    assert load_dataset("CUSTOM", tmp_path).test_labels.tolist() == [0] * 10
    np.savetxt(tmp_path / "train_data.csv", np.ones((30, 2)), delimiter=",")
    with pytest.raises(UserInputError, match="has both train_data.npy and train_data.csv; keep the one"):
        load_dataset("CUSTOM", tmp_path)


def test_a_gap_in_one_entitys_rows_does_not_stop_another_entity(tmp_path):
    train = np.arange(40, dtype=float).reshape(20, 2)
    train[15, 0] = np.nan  # in b's rows
    write_custom(tmp_path, train, np.zeros((10, 2)))
    (tmp_path / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\na,0,10,0,5\n"
                                           "b,10,10,5,5\n")  # fmt: skip
    assert load_dataset("CUSTOM", tmp_path, "a").train.tolist() == train[:10].tolist()
    with pytest.raises(UserInputError) as error:
        load_dataset("CUSTOM", tmp_path, "b")
    assert "(entity b) has 1 NaN/Inf values in 1 rows (first at row 15, column 0)" in str(error.value)
    assert "dropping rows would shift the offsets in entities.csv" in str(error.value)
    with pytest.raises(UserInputError, match="has 1 NaN/Inf values.*would shift the offsets"):  # as one model reads it
        load_dataset("CUSTOM", tmp_path)


def test_custom_without_data_dir_or_files_says_what_is_missing(tmp_path):
    with pytest.raises(UserInputError, match="needs --data-dir"):
        load_dataset("CUSTOM", None)
    with pytest.raises(UserInputError, match=r"has no train_data.npy, .csv or .parquet"):
        load_dataset("CUSTOM", tmp_path)
    (tmp_path / "train_data.csv").write_text("a,b\n1,x\n")
    (tmp_path / "test_data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserInputError, match="non-numeric columns"):
        load_dataset("CUSTOM", tmp_path)


def test_unknown_datasets_and_stray_entities_are_clear_errors():
    with pytest.raises(UserInputError, match="unknown dataset 'NOPE'; choose one of SYNTH, CUSTOM"):
        load_dataset("NOPE")
    with pytest.raises(UserInputError, match="SYNTH has no entities; drop --entity A-1"):
        load_dataset("SYNTH", entity="A-1")


def test_load_synth_is_the_registered_synth():
    assert load_dataset("SYNTH").fingerprint() == load_synth().fingerprint()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
@pytest.mark.parametrize(("text", "stamp_column", "message"), [
    ("flow;temp\n1,5;2,5\n", None, "separates its fields with ';'"),
    ("time\n2026-02-01 00:00\n", FIRST_TIME_COLUMN, "has no column besides its time column 'time'"),
])
def test_a_csv_refused_on_its_first_line_leaves_no_file_open(tmp_path, text, stamp_column, message):
    path = tmp_path / "day.csv"
    path.write_text(text)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UserInputError, match=message) as error:
        open_input(str(path), 100, stamp_column)
    assert len(os.listdir("/proc/self/fd")) == before, error.traceback  # its frames still hold the handle


def test_custom_warns_where_a_time_column_repeats_or_goes_back_but_not_where_an_entity_restarts(tmp_path, capsys):
    times = [f"2026-01-01 00:{minute:02d}" for minute in range(6)]
    rows = "".join(f"{time},{index},{index * 2}\n" for index, time in enumerate(times))
    (tmp_path / "train_data.csv").write_text("time,flow,temp\n" + rows)
    shuffled = [times[0], times[1], times[3], times[2], times[4], times[5]]  # one row out of place
    (tmp_path / "test_data.csv").write_text("time,flow,temp\n" + "".join(f"{t},1,2\n" for t in shuffled))
    load_dataset("CUSTOM", tmp_path)
    err = capsys.readouterr().err
    assert "warning: test_data.csv's time goes back at row 3 (2026-01-01 00:03, then 2026-01-01 00:02)" in err
    assert "train_data.csv" not in err  # in order
    # Two entities of three rows each: each one's times restart where the next begins, by design.
    (tmp_path / "test_data.csv").write_text("time,flow,temp\n" + "".join(f"{t},1,2\n" for t in times[:3] * 2))
    (tmp_path / "train_data.csv").write_text("time,flow,temp\n" + "".join(f"{t},1,2\n" for t in times[:3] * 2))
    (tmp_path / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\n"
                                           "a,0,3,0,3\nb,3,3,3,3\n")  # fmt: skip
    load_dataset("CUSTOM", tmp_path)
    load_dataset("CUSTOM", tmp_path, "b")
    assert "warning" not in capsys.readouterr().err
    stuck = times[:3] + times[:1] * 3  # b's clock stuck
    (tmp_path / "test_data.csv").write_text("time,flow,temp\n" + "".join(f"{t},1,2\n" for t in stuck))
    load_dataset("CUSTOM", tmp_path, "b")
    assert "test_data.csv (entity b)'s time repeats at row 1" in capsys.readouterr().err
