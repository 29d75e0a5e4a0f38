"""Score new data with a saved Detector: stream a table through it, flag points above a stored
threshold, name each flagged point's top sensors, and report drift against TRAIN.

Memory holds one chunk, one batch of windows and the last window, whatever the input's length.
The scores are those evaluate.py gives the same rows (one windowing loop, one scoring).
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from data_factory.errors import UserInputError
from data_factory.missing import NAN_POLICIES, MissingValues
from data_factory.readers import column_order, open_input
from evaluation.attribution import top_sensor_text, train_error_scale
from evaluation.drift import ChannelMoments, drift_report, drift_warning
from evaluation.thresholds import stored_threshold
from model.detector import Detector
from model.distributed import DistributedContext
from model.scoring import PointValues


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


def _write_points(writer, index: np.ndarray, part: PointValues, threshold: float, names, scale, k: int) -> int:
    """One CSV row per point: index or timestamp, score, flag, top sensors of flagged points. Returns the flag count."""
    flags = part.scores > threshold
    tops = np.full(len(flags), "", dtype=object)
    if flags.any():
        tops[flags] = top_sensor_text(part.errors[flags], scale, names, min(k, len(names)))
    scores = np.char.mod("%.9g", part.scores)  # 9 digits: a float32 score reads back exactly
    writer.writerows(zip(index.tolist(), scores.tolist(), flags.astype(int).tolist(), tops.tolist(), strict=True))
    return int(flags.sum())


def detect(
    checkpoint_path: str | Path,
    source: str,
    output: TextIO,
    *,
    threshold_percentile: float | None = None,
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
    detector = Detector.load(checkpoint_path, device=device)
    threshold_value, threshold_source = stored_threshold(detector, threshold_percentile, threshold)
    names = detector.channel_names
    table = open_input(source, chunk_rows, timestamp_column, stdin)
    if timestamp_column != "timestamp" and table.columns is not None and table.stamp_column is None:
        raise UserInputError(f"{table.name} has no column {timestamp_column!r} (--timestamp-column)")
    normalizer = detector.normalizer_
    # Checkpoints from before the TRAIN error was stored rank sensors by their raw error.
    stored_error = detector.train_channel_error_
    scale = train_error_scale(stored_error) if stored_error is not None else np.ones(len(names))
    missing = MissingValues(nan_policy, normalizer.mean, table.name, names)
    moments = ChannelMoments(len(names))
    stamps: deque = deque()
    rows, columns = 0, ""

    def raw_chunks() -> Iterator[np.ndarray]:
        nonlocal rows, columns
        order = None
        for index, chunk in enumerate(table.chunks):
            if index == 0:
                order, columns = column_order(table, chunk.values.shape[1], names)
            values = missing.apply(chunk.values if order is None else chunk.values[:, order], rows)
            moments.update(normalizer.transform(values))
            stamps.append(chunk.stamps if chunk.stamps is not None else np.arange(rows, rows + len(values)))
            rows += len(values)
            yield values
        if rows < detector.win_size:
            raise UserInputError(
                f"{table.name} has {rows} rows, fewer than the model's window of {detector.win_size}; "
                "detect needs at least one full window"
            )

    writer = csv.writer(output, lineterminator="\n")
    n_flagged = 0
    for number, part in enumerate(detector.stream(raw_chunks(), batch_size=batch_size, context=context)):
        if number == 0:  # the header waits until the first chunk passed its checks
            writer.writerow([table.stamp_column or "index", "score", "flag", "top_sensors"])
        index = _take(stamps, len(part.scores))
        n_flagged += _write_points(writer, index, part, threshold_value, names, scale, top_sensors)

    return {
        "checkpoint": str(checkpoint_path),
        "dataset": detector.dataset_["name"],
        "input": table.name,
        "rows": rows,
        "score_variant": detector.scoring_.variant,
        "scoring": detector.scoring_.to_dict(),
        "threshold": {"value": threshold_value, "source": threshold_source},
        "n_flagged": n_flagged,
        "flagged_share": n_flagged / rows,
        "columns": columns,
        "nan_policy": nan_policy,
        "filled_values": missing.filled,
        "drift": drift_report(moments, normalizer.std, names),
    }


def summary_lines(report: dict) -> list[str]:
    """What detect.py prints after a run."""
    lines = [
        f"scored {report['rows']} rows of {report['input']} with the {report['dataset']} checkpoint "
        f"({report['score_variant']} score); threshold {report['threshold']['value']:.6g} = "
        f"{report['threshold']['source']}; {report['n_flagged']} points flagged ({report['flagged_share']:.2%})"
    ]
    if report["filled_values"]:
        lines.append(f"filled {report['filled_values']} NaN/Inf values (--nan fill)")
    warning = drift_warning(report["drift"])
    if warning:
        lines.append(warning)
    return lines
