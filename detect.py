"""Score new data with a trained checkpoint: python detect.py --checkpoint CHECKPOINT --input new.csv

The input (.csv, .npy, .parquet, or - for CSV on stdin) is read in chunks of --chunk-rows rows,
normalised with the checkpoint's TRAIN statistics and scored exactly as evaluate.py scores a
test split; points above a threshold stored in the checkpoint are flagged. Memory holds one
chunk, one batch of windows and the last window, whatever the input's length.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from data_factory import UserInputError
from data_factory.atomic import atomic_path, ensure_writable_dir
from model.checkpoint import load_checkpoint, model_from_checkpoint, normalizer_from_checkpoint, scoring_from_checkpoint
from model.distributed import DistributedContext, init_distributed, shutdown_distributed
from model.scoring import PointValues, resolve_device, score_chunks, smooth_point_stream

# Drift bound, in units of the TRAIN statistics: a channel has drifted when its mean moved by more
# than MEAN_SHIFT_BOUND TRAIN standard deviations, or its standard deviation grew or shrank by more
# than SPREAD_BOUND times. On SYNTH the test split (trend plus 10 % anomalies) stays within 0.21 and
# 1.07 of those, while a sensor offset or a stuck sensor crosses them.
MEAN_SHIFT_BOUND = 0.5
SPREAD_BOUND = 2.0
NAN_POLICIES = ("fail", "fill")


class _Prepended:
    """A text stream with its first line put back: lets the CSV reader peek at stdin's header."""

    def __init__(self, head: str, stream: TextIO) -> None:
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> str:
        if not self.head:
            return self.stream.read(size)
        if size is None or size < 0:
            text, self.head = self.head + self.stream.read(), ""
            return text
        text, self.head = self.head[:size], self.head[size:]
        return text

    def __iter__(self) -> Iterator[str]:  # pandas takes only objects that look like files
        if self.head:
            head, self.head = self.head, ""
            yield head
        yield from self.stream


@dataclass
class Chunk:
    values: np.ndarray  # (n, C) float32 sensor values in the input's column order
    stamps: np.ndarray | None  # (n,) the timestamp column, as text, when the input has one


@dataclass
class InputTable:
    name: str  # for messages
    columns: list[str] | None  # sensor column names, when the input names them
    stamp_column: str | None
    chunks: Iterator[Chunk]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _frame_chunk(frame: pd.DataFrame, stamp_column: str | None, name: str, first_row: int) -> Chunk:
    stamps = frame.pop(stamp_column).astype(str).to_numpy() if stamp_column else None
    if frame.empty:  # a header without rows: pandas types its columns as text
        return Chunk(np.empty((0, frame.shape[1]), dtype=np.float32), stamps)
    non_numeric = [c for c, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if non_numeric:
        column = frame[non_numeric[0]]
        bad = (pd.to_numeric(column, errors="coerce").isna() & column.notna()).to_numpy()
        where = f" (first: {column.iloc[np.argmax(bad)]!r} in row {first_row + np.argmax(bad)})" if bad.any() else ""
        raise UserInputError(
            f"{name} has non-numeric columns {[str(c) for c in non_numeric[:5]]}{where}; keep only numeric "
            "sensor columns and a timestamp column named by --timestamp-column"
        )
    return Chunk(frame.to_numpy(dtype=np.float32), stamps)


def _csv_table(handle: TextIO, name: str, chunk_rows: int, stamp_column: str, owned: bool) -> InputTable:
    try:
        first = handle.readline()
    except UnicodeDecodeError:
        raise UserInputError(f"{name} is not a UTF-8 text CSV file") from None
    fields = next(csv.reader([first]), [])
    header = [field.strip() for field in fields] if not all(_is_number(f) for f in fields) else None
    stamp = stamp_column if header and stamp_column in header else None
    columns = [c for c in header if c != stamp] if header else None

    def chunks() -> Iterator[Chunk]:
        stream = _Prepended("" if header else first, handle)
        options = {"header": None, "chunksize": chunk_rows, "names": header, "dtype": {stamp: str} if stamp else None}
        row = 0
        try:
            for frame in pd.read_csv(stream, **options):
                yield _frame_chunk(frame, stamp, name, row)
                row += len(frame)
        except pd.errors.EmptyDataError:
            return
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise UserInputError(f"cannot read {name} as CSV: {reason}") from None
        finally:
            if owned:
                handle.close()

    return InputTable(name, columns, stamp, chunks())


def _npy_table(path: Path, chunk_rows: int) -> InputTable:
    """Reads rows straight from the file (no memory map, whose touched pages would all stay resident)."""
    handle = open(path, "rb")  # closed by the chunk generator below
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
    except ValueError as error:
        handle.close()
        raise UserInputError(f"cannot read {path} as .npy: {error}") from None
    if len(shape) not in (1, 2) or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        handle.close()
        raise UserInputError(f"{path} must hold a real (time, channels) array, got shape {shape} of {dtype}")
    rows, width = shape[0], shape[1] if len(shape) == 2 else 1
    offset = handle.tell()
    if path.stat().st_size < offset + rows * width * dtype.itemsize:
        handle.close()
        raise UserInputError(f"{path} is truncated: its header promises {rows} x {width} values; save it again")

    def chunks() -> Iterator[Chunk]:
        with handle:
            for start in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - start)
                if fortran_order and width > 1:  # column-major: each column's rows are contiguous
                    block = np.empty((n, width), dtype=dtype)
                    for column in range(width):
                        handle.seek(offset + (column * rows + start) * dtype.itemsize)
                        block[:, column] = np.fromfile(handle, dtype=dtype, count=n)
                else:
                    handle.seek(offset + start * width * dtype.itemsize)
                    block = np.fromfile(handle, dtype=dtype, count=n * width).reshape(n, width)
                yield Chunk(block.astype(np.float32), None)

    return InputTable(str(path), None, None, chunks())


def _parquet_table(path: Path, chunk_rows: int, stamp_column: str) -> InputTable:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise UserInputError(f"cannot read {path} as parquet: {error}") from None
    names = list(source.schema_arrow.names)
    stamp = stamp_column if stamp_column in names else None

    def chunks() -> Iterator[Chunk]:
        row = 0
        for batch in source.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            yield _frame_chunk(frame, stamp, str(path), row)
            row += len(frame)

    return InputTable(str(path), [n for n in names if n != stamp], stamp, chunks())


def open_input(source: str, chunk_rows: int, stamp_column: str, stdin: TextIO | None = None) -> InputTable:
    """An InputTable over a .csv, .npy or .parquet file, or CSV on stdin for '-'."""
    if source == "-":
        return _csv_table(stdin or sys.stdin, "stdin", chunk_rows, stamp_column, owned=False)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserInputError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy_table(path, chunk_rows)
    if suffix == ".parquet":
        return _parquet_table(path, chunk_rows, stamp_column)
    if suffix == ".csv":
        handle = open(path, encoding="utf-8", newline="")  # closed by the chunk generator
        return _csv_table(handle, str(path), chunk_rows, stamp_column, owned=True)
    raise UserInputError(f"input {path} has an unknown suffix {path.suffix!r}; use .csv, .npy, .parquet or - (stdin)")


def column_order(table: InputTable, width: int, expected: list[str]) -> tuple[np.ndarray | None, str]:
    """Index array that puts the input's columns in the checkpoint's order (None: keep them), and how."""
    got = len(table.columns) if table.columns is not None else width
    if got != len(expected):
        shown = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
        raise UserInputError(
            f"{table.name} has {got} sensor column{'s' * (got != 1)} but the checkpoint expects "
            f"{len(expected)} ({shown})"
        )
    if table.columns is None:
        return None, "by position (the input names no columns)"
    if table.columns == expected:
        return None, "by name"
    if sorted(table.columns) == sorted(expected):
        return np.array([table.columns.index(name) for name in expected]), "reordered by name"
    return None, "by position (the input's column names differ from the checkpoint's)"


class MissingValues:
    """The NaN policy. fail: stop at the first NaN/Inf. fill: carry each channel's last finite value
    forward; a channel with none yet takes its TRAIN mean."""

    def __init__(self, policy: str, train_mean: np.ndarray, name: str, channel_names: list[str]) -> None:
        self.policy, self.name, self.channel_names = policy, name, channel_names
        self.last = train_mean.astype(np.float32).copy()
        self.filled = 0

    def apply(self, values: np.ndarray, first_row: int) -> np.ndarray:
        bad = ~np.isfinite(values)
        if not bad.any():
            self.last = values[-1].copy() if len(values) else self.last
            return values
        if self.policy == "fail":
            row, column = (int(i[0]) for i in np.nonzero(bad))
            raise UserInputError(
                f"{self.name} has NaN/Inf values (first at row {first_row + row}, column "
                f"{self.channel_names[column]}); clean the data or pass --nan fill to carry the last value forward"
            )
        self.filled += int(bad.sum())
        values = np.vstack([self.last[None, :], values])
        frame = pd.DataFrame(np.where(np.isfinite(values), values, np.nan))
        values = frame.ffill().to_numpy(dtype=np.float32)[1:]
        self.last = values[-1].copy()
        return values


class ChannelMoments:
    """Streaming per-channel count, mean and sum of squared deviations (Chan et al.'s merge)."""

    def __init__(self, width: int) -> None:
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def update(self, values: np.ndarray) -> None:
        n = len(values)
        if not n:
            return
        mean = values.mean(axis=0, dtype=np.float64)
        m2 = ((values - mean) ** 2).sum(axis=0, dtype=np.float64)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


def drift_report(moments: ChannelMoments, train_std: np.ndarray, channel_names: list[str]) -> dict:
    """Drift of the normalised input against TRAIN (mean 0, std 1 after normalisation).

    A column constant in TRAIN is stored with std exactly 1 (see data_factory.windows.MIN_STD); its
    spread cannot shrink meaningfully, so only its mean is checked.
    """
    channels, drifted = [], []
    for index, name in enumerate(channel_names):
        shift, spread = float(moments.mean[index]), float(moments.std[index])
        moved = abs(shift) > MEAN_SHIFT_BOUND or spread > SPREAD_BOUND
        moved |= spread < 1 / SPREAD_BOUND and train_std[index] != 1.0
        channels.append({"name": name, "mean_shift_std": shift, "spread_ratio": spread, "drifted": bool(moved)})
        if moved:
            drifted.append(name)
    return {
        "bound": {"mean_shift_std": MEAN_SHIFT_BOUND, "spread_ratio": [1 / SPREAD_BOUND, SPREAD_BOUND]},
        "drifted": drifted,
        "channels": channels,
    }


def choose_threshold(checkpoint: dict, percentile: float, value: float | None) -> tuple[float, str]:
    """A --threshold value, else the stored TRAIN-score percentile."""
    if value is not None:
        if not np.isfinite(value):
            raise UserInputError(f"--threshold must be a finite number, got {value}")
        return float(value), "--threshold value"
    stored = checkpoint.get("train_scores", {}).get("percentiles", {})
    if not stored:
        raise UserInputError("the checkpoint stores no TRAIN-score percentiles; pass --threshold VALUE")
    key = str(float(percentile))
    if key not in stored:
        raise UserInputError(
            f"--threshold-percentile {percentile:g} is not stored in the checkpoint; choose one of "
            f"{', '.join(f'{float(k):g}' for k in stored)} or pass --threshold VALUE"
        )
    return float(stored[key]), f"{float(percentile):g}th percentile of TRAIN scores"


def _take(queue: deque, n: int) -> np.ndarray:
    """The next n items of a queue of arrays."""
    parts = []
    while n:
        head = queue[0]
        if len(head) <= n:
            parts.append(queue.popleft())
            n -= len(head)
        else:
            parts.append(head[:n])
            queue[0] = head[n:]
            n = 0
    return np.concatenate(parts)


def _top_sensors(errors: np.ndarray, names: list[str], k: int) -> list[str]:
    """'name:share;...' of each row's k largest squared errors, shares of the row's total."""
    shares = errors / np.maximum(errors.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    order = np.argsort(-shares, axis=1, kind="stable")[:, :k]
    return [";".join(f"{names[c]}:{shares[row, c]:.2f}" for c in order[row]) for row in range(len(errors))]


def _write_points(writer, index: np.ndarray, part: PointValues, threshold: float, names: list[str], k: int) -> int:
    """One CSV row per point: index or timestamp, score, flag, top sensors of flagged points. Returns the flag count."""
    flags = part.scores > threshold
    tops = np.full(len(flags), "", dtype=object)
    if flags.any():
        tops[flags] = _top_sensors(part.errors[flags], names, min(k, len(names)))
    scores = np.char.mod("%.9g", part.scores)  # 9 digits: a float32 score reads back exactly
    writer.writerows(zip(index.tolist(), scores.tolist(), flags.astype(int).tolist(), tops.tolist(), strict=True))
    return int(flags.sum())


def detect(
    checkpoint_path: str | Path,
    source: str,
    output: TextIO,
    *,
    threshold_percentile: float = 99.0,
    threshold: float | None = None,
    top_sensors: int = 3,
    nan_policy: str = "fail",
    timestamp_column: str = "timestamp",
    chunk_rows: int = 100_000,
    batch_size: int = 128,
    device: str = "auto",
    stdin: TextIO | None = None,
    context: DistributedContext | None = None,
) -> dict:
    """Score `source` with the checkpoint, write the per-point CSV to `output`, return the report.

    Under torchrun (`context`) every rank reads the same input and runs its share of the batches;
    each gets every score, so only rank 0 needs to keep the output.
    """
    if chunk_rows <= 0 or batch_size <= 0 or top_sensors <= 0:
        raise UserInputError("--chunk-rows, --batch-size and --top-sensors must be positive")
    if nan_policy not in NAN_POLICIES:
        raise UserInputError(f"--nan must be one of {', '.join(NAN_POLICIES)}")
    checkpoint = load_checkpoint(checkpoint_path)
    threshold_value, threshold_source = choose_threshold(checkpoint, threshold_percentile, threshold)
    trained_on = checkpoint["dataset"]
    names = list(trained_on["channel_names"])
    table = open_input(source, chunk_rows, timestamp_column, stdin)
    if timestamp_column != "timestamp" and table.columns is not None and table.stamp_column is None:
        raise UserInputError(f"{table.name} has no column {timestamp_column!r} (--timestamp-column)")
    normalizer = normalizer_from_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    model = model_from_checkpoint(checkpoint, torch_device)
    win_size = model.config.win_size
    scoring = scoring_from_checkpoint(checkpoint)  # the way its TRAIN scores, hence its thresholds, were made
    missing = MissingValues(nan_policy, normalizer.mean, table.name, names)
    moments = ChannelMoments(len(names))
    stamps: deque = deque()
    rows, columns = 0, ""

    def normalised() -> Iterator[np.ndarray]:
        nonlocal rows, columns
        order = None
        for index, chunk in enumerate(table.chunks):
            if index == 0:
                order, columns = column_order(table, chunk.values.shape[1], names)
            values = chunk.values if order is None else chunk.values[:, order]
            values = normalizer.transform(missing.apply(values, rows))
            moments.update(values)
            stamps.append(chunk.stamps if chunk.stamps is not None else np.arange(rows, rows + len(values)))
            rows += len(values)
            yield values
        if rows < win_size:
            raise UserInputError(
                f"{table.name} has {rows} rows, fewer than the model's window of {win_size}; "
                "detect needs at least one full window"
            )

    writer = csv.writer(output, lineterminator="\n")
    n_flagged = 0
    points = score_chunks(
        model, normalised(), batch_size=batch_size, device=torch_device, context=context, **scoring.model_options()
    )
    points = smooth_point_stream(points, scoring.smooth)
    for number, part in enumerate(points):
        if number == 0:  # the header waits until the first chunk passed its checks
            writer.writerow([table.stamp_column or "index", "score", "flag", "top_sensors"])
        index = _take(stamps, len(part.scores))
        n_flagged += _write_points(writer, index, part, threshold_value, names, top_sensors)

    return {
        "checkpoint": str(checkpoint_path),
        "dataset": trained_on["name"],
        "input": table.name,
        "rows": rows,
        "score_variant": scoring.variant,
        "scoring": scoring.to_dict(),
        "threshold": {"value": threshold_value, "source": threshold_source},
        "n_flagged": n_flagged,
        "flagged_share": n_flagged / rows,
        "columns": columns,
        "nan_policy": nan_policy,
        "filled_values": missing.filled,
        "drift": drift_report(moments, normalizer.std, names),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect.py", description="Score new data with a trained checkpoint and flag anomalies."
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="a checkpoint written by train.py")
    add("--input", required=True, help="a .csv, .npy or .parquet file with the training columns, or - for CSV on stdin")
    add(
        "--output",
        default="artifacts/detections.csv",
        help="per-point CSV, - for stdout (default: artifacts/detections.csv)",
    )
    add(
        "--report",
        default=None,
        help="JSON report with the drift section (default: the output path with .json; none for --output -)",
    )
    add(
        "--threshold-percentile",
        type=float,
        default=99.0,
        help="stored percentile of TRAIN scores to flag above: 90, 95, 99, 99.5 or 99.9 (default: 99)",
    )
    add("--threshold", type=float, default=None, help="flag above this score instead of a stored percentile")
    add("--top-sensors", type=int, default=3, help="sensors listed for each flagged point (default: 3)")
    add(
        "--nan",
        choices=NAN_POLICIES,
        default="fail",
        help="fail: stop at the first NaN/Inf; fill: carry each channel's last value forward, "
        "its TRAIN mean before the first one (default: fail)",
    )
    add(
        "--timestamp-column",
        default="timestamp",
        help="CSV/parquet column echoed as the first output column (default: timestamp)",
    )
    add("--chunk-rows", type=int, default=100_000, help="rows read and scored at a time (default: 100000)")
    add("--batch-size", type=int, default=128, help="scoring batch size (default: 128)")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to score (default: auto)")
    return parser


def _summary(report: dict) -> list[str]:
    lines = [
        f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} checkpoint "
        f"({report['score_variant']} score); threshold {report['threshold']['value']:.6g} = "
        f"{report['threshold']['source']}; {report['n_flagged']} points flagged ({report['flagged_share']:.2%})"
    ]
    if report["filled_values"]:
        lines.append(f"filled {report['filled_values']} NaN/Inf values (--nan fill)")
    drift = report["drift"]
    if drift["drifted"]:
        moved = [c for c in drift["channels"] if c["drifted"]]
        details = ", ".join(
            f"{c['name']} (mean {c['mean_shift_std']:+.2f} std, spread x{c['spread_ratio']:.2f})" for c in moved[:10]
        )
        lines.append(
            f"warning: drift in {len(moved)} of {len(drift['channels'])} channels beyond the bound "
            f"(|mean shift| > {MEAN_SHIFT_BOUND} TRAIN std or spread outside x{1 / SPREAD_BOUND:g}-x{SPREAD_BOUND:g}): "
            f"{details}{', ...' if len(moved) > 10 else ''}; the scores may not be trustworthy"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to_stdout = args.output == "-"
    report_path = Path(args.report) if args.report else (None if to_stdout else Path(args.output).with_suffix(".json"))
    options = {
        "threshold_percentile": args.threshold_percentile,
        "threshold": args.threshold,
        "top_sensors": args.top_sensors,
        "nan_policy": args.nan,
        "timestamp_column": args.timestamp_column,
        "chunk_rows": args.chunk_rows,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    context = init_distributed(args.device)  # under torchrun the ranks share the forward passes
    try:
        if context.enabled and "-" in (args.input, args.output):
            raise UserInputError(
                "under torchrun every rank reads --input and rank 0 writes --output: give files, not -"
            )
        # Every rank checks the folders, so a bad one stops them all before any scoring.
        for path in (None if to_stdout else Path(args.output), report_path):
            if path is not None:
                ensure_writable_dir(path.parent)
        if not context.is_main:  # score its share of the batches; rank 0 writes everything
            with open(os.devnull, "w") as sink:
                detect(args.checkpoint, args.input, sink, **options, context=context)
            return 0
        with contextlib.ExitStack() as stack:
            if to_stdout:
                output = sys.stdout
            else:
                temp = stack.enter_context(atomic_path(args.output))  # renamed into place only on success
                output = stack.enter_context(open(temp, "w", newline=""))
            report = detect(args.checkpoint, args.input, output, **options, context=context)
        if report_path is not None:
            with atomic_path(report_path) as temp:
                temp.write_text(json.dumps(report, indent=2) + "\n")
    except UserInputError as error:
        if context.is_main:  # the other ranks meet the same error; one line is enough
            print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of --output - (e.g. head) stopped early: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RuntimeError:
        if context.is_main:
            raise
        return 1  # rank 0 stopped mid-run (its own error says why): the gather has no peer left
    finally:
        shutdown_distributed()
    for line in _summary(report):
        print(line, file=sys.stderr)
    written = [p for p in (None if to_stdout else args.output, report_path) if p is not None]
    if written:
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
