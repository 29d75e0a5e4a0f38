"""The download path against a real HTTP server on 127.0.0.1: retries, caps, checksums, temp files, the lock."""

from __future__ import annotations

import hashlib
import threading

import pytest

from data_factory.download import (
    DownloadFailed,
    IntegrityError,
    RetryPolicy,
    data_lock,
    fetch,
    resolve_url,
)
from runtime.errors import UserInputError
from tests.local_http import LocalServer, refused_url

FAST = RetryPolicy(attempts=3, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=10)
BODY = bytes(range(256)) * 64  # 16 KiB
BODY_SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(scope="module")
def server():
    local = LocalServer()
    yield local
    local.close()


def only_target_or_nothing(folder, target_name=None):
    """The folder holds the target (if named) and nothing else: no temp or partial file."""
    names = sorted(path.name for path in folder.iterdir())
    assert names == ([target_name] if target_name else []), names


def test_fetch_verifies_then_renames_into_place(server, tmp_path):
    url = server.serve("/ok.bin", BODY)
    target = fetch(url, tmp_path / "ok.bin", max_bytes=1 << 20, sha256=BODY_SHA, policy=FAST)
    assert target.read_bytes() == BODY
    assert server.hits["/ok.bin"] == 1
    only_target_or_nothing(tmp_path, "ok.bin")


def test_a_500_then_a_503_are_retried_until_success(server, tmp_path, capsys):
    url = server.serve("/flaky.bin", BODY, fail_with=[500, 503])
    fetch(url, tmp_path / "flaky.bin", max_bytes=1 << 20, sha256=BODY_SHA, policy=FAST)
    assert server.hits["/flaky.bin"] == 3
    assert "HTTP 500" in capsys.readouterr().err
    only_target_or_nothing(tmp_path, "flaky.bin")


def test_a_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        fetch(server.url("/missing.bin"), tmp_path / "missing.bin", max_bytes=1 << 20, policy=FAST)
    assert server.hits["/missing.bin"] == 1
    only_target_or_nothing(tmp_path)


def test_connection_refused_gives_up_after_the_attempts(tmp_path):
    with pytest.raises(DownloadFailed, match=r"Connection refused.*after 3 attempts"):
        fetch(refused_url("/x.bin"), tmp_path / "x.bin", max_bytes=1 << 20, policy=FAST)
    only_target_or_nothing(tmp_path)


def test_a_transfer_cut_short_is_retried_and_never_kept(server, tmp_path):
    url = server.serve("/cut.bin", BODY, cut_after=len(BODY) // 2)
    with pytest.raises(DownloadFailed, match="after 3 attempts"):
        fetch(url, tmp_path / "cut.bin", max_bytes=1 << 20, policy=FAST)
    assert server.hits["/cut.bin"] == 3
    only_target_or_nothing(tmp_path)


@pytest.mark.parametrize("announce_length", [True, False])
def test_a_response_over_the_cap_is_refused(server, tmp_path, announce_length):
    url = server.serve("/huge.bin", BODY, announce_length=announce_length)
    with pytest.raises(DownloadFailed, match="cap"):
        fetch(url, tmp_path / "huge.bin", max_bytes=len(BODY) // 4, policy=FAST)
    assert server.hits["/huge.bin"] == 1  # refusing is final, not retried
    only_target_or_nothing(tmp_path)


def test_a_checksum_mismatch_names_the_file_and_keeps_nothing(server, tmp_path):
    url = server.serve("/changed.bin", BODY[:-1] + b"!")
    with pytest.raises(IntegrityError, match=r"changed\.bin .* has sha256 .*it was not kept"):
        fetch(url, tmp_path / "changed.bin", max_bytes=1 << 20, sha256=BODY_SHA, policy=FAST)
    only_target_or_nothing(tmp_path)
    good = server.serve("/changed.bin", BODY)  # the mirror is fixed: the next run succeeds
    fetch(good, tmp_path / "changed.bin", max_bytes=1 << 20, sha256=BODY_SHA, policy=FAST)
    only_target_or_nothing(tmp_path, "changed.bin")


def test_a_failing_verify_callback_keeps_nothing(server, tmp_path):
    def reject(path):
        raise UserInputError(f"{path.name} is not a table")

    url = server.serve("/table.csv", b"not,a\ntable")
    with pytest.raises(UserInputError, match="not a table"):
        fetch(url, tmp_path / "table.csv", max_bytes=1 << 20, verify=reject, policy=FAST)
    only_target_or_nothing(tmp_path)


def test_resolve_url_prefers_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("TELEMANOM_DATA_URL", raising=False)
    assert resolve_url("TELEMANOM_DATA_URL", "https://default/x") == "https://default/x"
    monkeypatch.setenv("TELEMANOM_DATA_URL", "https://mirror/x")
    assert resolve_url("TELEMANOM_DATA_URL", "https://default/x") == "https://mirror/x"
    assert resolve_url("TELEMANOM_DATA_URL", "https://default/x", {"TELEMANOM_DATA_URL": "http://flag/x"}) == (
        "http://flag/x"
    )
    monkeypatch.setenv("TELEMANOM_DATA_URL", "ftp://mirror/x")
    with pytest.raises(UserInputError, match="TELEMANOM_DATA_URL must be an http"):
        resolve_url("TELEMANOM_DATA_URL", "https://default/x")


def test_data_lock_makes_a_second_holder_wait(tmp_path, capsys):
    # flock locks belong to an open file, so two opens conflict even within one process.
    events = []
    held, release = threading.Event(), threading.Event()

    def first_holder():
        with data_lock(tmp_path, "demo"):
            events.append("first in")
            held.set()
            release.wait(timeout=30)
            events.append("first out")

    thread = threading.Thread(target=first_holder)
    thread.start()
    held.wait(timeout=30)
    threading.Timer(0.2, release.set).start()
    with data_lock(tmp_path, "demo"):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]
    assert "waiting for another process that is preparing demo" in capsys.readouterr().err
