"""A fleet under torchrun (2 processes, gloo on CPU) loses nothing it finished: each rank's shard is on disk
after every entity, a SIGKILLed rank or a SIGTERM to the launcher leaves them there, and --resume (with any
number of processes) keeps every finished entity and trains only the rest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from model.fleet import Fleet, ShardWriter, merge_shards, remove_shards, shard_path
from runtime.atomic import LOCK_FILE
from runtime.distributed import DistributedContext
from tests.test_fleet import write_slow_fleet

ROOT = Path(__file__).resolve().parents[1]
ENTITIES = 8
FLAGS = ["--per-entity", "--jobs", "1", "--d-model", "16", "--n-heads", "2", "--e-layers", "1", "--d-ff", "32",
         "--win-size", "20", "--epochs", "6", "--no-progress", "--device", "cpu"]  # fmt: skip


def start_torchrun(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the launcher's worker whose environment says RANK=rank."""
    for task in Path(f"/proc/{launcher.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
                return int(child)
    raise AssertionError(f"no worker of rank {rank} under the launcher")


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), process.communicate()[1][-3000:]


def finished_in_shards(bundle: Path) -> dict[str, Fleet]:
    """Each entity a shard holds, with the shard's fleet."""
    shards = [Fleet.load(path) for path in sorted(bundle.parent.glob(f"{bundle.stem}.shard-*.pth"))]
    return {name: shard for shard in shards for name in shard.detectors}


def assert_kept(before: dict[str, Fleet], after: Fleet) -> None:
    """Every entity finished before the stop is in the bundle untouched: the same weights and the same
    training wall time (a retrained entity would have its own)."""
    for name, shard in before.items():
        assert after.seconds[name] == shard.seconds[name], f"{name} was trained again"
        theirs = shard.detectors[name].model_.state_dict()
        assert all(torch.equal(after.detectors[name].model_.state_dict()[key], theirs[key]) for key in theirs)


@pytest.mark.slow
def test_a_rank_killed_mid_fleet_loses_nothing_finished_and_resume_trains_only_the_rest(tmp_path):
    data, out = write_slow_fleet(tmp_path, ENTITIES), tmp_path / "out"
    args = ["train.py", "--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *FLAGS]
    bundle = out / "CUSTOM_fleet.pth"
    launcher = start_torchrun(*args)
    wait_for(shard_path(bundle, 1), launcher)  # rank 1 has finished an entity
    wait_for(shard_path(bundle, 0), launcher)  # and rank 0 too, however late it started on a loaded machine
    os.kill(rank_pid(launcher, 1), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=240)
    assert launcher.returncode != 0
    assert "stopped by SIGTERM on rank 0" in stderr  # the launcher stopped the survivor, which saved its shard
    before = finished_in_shards(bundle)
    assert not Fleet.load(bundle).detectors  # the bundle of a torchrun fleet is written at its start and end
    assert {shard.run for shard in before.values()} == {Fleet.load(bundle).run}
    assert 2 <= len(before) < ENTITIES and not (out / LOCK_FILE).exists()

    resumed = start_torchrun(*args, "--resume")
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr[-3000:]
    fleet = Fleet.load(bundle)
    assert fleet.complete and list(fleet.detectors) == [f"e{i}" for i in range(ENTITIES)]
    assert_kept(before, fleet)
    assert f"{len(before)} already done ({len(before)} of them from the shards" in stdout
    trained = stdout.split("entities trained this run: ")[1].splitlines()[0]  # "rank 0 took 3, rank 1 took 2"
    counts = [int(part.rsplit(" ", 1)[1]) for part in trained.split(", ")]
    assert sum(counts) == ENTITIES - len(before)
    assert not list(out.glob("*.shard-*")) and not list(out.glob(".*.tmp"))
    print(f"\nkill and resume: {len(before)} of {ENTITIES} entities finished before rank 1 was SIGKILLed "
          f"({sorted(before)}); kept {len(before)}, retrained 0; resume trained {sum(counts)} ({trained})")  # fmt: skip


@pytest.mark.slow
def test_a_sigterm_to_the_launcher_keeps_every_shard_and_a_one_process_resume_completes_the_fleet(tmp_path, capsys):
    data, out = write_slow_fleet(tmp_path, ENTITIES), tmp_path / "out"
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *FLAGS]
    bundle = out / "CUSTOM_fleet.pth"
    launcher = start_torchrun("train.py", *flags)
    wait_for(shard_path(bundle, 0), launcher)
    wait_for(shard_path(bundle, 1), launcher)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=240)
    assert launcher.returncode != 0
    for rank in (0, 1):  # each rank stopped cleanly, naming its shard and how to resume
        assert f"stopped by SIGTERM on rank {rank} after it finished" in stderr
        assert f"{bundle} and its shards {shard_path(bundle, rank, '*').name}; resume with: " in stderr
    assert not re.search(rf'File "{re.escape(str(ROOT))}/(?!\.venv/)', stderr)  # the launcher's own traceback aside
    before = finished_in_shards(bundle)
    assert 2 <= len(before) < ENTITIES

    assert train.main(["--resume", *flags]) == 0  # one process finishes what two began
    fleet = Fleet.load(bundle)
    assert fleet.complete and len(fleet.detectors) == ENTITIES
    assert_kept(before, fleet)
    assert f"{len(before)} already done" in capsys.readouterr().out
    assert not list(out.glob("*.shard-*"))


def write_uneven_fleet(folder: Path) -> Path:
    """Two entities, one twenty times longer than the other."""
    lengths = {"short": 300, "long": 6_000}
    series = np.sin(np.arange(sum(lengths.values()))[:, None] / 9 + np.arange(3)).astype(np.float32)
    np.save(folder / "train_data.npy", series)
    np.save(folder / "test_data.npy", series)
    starts = np.cumsum([0, *lengths.values()])
    rows = [f"{name},{start},{n},{start},{n}" for (name, n), start in zip(lengths.items(), starts, strict=False)]
    (folder / "entities.csv").write_text("entity,train_start,train_len,test_start,test_len\n" + "\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_a_rank_that_loses_the_others_at_the_end_says_so_in_one_line_and_keeps_its_entities(tmp_path, capsys):
    data, out = write_uneven_fleet(tmp_path), tmp_path / "out"
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *FLAGS, "--epochs", "3",
             "--train-stride", "1"]  # fmt: skip
    bundle = out / "CUSTOM_fleet.pth"
    launcher = start_torchrun("train.py", *flags)
    deadline = time.monotonic() + 240
    while not (first := [rank for rank in (0, 1) if shard_path(bundle, rank).exists()]) and launcher.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    waiting = first[0]  # it trained the short entity; nothing is left, so it waits for the other at the end
    time.sleep(1)
    os.kill(rank_pid(launcher, 1 - waiting), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=240)
    ours = [line for line in stderr.splitlines() if line.startswith(("error: ", "stopped by "))]
    assert len(ours) == 1, stderr[-3000:]  # the gloo error or the launcher's SIGTERM, whichever came first
    assert f"rank {waiting} lost the other ranks" in ours[0] or "stopped by SIGTERM" in ours[0], ours[0]
    assert not re.search(rf'File "{re.escape(str(ROOT))}/(?!\.venv/)', stderr)
    before = finished_in_shards(bundle)
    assert list(before) == ["short"]
    assert train.main(["--resume", *flags]) == 0
    assert_kept(before, Fleet.load(bundle))
    print(f"\nlost ranks: {ours[0]}")


def test_shards_of_a_replaced_bundle_are_not_merged(tmp_path):
    data, out = write_slow_fleet(tmp_path, 2), tmp_path / "out"
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *FLAGS, "--epochs", "1"]
    assert train.main([*flags, "--entities", "e0"]) == 0
    bundle = out / "CUSTOM_fleet.pth"
    stale = Fleet.load(bundle)
    stale.save(shard_path(bundle, 3))  # a shard left by an earlier run ...
    assert train.main([*flags, "--entities", "e1"]) == 0  # ... whose bundle a new run then replaced
    assert train.main(["--resume", *flags, "--entities", "e1"]) == 0
    assert list(Fleet.load(bundle).detectors) == ["e1"] and not shard_path(bundle, 3).exists()


def test_a_ranks_shards_hold_a_few_entities_each_and_merge_back_whole(tmp_path):
    data, out = write_slow_fleet(tmp_path, 3), tmp_path / "out"
    flags = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), *FLAGS, "--epochs", "1"]
    assert train.main(flags) == 0
    bundle = out / "CUSTOM_fleet.pth"
    trained = Fleet.load(bundle)
    writer, growing = ShardWriter(bundle, 5, size=2), trained.without_entities()
    for name in trained.order:  # as a rank finishes them, one by one
        growing.detectors[name], growing.seconds[name] = trained.detectors[name], trained.seconds[name]
        writer(growing)
    assert [list(Fleet.load(shard_path(bundle, 5, part)).detectors) for part in (0, 1)] == [["e0", "e1"], ["e2"]]
    assert not shard_path(bundle, 5, 2).exists()  # a save rewrites the last part only
    whole = trained.without_entities()
    assert merge_shards(whole, bundle) == 3 and whole.seconds == trained.seconds
    remove_shards(bundle, 5)
    assert not list(out.glob("*.shard-*"))


def test_the_counter_hands_each_number_out_once():
    take = DistributedContext().counter("unused in one process")
    assert [take() for _ in range(4)] == [0, 1, 2, 3]
