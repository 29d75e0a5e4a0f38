"""Speed of the live stream (detect.py --follow): points per second sustained, and the latency from a
row written to the incident line it opens.

    python bench/follow_speed.py                                   # a tiny SYNTH model, trained here first
    python bench/follow_speed.py --preset fleet                     # the per-entity model's size
    python bench/follow_speed.py --checkpoint artifacts/SYNTH_checkpoint.pth

Throughput: --rows rows of SYNTH's test split piped into a real `detect.py --follow` process as fast as
it reads them, with and without --state; the clock runs from the first row written to the end of the
process, start-up excluded. Latency: the same rows written one at a time at --rate rows per second; each
incident's open line is timed from the moment its first row was written, and counted in rows (the rows
written by then after it: at most the window's fill plus the smoothing's look-ahead).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from data_factory.registry import load_synth  # noqa: E402
from tests.tiny import TINY_TRAIN_FLAGS  # noqa: E402

RULE = ["--threshold-percentile", "90"]  # enough incidents to time on SYNTH


def csv_lines(rows: int) -> list[str]:
    data = load_synth()
    test = np.tile(data.test, (rows // len(data.test) + 1, 1))[:rows]
    return [",".join(data.channel_names)] + [",".join(f"{value:.9g}" for value in row) for row in test]


def start(checkpoint: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "detect.py", "--checkpoint", str(checkpoint), "--input", "-", "--follow",
               "--device", "cpu", *RULE, *extra]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
    first = process.stderr.readline()  # the start-up line: the model is loaded
    assert first.startswith("following"), first + process.stderr.read()
    return process


def throughput(checkpoint: Path, lines: list[str], *extra: str) -> float:
    process = start(checkpoint, *extra)
    began = time.perf_counter()
    out, err = process.communicate("\n".join(lines) + "\n")
    seconds = time.perf_counter() - began
    assert process.returncode == 0, err
    return (len(lines) - 1) / seconds


def latency(checkpoint: Path, lines: list[str], rate: float) -> tuple[list[float], list[int]]:
    process = start(checkpoint)
    written: list[float] = []  # when each data row was written
    opened: list[tuple[float, int, int]] = []  # (when, start row, rows written by then)

    def read() -> None:
        for line in process.stdout:
            event = json.loads(line)
            if event["event"] == "open":
                opened.append((time.perf_counter(), event["start"], len(written)))

    reader = threading.Thread(target=read)
    reader.start()
    process.stdin.write(lines[0] + "\n")
    for line in lines[1:]:
        written.append(time.perf_counter())
        process.stdin.write(line + "\n")
        process.stdin.flush()
        time.sleep(max(0.0, written[-1] + 1 / rate - time.perf_counter()))
    process.stdin.close()
    reader.join()
    process.wait()
    seconds = [when - written[first] for when, first, _ in opened]
    rows = [count - 1 - first for _, first, count in opened]
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a SYNTH checkpoint (default: train one here)")
    parser.add_argument("--preset", default=None, help="train with this preset instead of the tests' tiny model")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0, help="rows per second for the latency run")
    parser.add_argument("--latency-rows", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(args.checkpoint) if args.checkpoint else Path(folder) / "SYNTH_checkpoint.pth"
        if args.checkpoint is None:
            flags = TINY_TRAIN_FLAGS if args.preset is None else ["--preset", args.preset, "--epochs", "1",
                                                                  "--train-stride", "50", "--no-progress"]  # fmt: skip
            with open(os.devnull, "w") as sink:
                stdout, sys.stdout = sys.stdout, sink
                try:
                    assert train.main(["--dataset", "SYNTH", "--output-dir", folder, *flags]) == 0
                finally:
                    sys.stdout = stdout
        lines = csv_lines(args.rows)
        plain = throughput(checkpoint, lines)
        saved = throughput(checkpoint, lines, "--state", str(Path(folder) / "state.json"))
        seconds, rows = latency(checkpoint, csv_lines(args.latency_rows), args.rate)
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"model: {args.checkpoint or args.preset or 'tests/tiny.py'}; OMP_NUM_THREADS={threads}")
    print(f"throughput, {args.rows} rows piped: {plain:,.0f} points/s; with --state: {saved:,.0f} points/s")
    if seconds:
        print(f"latency, {len(seconds)} incidents at {args.rate:g} rows/s: row written to its open line "
              f"median {np.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms; in rows median "
              f"{np.median(rows):.0f}, max {max(rows)}")  # fmt: skip
    else:
        print("latency: no incident opened")


if __name__ == "__main__":
    main()
