"""bench/fleet.py: one model per entity, with each entity's own or the global normalisation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench.fleet import DEFAULT_ROW, SCALES, run_fleet, scorings, smd_fleet, telemanom_fleet
from data_factory.smd import MACHINES


def write_arrays(folder: Path) -> None:
    """Two entities in the concatenated layout of ../shared/data, with channels.csv; entity B is 50x louder."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    trains, tests, labels, rows = [], [], [], []
    for index, (name, scale) in enumerate((("A-1", 1.0), ("B-1", 50.0))):
        train = rng.normal(size=(240, 3)).astype(np.float32)
        test = rng.normal(size=(240, 3)).astype(np.float32)
        train[:, 0] *= scale
        test[:, 0] *= scale
        label = np.zeros(240, dtype=np.uint8)
        label[100:130] = 1
        test[100:130, 0] += 4 * scale  # a level shift on the telemetry column
        rows.append([name, index * 240, 240, index * 240, 240, int(label.sum())])
        trains.append(train), tests.append(test), labels.append(label)
    np.save(folder / "train.npy", np.concatenate(trains))
    np.save(folder / "test.npy", np.concatenate(tests))
    np.save(folder / "test_label.npy", np.concatenate(labels))
    with (folder / "channels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chan_id", "train_start", "train_len", "test_start", "test_len", "test_anomaly_points"])
        writer.writerows(rows)


def test_fleet_grades_every_scoring_and_the_normalisation_changes_the_scores(tmp_path: Path) -> None:
    write_arrays(tmp_path / "TOY")
    fleet = telemanom_fleet(tmp_path / "TOY")
    assert [entity["test_start"] for entity in fleet.entities] == [0, 240] and fleet.target == (0,)
    own = run_fleet(fleet, seed=0, normalisation="entity")
    shared = run_fleet(fleet, seed=0, normalisation="global")
    assert set(own) == {(name, scale) for name in scorings((0,)) for scale in SCALES}
    # Each entity's own scale finds both 4-sigma shifts; in global units the quiet entity's shift is
    # small beside the loud entity's normal noise, so one ranking over both entities does worse.
    assert own[DEFAULT_ROW][0] > 0.95
    assert 0.5 < shared[DEFAULT_ROW][0] < own[DEFAULT_ROW][0] - 0.1


def test_smd_fleet_is_one_model_per_machine_scoring_all_channels(tmp_path: Path) -> None:
    root = tmp_path / "ServerMachineDataset"
    rng = np.random.default_rng(1)
    for split in ("train", "test", "test_label"):
        (root / split).mkdir(parents=True)
    for number, machine in enumerate(MACHINES):
        rows = 110 + number  # machines of different lengths, so the offsets are checked
        labels = np.zeros(rows, dtype=int)
        labels[60:70] = 1
        test = rng.random((rows, 38))
        test[60:70] += 3.0
        np.savetxt(root / "train" / f"{machine}.txt", rng.random((rows, 38)), delimiter=",", fmt="%.5f")
        np.savetxt(root / "test" / f"{machine}.txt", test, delimiter=",", fmt="%.5f")
        np.savetxt(root / "test_label" / f"{machine}.txt", labels, fmt="%d")
    fleet = smd_fleet(tmp_path)
    assert len(fleet.entities) == 28 and fleet.target is None and fleet.train.shape[1] == 38
    last = fleet.entities[-1]
    assert last["chan_id"] == "machine-3-11" and last["test_start"] == sum(110 + n for n in range(27))
    assert last["test_start"] + last["test_len"] == len(fleet.test) == len(fleet.labels)
    rows = run_fleet(fleet, seed=0, normalisation="global")
    assert rows[DEFAULT_ROW][0] > 0.8  # every machine's shifted stretch stands out
    # no target channel: the "target" rows score all channels, as the all-channel rows do
    all_channels = ("reconstruction, all channels, smoothed 50", "raw")
    assert rows[DEFAULT_ROW] == rows[all_channels]
