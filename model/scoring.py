"""The one windowing loop: score a normalised series with a trained model, every point once, from
non-overlapping windows; then, optionally, smooth the per-point scores with a centred moving average.

TRAIN, TEST and streamed input all go through `score_chunks`, so their scores are made alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from data_factory.errors import UserInputError
from data_factory.windows import check_long_enough
from model.allocator import keep_freed_memory
from model.config import check_device_available
from model.distributed import DistributedContext
from model.score_settings import ScoreSettings
from model.scores import SCORES, WindowOutputs
from model.transformer import AnomalyTransformer


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA, then Apple MPS, then CPU; a device this machine lacks is a UserInputError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device_available(name)
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name!r} is not a device; use auto, cpu, cuda or mps") from None


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: bfloat16 where the GPU has it, else float16."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


class PointValues(NamedTuple):
    """Per-point outputs of consecutive points of a series."""

    scores: np.ndarray  # (n,) anomaly scores
    errors: np.ndarray  # (n, C) squared reconstruction error of each channel


@torch.no_grad()
def score_chunks(
    model: AnomalyTransformer,
    chunks: Iterable[np.ndarray],
    settings: ScoreSettings,
    *,
    batch_size: int,
    device: torch.device | None = None,
    context: DistributedContext | None = None,
) -> Iterator[PointValues]:
    """Score a normalised series that arrives as consecutive (n_i, C) chunks; yield unsmoothed PointValues in order.

    The windows are non-overlapping from the start, with one last window aligned to the end, taken
    in batches of batch_size in order, whatever the chunk sizes: the scores are bit-identical for
    any chunking, while memory holds only one chunk, one batch per rank and the last window.

    With a torchrun `context` (every rank passing the same chunks), the batches are dealt round-robin:
    of each N consecutive batches rank r runs the r-th, and all ranks gather all N and yield them in
    order. Each batch is the single process's batch, so with the same thread count the result is
    bit-identical to one process (the kernels' reduction order depends on the batch shape and the
    threads), while each rank runs 1/N of the forward passes.
    """
    keep_freed_memory()  # each batch's tensors reuse the last batch's pages (model/allocator.py)
    device = device or next(model.parameters()).device
    context = context or DistributedContext()
    score = SCORES[settings.variant]
    win_size = model.config.win_size
    model.eval()
    pending: np.ndarray | None = None  # rows not yet inside a full window
    last_window: np.ndarray | None = None  # the latest full window: the tail window may reach back into it
    batch: list[np.ndarray] = []
    ready: list[tuple[list[np.ndarray], int | None]] = []  # full batches waiting for one per rank
    seen = 0

    def run(windows: list[np.ndarray], keep_last: int | None = None) -> PointValues:
        inputs = torch.from_numpy(np.stack(windows)).to(device)
        # float32: the stored thresholds were made the same way
        reconstruction, per_layer = model(inputs, associations=score.needs_associations)
        outputs = WindowOutputs(inputs, reconstruction, per_layer)
        scores = score.compute(outputs, settings.channels, settings.temperature)
        errors = ((reconstruction.float() - inputs.float()) ** 2).cpu().numpy()
        scores = scores.float().cpu().numpy()
        if keep_last is None:
            return PointValues(scores.reshape(-1), errors.reshape(-1, errors.shape[-1]))
        # The tail window contributes only the points the regular windows did not reach.
        head_scores, head_errors = scores[:-1].reshape(-1), errors[:-1].reshape(-1, errors.shape[-1])
        return PointValues(
            np.concatenate([head_scores, scores[-1, win_size - keep_last :]]),
            np.concatenate([head_errors, errors[-1, win_size - keep_last :]]),
        )

    def flush() -> Iterator[PointValues]:
        if not context.enabled:
            yield from (run(*job) for job in ready)
        else:
            mine = run(*ready[context.rank]) if context.rank < len(ready) else None
            gathered: list[PointValues | None] = [None] * context.world_size
            dist.all_gather_object(gathered, mine)
            yield from (PointValues(*part) for part in gathered[: len(ready)])
        ready.clear()

    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        seen += len(chunk)
        pending = chunk if pending is None else np.concatenate([pending, chunk])
        n_full = len(pending) // win_size
        for index in range(n_full):
            last_window = pending[index * win_size : (index + 1) * win_size]
            batch.append(last_window)
            if len(batch) == batch_size:
                ready.append((batch, None))
                batch = []
                if len(ready) == context.world_size:
                    yield from flush()
        pending = pending[n_full * win_size :].copy()  # a copy, so the consumed chunk can be freed
    check_long_enough(seen, win_size, "the series")
    remainder = 0 if pending is None else len(pending)
    if remainder:
        batch.append(np.concatenate([last_window[remainder:], pending]))
    if batch:
        ready.append((batch, remainder or None))
    if ready:
        yield from flush()


class CentredSmoother:
    """Centred moving average of span k over a series that arrives in chunks.

    Point i becomes the mean of the points i - k//2 ... i + k - k//2 - 1 that exist. Each window
    sum is taken over exactly the same values (zero-padded at the two ends of the series) whatever
    the chunking, so the streamed result is bit-identical to smoothing the whole series at once.
    Output lags input by k - k//2 - 1 points; finish() returns the rest.
    """

    def __init__(self, span: int) -> None:
        self.span = max(int(span), 1)
        self.left = self.span // 2
        self.right = self.span - self.left - 1  # points after i inside its window
        self.buffer = np.zeros(self.left)  # the zero padding before the first point
        self.emitted = 0  # points already returned
        self.seen = 0

    def _emit(self, count: int) -> np.ndarray:
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        views = np.lib.stride_tricks.sliding_window_view(self.buffer[: count + self.span - 1], self.span)
        positions = np.arange(self.emitted, self.emitted + count)
        real = np.minimum(positions + self.right, self.seen - 1) - np.maximum(positions - self.left, 0) + 1
        out = (views.sum(axis=1) / real).astype(np.float32)  # scores are float32 everywhere
        self.buffer = self.buffer[count:]
        self.emitted += count
        return out

    def push(self, values: np.ndarray) -> np.ndarray:
        if self.span == 1:
            self.seen += len(values)
            self.emitted += len(values)
            return np.asarray(values, dtype=np.float32)
        values = np.asarray(values, dtype=np.float64)
        self.buffer = np.concatenate([self.buffer, values])
        self.seen += len(values)
        return self._emit(self.seen - self.right - self.emitted)

    def finish(self) -> np.ndarray:
        if self.span == 1:
            return np.zeros(0, dtype=np.float32)
        self.buffer = np.concatenate([self.buffer, np.zeros(self.right)])
        return self._emit(self.seen - self.emitted)


def smooth_scores(scores: np.ndarray, span: int) -> np.ndarray:
    """Centred moving average of span `span` (0 or 1: unchanged), as CentredSmoother streams it."""
    if span <= 1:
        return np.asarray(scores)
    smoother = CentredSmoother(span)
    return np.concatenate([smoother.push(scores), smoother.finish()])


def smooth_point_stream(parts: Iterable[PointValues], span: int) -> Iterator[PointValues]:
    """score_chunks's output with smooth_scores applied to the scores; each point keeps its own errors."""
    if span <= 1:
        yield from parts
        return
    smoother = CentredSmoother(span)
    held: np.ndarray | None = None  # errors of points whose smoothed score is not out yet
    for part in parts:
        held = part.errors if held is None else np.concatenate([held, part.errors])
        scores = smoother.push(part.scores)
        if len(scores):
            yield PointValues(scores, held[: len(scores)])
            held = held[len(scores) :]
    scores = smoother.finish()
    if len(scores):
        yield PointValues(scores, held)


def score_stream(
    model: AnomalyTransformer,
    chunks: Iterable[np.ndarray],
    settings: ScoreSettings,
    *,
    batch_size: int,
    device: torch.device | None = None,
    context: DistributedContext | None = None,
) -> Iterator[PointValues]:
    """score_chunks's PointValues with the scores smoothed as `settings` say."""
    points = score_chunks(model, chunks, settings, batch_size=batch_size, device=device, context=context)
    return smooth_point_stream(points, settings.smooth)


def score_series(
    model: AnomalyTransformer,
    series: np.ndarray,
    settings: ScoreSettings,
    *,
    batch_size: int,
    device: torch.device | None = None,
    context: DistributedContext | None = None,
) -> PointValues:
    """Scores (N,), smoothed as `settings` say, and per-channel squared errors (N, C) of a normalised series;
    with a torchrun `context` the forward passes are shared out over the ranks (see score_chunks)."""
    parts = list(
        score_stream(model, [series], settings, batch_size=batch_size, device=device, context=context)
    )
    return PointValues(np.concatenate([p.scores for p in parts]), np.concatenate([p.errors for p in parts]))
