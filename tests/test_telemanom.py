"""SMAP and MSL end to end: a real data.zip built from ../shared/data/telemanom, served on 127.0.0.1,
downloaded, verified and built by the real code, and compared with the paper's concatenated arrays."""

from __future__ import annotations

import csv
import gzip
import io
import multiprocessing
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_factory import __main__ as prepare_cli
from data_factory import download, load_dataset
from data_factory.download import IntegrityError, RetryPolicy
from data_factory.telemanom import load_telemanom
from runtime.errors import UserInputError
from tests.local_http import LocalServer, refused_url

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FAST = RetryPolicy(attempts=2, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=30)

pytestmark = pytest.mark.skipif(not (SHARED / "telemanom").is_dir(), reason="../shared/data is absent")


class Release:
    """The telemanom release as the tests serve it: data.zip bytes, the csv bytes, a few broken variants."""

    def __init__(self) -> None:
        self.members = {}  # 'data/train/A-1.npy' -> the .npy bytes, as inside data.zip
        for split in ("train", "test"):
            for path in sorted((SHARED / "telemanom" / "data" / split).glob("*.npy.gz")):
                self.members[f"data/{split}/{path.name[:-3]}"] = gzip.decompress(path.read_bytes())
        self.labels = (SHARED / "telemanom" / "labeled_anomalies.csv").read_bytes()
        self.zip = zip_of(self.members)


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release() -> Release:
    return Release()


@pytest.fixture(scope="module")
def server(release):
    local = LocalServer()
    local.serve("/data.zip", release.zip)
    local.serve("/labeled_anomalies.csv", release.labels)
    yield local
    local.close()


def urls(server, data="/data.zip", labels="/labeled_anomalies.csv") -> dict[str, str]:
    return {"TELEMANOM_DATA_URL": server.url(data), "TELEMANOM_LABELS_URL": server.url(labels)}


OFFLINE = {"TELEMANOM_DATA_URL": refused_url("/data.zip"), "TELEMANOM_LABELS_URL": refused_url("/labels.csv")}


def assert_matches_reference(dataset, name):
    reference = SHARED / name
    for ours, file in ((dataset.train, "train.npy"), (dataset.test, "test.npy")):
        expected = np.load(reference / file)
        assert ours.dtype == np.float32 and np.array_equal(ours, expected), file
    assert dataset.test_labels.dtype == np.uint8
    assert np.array_equal(dataset.test_labels, np.load(reference / "test_label.npy"))


def assert_no_partial_files(folder: Path):
    """After a failure: no temp, partial, staging or raw file; only the lock, the verified csv and complete caches."""
    leftovers = [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or "staging" in p.name]
    assert leftovers == []
    assert not (folder / "data").exists()
    for name in ("SMAP", "MSL"):
        if (folder / name).exists():
            assert (folder / name / "channels.csv").is_file()


@pytest.fixture(scope="module")
def built(server, tmp_path_factory):
    """One normal download into a fresh data folder; returns the folder, the request counts and the time."""
    folder = tmp_path_factory.mktemp("cache")
    started = time.perf_counter()
    smap = load_telemanom("SMAP", folder, urls=urls(server), policy=FAST)
    seconds = time.perf_counter() - started
    hits = dict(server.hits)
    return folder, smap, hits, seconds


def test_download_builds_the_papers_smap_and_msl_arrays_exactly(built, server):
    folder, smap, hits, _ = built
    assert hits["/data.zip"] == 1 and hits["/labeled_anomalies.csv"] == 1
    assert smap.name == "SMAP" and smap.train.shape == (135183, 25)
    assert_matches_reference(smap, "SMAP")
    msl = load_telemanom("MSL", folder, urls=urls(server), policy=FAST)
    assert server.hits["/data.zip"] == 1  # one zip built both caches
    assert_matches_reference(msl, "MSL")
    for name in ("SMAP", "MSL"):
        assert (folder / name / "channels.csv").read_bytes() == (SHARED / name / "channels.csv").read_bytes()
    assert_no_partial_files(folder)  # the raw channels were extracted to a temp folder and removed


def test_a_built_cache_loads_with_no_network(built, monkeypatch):
    folder = built[0]
    for var, url in OFFLINE.items():
        monkeypatch.setenv(var, url)
    started = time.perf_counter()
    msl = load_dataset("msl", folder)
    assert time.perf_counter() - started < 5
    assert_matches_reference(msl, "MSL")
    assert msl.target_channels == [0] and msl.channel_names[0] == "telemetry"  # what --score-channels target scores


def test_entity_is_one_channel_of_the_concatenated_arrays(built, release):
    folder = built[0]
    a1 = load_dataset("SMAP", folder, entity="A-1")
    assert a1.name == "SMAP_A-1" and a1.target_channels == [0]
    raw_train = np.load(io.BytesIO(release.members["data/train/A-1.npy"]))
    raw_test = np.load(io.BytesIO(release.members["data/test/A-1.npy"]))
    assert np.array_equal(a1.train, raw_train.astype(np.float32))
    assert np.array_equal(a1.test, raw_test.astype(np.float32))
    expected = np.zeros(len(raw_test), dtype=np.uint8)
    expected[4690 : 4774 + 1] = 1  # labeled_anomalies.csv: A-1 [[4690, 4774]]
    assert np.array_equal(a1.test_labels, expected)
    with pytest.raises(UserInputError, match="P-2 is left out of SMAP: .* lists it twice"):
        load_dataset("SMAP", folder, entity="P-2")
    with pytest.raises(UserInputError, match="M-1 is an MSL channel; use --dataset MSL --entity M-1"):
        load_dataset("SMAP", folder, entity="M-1")
    with pytest.raises(UserInputError, match="unknown MSL channel 'T-10'"):
        load_dataset("MSL", folder, entity="T-10")


def with_smap_cache(built, folder: Path) -> Path:
    """A data folder that already holds the SMAP cache, so a run extracts and builds MSL only (faster tests)."""
    shutil.copytree(built[0] / "SMAP", folder / "SMAP")
    return folder


def test_a_500_is_retried(built, server, release, tmp_path):
    with_smap_cache(built, tmp_path)
    server.serve("/flaky.zip", release.zip, fail_with=[500])
    msl = load_telemanom("MSL", tmp_path, urls=urls(server, data="/flaky.zip"), policy=FAST)
    assert server.hits["/flaky.zip"] == 2
    assert_matches_reference(msl, "MSL")


def test_no_network_gives_one_message_with_urls_commands_and_layout(tmp_path):
    with pytest.raises(UserInputError) as failure:
        load_telemanom("MSL", tmp_path, urls=OFFLINE, policy=FAST)
    message = str(failure.value)
    assert message.startswith(f"SMAP/MSL (telemanom) is not in {tmp_path}; could not download")
    assert "Connection refused" in message
    for expected in (*OFFLINE.values(), "unzip -q data.zip", "data/train/<chan>.npy", "labeled_anomalies.csv"):
        assert expected in message
    assert_no_partial_files(tmp_path)


def failure_then_good_run(server, folder, bad_urls, error, match):
    with pytest.raises(error, match=match):
        load_telemanom("MSL", folder, urls=bad_urls, policy=FAST)
    assert_no_partial_files(folder)
    assert_matches_reference(load_telemanom("MSL", folder, urls=urls(server), policy=FAST), "MSL")


def test_a_truncated_zip_is_refused_then_a_good_run_succeeds(built, server, release, tmp_path):
    with_smap_cache(built, tmp_path)
    server.serve("/truncated.zip", release.zip[: len(release.zip) // 2])
    bad = urls(server, data="/truncated.zip")
    failure_then_good_run(server, tmp_path, bad, UserInputError, r"data\.zip from .* is not a readable zip")


def test_a_channel_with_a_wrong_checksum_is_named_and_not_kept(built, server, release, tmp_path):
    with_smap_cache(built, tmp_path)
    members = dict(release.members)
    original = members["data/train/M-1.npy"]
    members["data/train/M-1.npy"] = original[:200] + bytes([original[200] ^ 0xFF]) + original[201:]  # one byte
    server.serve("/tampered.zip", zip_of(members))
    bad = urls(server, data="/tampered.zip")
    failure_then_good_run(server, tmp_path, bad, IntegrityError, r"data/train/M-1\.npy .* does not match")


def test_a_zip_slip_entry_refuses_the_whole_archive(built, server, release, tmp_path):
    with_smap_cache(built, tmp_path)
    slip = {"data/train/A-1.npy": release.members["data/train/A-1.npy"], "../evil.npy": b"x"}
    server.serve("/slip.zip", zip_of(slip))
    bad = urls(server, data="/slip.zip")
    failure_then_good_run(server, tmp_path, bad, IntegrityError, r"entry '\.\./evil\.npy' that would escape")
    assert not (tmp_path.parent / "evil.npy").exists()


def test_a_labels_file_with_a_wrong_checksum_is_not_kept(server, release, tmp_path):
    server.serve("/changed.csv", release.labels.replace(b"4690", b"4691"))
    with pytest.raises(IntegrityError, match=r"labeled_anomalies\.csv from .* has sha256"):
        load_telemanom("MSL", tmp_path, urls=urls(server, labels="/changed.csv"), policy=FAST)
    assert not (tmp_path / "labeled_anomalies.csv").exists()
    assert_no_partial_files(tmp_path)


def place_msl_by_hand(release, folder: Path):
    """Unzip the raw files as a user would: the csv and the MSL channels only."""
    (folder / "labeled_anomalies.csv").write_bytes(release.labels)
    rows = csv.DictReader(io.StringIO(release.labels.decode()))
    for chan_id in {row["chan_id"] for row in rows if row["spacecraft"] == "MSL"}:
        for split in ("train", "test"):
            member = f"data/{split}/{chan_id}.npy"
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_bytes(release.members[member])


def test_files_placed_by_hand_are_used_without_network(release, tmp_path):
    place_msl_by_hand(release, tmp_path)
    assert_matches_reference(load_telemanom("MSL", tmp_path, urls=OFFLINE, policy=FAST), "MSL")
    assert (tmp_path / "data" / "train" / "M-1.npy").is_file()  # the user's files stay


def test_a_file_placed_by_hand_with_a_wrong_checksum_is_named(release, tmp_path):
    place_msl_by_hand(release, tmp_path)
    (tmp_path / "data" / "test" / "M-6.npy").write_bytes(release.members["data/test/M-7.npy"])
    with pytest.raises(IntegrityError, match=r"data/test/M-6\.npy does not match the telemanom release"):
        load_telemanom("MSL", tmp_path, urls=OFFLINE, policy=FAST)
    assert not (tmp_path / "MSL").exists()


def test_reference_code_arrays_are_accepted_without_network(tmp_path, monkeypatch):
    for var, url in OFFLINE.items():
        monkeypatch.setenv(var, url)
    for part in ("train", "test", "test_label"):
        shutil.copy(SHARED / "MSL" / f"{part}.npy", tmp_path / f"MSL_{part}.npy")
    msl = load_dataset("MSL", tmp_path)
    assert msl.name == "MSL" and msl.target_channels == [0]
    assert_matches_reference(msl, "MSL")
    (tmp_path / "MSL_test_label.npy").unlink()
    with pytest.raises(UserInputError, match="has MSL_train.npy, MSL_test.npy but not MSL_test_label.npy"):
        load_dataset("MSL", tmp_path)


def test_prepare_prints_where_the_arrays_are(built, capsys):
    folder = built[0]
    assert prepare_cli.main(["prepare", "--dataset", "smap", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "SMAP ready: train (135183, 25), test (427617, 25), 54696 anomalous test points (12.79 %)" in out
    assert str(folder / "SMAP" / "train.npy") in out


def test_prepare_offline_exits_2_with_the_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "DEFAULT_POLICY", FAST)
    args = ["prepare", "--dataset", "MSL", "--data-dir", str(tmp_path)]
    args += ["--telemanom-data-url", OFFLINE["TELEMANOM_DATA_URL"]]
    args += ["--telemanom-labels-url", OFFLINE["TELEMANOM_LABELS_URL"]]
    assert prepare_cli.main(args) == 2
    err = capsys.readouterr().err  # progress lines ("downloading ...", retries), then the error
    message = err[err.index("error: ") :]
    assert message.startswith("error: SMAP/MSL (telemanom) is not in ") and OFFLINE["TELEMANOM_DATA_URL"] in message


def prepare_in_child(args: list[str], log: Path) -> None:
    """A forked process (it inherits the imports, so it starts at once) running the prepare command."""
    sys.stdout = sys.stderr = open(log, "w", buffering=1)  # closed when the process exits
    sys.exit(prepare_cli.main(args))


def test_two_processes_download_once_and_both_get_the_arrays(built, server, release, tmp_path):
    folder = with_smap_cache(built, tmp_path / "cache")
    gate = threading.Event()  # hold the zip until the other process is waiting on the lock
    server.serve("/gated.zip", release.zip, gate=gate)
    args = ["prepare", "--dataset", "MSL", "--data-dir", str(folder)]
    args += ["--telemanom-data-url", server.url("/gated.zip")]
    args += ["--telemanom-labels-url", server.url("/labeled_anomalies.csv")]
    logs = [tmp_path / f"run{index}.log" for index in range(2)]
    fork = multiprocessing.get_context("fork")
    processes = [fork.Process(target=prepare_in_child, args=(args, log)) for log in logs]
    for process in processes:
        process.start()  # both start together
    waiting = "waiting for another process that is preparing telemanom"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(log.exists() and waiting in log.read_text() for log in logs):
            assert all(process.is_alive() for process in processes), [log.read_text() for log in logs]
            time.sleep(0.02)
    finally:
        gate.set()
    for process in processes:
        process.join(timeout=120)
    outputs = [log.read_text() for log in logs]
    assert [process.exitcode for process in processes] == [0, 0], outputs
    assert server.hits["/gated.zip"] == 1
    assert sorted(waiting in out for out in outputs) == [False, True]  # one downloaded while the other waited
    for out in outputs:
        assert "MSL ready: train (58317, 55), test (73729, 55)" in out
    assert_matches_reference(load_telemanom("MSL", folder, urls=OFFLINE, policy=FAST), "MSL")
