"""SMD and PSM: small files in the exact original formats, loaded (and downloaded) through the real code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_factory import load_dataset
from data_factory.download import RetryPolicy
from data_factory.psm import load_psm
from data_factory.smd import MACHINES, load_smd
from runtime.errors import UserInputError
from tests.local_http import LocalServer, refused_url

FAST = RetryPolicy(attempts=2, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=10)
N_TRAIN, N_TEST, N_DIMS = 30, 40, 38
# interpretation_label lines of machine-1-1: "start-end:dims", 0-based start, exclusive end, 1-based dims
INTERPRETATION = "5-9:1,9,10\n20-21:38\n"


def smd_files(machine_number: int) -> dict[str, str]:
    """The four text files of one machine, in OmniAnomaly's format; values encode (machine, split, row, dim)."""
    rows = {"train": N_TRAIN, "test": N_TEST}
    files = {}
    for split, count in rows.items():
        base = machine_number * 1000 + (500 if split == "test" else 0)
        values = (base + np.arange(count)[:, None] + np.arange(N_DIMS)[None, :] / 100) / 1e5
        files[split] = "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in values)
    labels = np.zeros(N_TEST, dtype=int)
    labels[5:9] = 1
    labels[20] = 1
    files["test_label"] = "".join(f"{label}\n" for label in labels)
    files["interpretation_label"] = INTERPRETATION
    return files


def write_smd(root: Path, machines=MACHINES) -> None:
    for machine in machines:
        for split, text in smd_files(MACHINES.index(machine)).items():
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / f"{machine}.txt").write_text(text)


@pytest.fixture(scope="module")
def server():
    local = LocalServer()
    for number, machine in enumerate(MACHINES):
        for split, text in smd_files(number).items():
            local.serve(f"/smd/{split}/{machine}.txt", text.encode())
    local.serve("/psm/train.csv", PSM_TRAIN.encode())
    local.serve("/psm/test.csv", PSM_TEST.encode())
    local.serve("/psm/test_label.csv", PSM_LABELS.encode())
    yield local
    local.close()


def test_smd_is_the_28_machines_concatenated_in_machine_order(tmp_path):
    write_smd(tmp_path / "ServerMachineDataset")
    smd = load_dataset("SMD", tmp_path)
    assert smd.name == "SMD" and smd.train.shape == (28 * N_TRAIN, N_DIMS) and smd.test.shape == (28 * N_TEST, N_DIMS)
    assert smd.channel_names[0] == "dim_01" and smd.channel_names[-1] == "dim_38"
    order = [int(round(smd.train[i * N_TRAIN, 0] * 1e5)) // 1000 for i in range(28)]
    assert order == list(range(28))  # machine-3-10 and 3-11 come after 3-9, not after 3-1
    assert MACHINES[-3:] == ("machine-3-9", "machine-3-10", "machine-3-11")
    assert smd.train.dtype == np.float32 and smd.test_labels.dtype == np.uint8
    assert int(smd.test_labels.sum()) == 28 * 5
    last = 27 * N_TEST  # the last machine's segments are shifted to its place in the concatenated test series
    assert smd.anomalies[-2:] == [
        {"kind": "interpretation", "start": last + 5, "end": last + 8, "channels": [0, 8, 9]},
        {"kind": "interpretation", "start": last + 20, "end": last + 20, "channels": [37]},
    ]
    for segment in smd.anomalies:  # every segment lies on labelled points
        assert smd.test_labels[segment["start"] : segment["end"] + 1].all()


def test_smd_entity_is_one_machine_and_data_dir_may_be_the_dataset_folder(tmp_path):
    write_smd(tmp_path, machines=["machine-1-1"])  # --data-dir points at ServerMachineDataset itself
    one = load_dataset("SMD", tmp_path, entity="machine-1-1")
    assert one.name == "SMD_machine-1-1" and one.train.shape == (N_TRAIN, N_DIMS) and one.test.shape == (N_TEST, 38)
    assert one.anomalies[0] == {"kind": "interpretation", "start": 5, "end": 8, "channels": [0, 8, 9]}
    assert np.array_equal(np.flatnonzero(one.test_labels), [5, 6, 7, 8, 20])
    with pytest.raises(UserInputError, match="unknown SMD machine 'machine-4-1'"):
        load_dataset("SMD", tmp_path, entity="machine-4-1")


def test_smd_without_interpretation_labels_loads_offline(tmp_path):
    write_smd(tmp_path / "ServerMachineDataset", machines=["machine-2-1"])
    (tmp_path / "ServerMachineDataset" / "interpretation_label" / "machine-2-1.txt").unlink()
    urls = {"SMD_BASE_URL": refused_url("/smd")}
    one = load_smd(tmp_path, "machine-2-1", urls=urls, policy=FAST)
    assert one.anomalies == [] and int(one.test_labels.sum()) == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("5-9:0,2", r"dims must lie in 1\.\.38"),
        ("35-41:1", "range 35-41 is empty or beyond the 40 test steps"),
        ("5:1", "expected 'start-end"),
    ],
)
def test_smd_bad_interpretation_lines_name_the_file_and_line(tmp_path, line, message):
    root = tmp_path / "ServerMachineDataset"
    write_smd(root, machines=["machine-1-1"])
    (root / "interpretation_label" / "machine-1-1.txt").write_text(f"20-21:38\n{line}\n")
    with pytest.raises(UserInputError, match=rf"machine-1-1\.txt:2: {message}"):
        load_dataset("SMD", tmp_path, entity="machine-1-1")


def test_smd_downloads_the_missing_files_from_the_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SMD_BASE_URL", server.url("/smd"))
    write_smd(tmp_path / "hand" / "ServerMachineDataset")
    downloaded = load_smd(tmp_path / "cache", policy=FAST)
    by_hand = load_smd(tmp_path / "hand", policy=FAST)
    assert downloaded.fingerprint() == by_hand.fingerprint() and downloaded.anomalies == by_hand.anomalies
    assert np.array_equal(downloaded.test_labels, by_hand.test_labels)
    assert server.hits["/smd/train/machine-3-11.txt"] == 1
    load_smd(tmp_path / "cache", policy=FAST)
    assert server.hits["/smd/train/machine-3-11.txt"] == 1  # the second load reads the files on disk


def test_smd_offline_message_says_what_to_fetch(tmp_path):
    with pytest.raises(UserInputError) as failure:
        load_smd(tmp_path, "machine-1-1", urls={"SMD_BASE_URL": refused_url("/smd")}, policy=FAST)
    message = str(failure.value)
    assert "SMD machine-1-1 is not in" in message and "Connection refused" in message
    assert "The folder holds" not in message  # it holds no machine
    assert "git clone --depth 1 https://github.com/NetManAIOps/OmniAnomaly.git" in message
    assert "ServerMachineDataset/{train,test,test_label,interpretation_label}/machine-G-I.txt" in message
    assert [p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_smd_offline_with_some_machines_names_the_ones_it_can_use_now(tmp_path):
    write_smd(tmp_path / "ServerMachineDataset", machines=["machine-1-3", "machine-2-1"])
    urls = {"SMD_BASE_URL": refused_url("/smd")}
    for entity, what in [(None, "SMD (all 28 machines) is not in"), ("machine-1-1", "SMD machine-1-1 is not in")]:
        with pytest.raises(UserInputError) as failure:
            load_smd(tmp_path, entity, urls=urls, policy=FAST)
        message = str(failure.value)
        assert message.startswith(what)
        hint = "The folder holds 2 of the 28 machines (machine-1-3, machine-2-1): use --entity NAME or --per-entity"
        assert message.endswith(f"{hint} for them")
    assert load_smd(tmp_path, "machine-2-1", urls=urls, policy=FAST).name == "SMD_machine-2-1"  # as it says


def test_smd_reference_arrays_are_accepted(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "SMD_train.npy", rng.normal(size=(50, 38)).astype(np.float32))
    np.save(tmp_path / "SMD_test.npy", rng.normal(size=(60, 38)).astype(np.float32))
    np.save(tmp_path / "SMD_test_label.npy", (np.arange(60) % 7 == 0).astype(np.float64))
    smd = load_dataset("SMD", tmp_path)
    assert smd.name == "SMD" and smd.test.shape == (60, 38) and int(smd.test_labels.sum()) == 9


FEATURES = ",".join(f"feature_{index}" for index in range(25))
# train.csv as in RANSynCoders: a timestamp column, then 25 features; some cells are empty (missing)
PSM_TRAIN_ROWS = [
    "0.0,," + ",".join(["0.5"] * 24),  # feature_0 missing in the first row: nothing before it, so 0
    "1.0,0.25," + ",".join(["0.6"] * 23) + ",",  # feature_24 missing: 0.5 carried forward
    "2.0,," + ",".join(["0.7"] * 24),  # feature_0 missing: 0.25 carried forward
    *(f"{t}.0," + ",".join(["0.1"] * 25) for t in range(3, 12)),
]
PSM_TRAIN = f"timestamp_(min),{FEATURES}\n" + "\n".join(PSM_TRAIN_ROWS) + "\n"
PSM_TEST = f"timestamp_(min),{FEATURES}\n" + "".join(
    f"{t}.0," + ",".join([f"{t / 100:.2f}"] * 25) + "\n" for t in range(12, 32)
)
PSM_LABELS = "timestamp_(min),label\n" + "".join(f"{t}.0,{int(20 <= t < 24)}\n" for t in range(12, 32))


def write_psm(folder: Path, train=PSM_TRAIN, test=PSM_TEST, labels=PSM_LABELS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(train)
    (folder / "test.csv").write_text(test)
    (folder / "test_label.csv").write_text(labels)


def test_psm_fills_missing_values_forward_then_with_zero_and_says_how_many(tmp_path, capsys):
    write_psm(tmp_path / "PSM")
    psm = load_dataset("PSM", tmp_path)
    assert psm.name == "PSM" and psm.train.shape == (12, 25) and psm.test.shape == (20, 25)
    assert psm.channel_names == [f"feature_{index}" for index in range(25)]
    assert psm.train[:3, 0].tolist() == [0.0, 0.25, 0.25]  # 0 where nothing came before, then carried forward
    assert psm.train[1, 24] == np.float32(0.5)
    assert np.array_equal(np.flatnonzero(psm.test_labels), [8, 9, 10, 11])
    assert "PSM: filled 3 missing values in" in capsys.readouterr().err


def test_psm_files_directly_in_data_dir_and_errors(tmp_path):
    write_psm(tmp_path)
    assert load_psm(tmp_path).test.shape == (20, 25)
    with pytest.raises(UserInputError, match="PSM has no entities; drop --entity x"):
        load_dataset("PSM", tmp_path, entity="x")
    write_psm(tmp_path, labels=PSM_LABELS.replace("12.0,", "99.0,"))
    with pytest.raises(UserInputError, match="do not share the same timestamps"):
        load_psm(tmp_path)
    write_psm(tmp_path, test=PSM_TEST.replace("0.12", "high", 1))
    with pytest.raises(UserInputError, match=r"test\.csv must hold numeric columns"):
        load_psm(tmp_path)


def test_psm_downloads_from_the_base_url_then_loads_offline(server, tmp_path):
    psm = load_psm(tmp_path, urls={"PSM_BASE_URL": server.url("/psm/")}, policy=FAST)
    assert psm.train.shape == (12, 25) and server.hits["/psm/train.csv"] == 1
    assert sorted(p.name for p in (tmp_path / "PSM").iterdir()) == ["test.csv", "test_label.csv", "train.csv"]
    offline = load_psm(tmp_path, urls={"PSM_BASE_URL": refused_url("/psm")}, policy=FAST)
    assert offline.fingerprint() == psm.fingerprint()


def test_psm_offline_message_lists_the_files(tmp_path):
    with pytest.raises(UserInputError) as failure:
        load_psm(tmp_path, urls={"PSM_BASE_URL": refused_url("/psm")}, policy=FAST)
    message = str(failure.value)
    assert "PSM is not in" in message and "/psm/test_label.csv" in message and "PSM/train.csv" in message
