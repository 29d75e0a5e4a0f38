"""The one windowing loop: score a normalised series with a trained model, every point once, from
non-overlapping windows; then, optionally, smooth the per-point scores with a centred moving average.

TRAIN, TEST and streamed input all go through `WindowScorer` (`score_chunks` pulls, a live stream
pushes), so their scores are made alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from data_factory.records import decode_array, encode_array
from data_factory.windows import SCORING_FIX, check_long_enough
from model.config import check_device_available
from model.score_settings import ScoreSettings
from model.scores import SCORES, WindowOutputs
from model.transformer import AnomalyTransformer
from runtime.allocator import keep_freed_memory
from runtime.distributed import DistributedContext
from runtime.errors import UserInputError


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


class WindowScorer:
    """The windowing loop, push-style: push(rows) scores every batch of windows the rows complete and
    returns those points (unsmoothed); finish() scores the last batch and the tail window.

    The windows are non-overlapping from the start, with one last window aligned to the end, taken in
    batches of batch_size in order, whatever the rows pushed at a time: the scores are bit-identical
    for any chunking, while memory holds only the rows not yet in a window, one batch per rank and the
    last window. With batch_size 1 a window is scored as soon as its last row arrives (detect.py --follow).

    With a torchrun `context` (every rank pushing the same rows), the batches are dealt round-robin: of
    each N consecutive batches rank r runs the r-th, and all ranks gather all N and return them in order.
    Each batch is the single process's batch, so with the same thread count the result is bit-identical
    to one process (the kernels' reduction order depends on the batch shape and the threads), while each
    rank runs 1/N of the forward passes.
    """

    def __init__(
        self,
        model: AnomalyTransformer,
        settings: ScoreSettings,
        *,
        batch_size: int,
        device: torch.device | None = None,
        context: DistributedContext | None = None,
    ) -> None:
        keep_freed_memory()  # each batch's tensors reuse the last batch's pages (runtime/allocator.py)
        self.model = model.eval()
        self.device = device or next(model.parameters()).device
        self.context = context or DistributedContext()
        self.settings, self.batch_size = settings, batch_size
        self.win_size = model.config.win_size
        self.pending = np.zeros((0, model.config.n_channels), dtype=np.float32)  # rows not yet inside a full window
        self.last_window: np.ndarray | None = None  # the latest full window: the tail window may reach back into it
        self.batch: list[np.ndarray] = []
        self.ready: list[tuple[list[np.ndarray], int | None]] = []  # full batches waiting for one per rank
        self.seen = 0

    @torch.no_grad()
    def _run(self, windows: list[np.ndarray], keep_last: int | None = None) -> PointValues:
        score = SCORES[self.settings.score]
        inputs = torch.from_numpy(np.stack(windows)).to(self.device)
        # float32: the stored thresholds were made the same way
        reconstruction, per_layer = self.model(inputs, associations=score.needs_associations)
        outputs = WindowOutputs(inputs, reconstruction, per_layer)
        scores = score.compute(outputs, self.settings.channels, self.settings.temperature)
        errors = ((reconstruction.float() - inputs.float()) ** 2).cpu().numpy()
        scores = scores.float().cpu().numpy()
        if keep_last is None:
            return PointValues(scores.reshape(-1), errors.reshape(-1, errors.shape[-1]))
        # The tail window contributes only the points the regular windows did not reach.
        head_scores, head_errors = scores[:-1].reshape(-1), errors[:-1].reshape(-1, errors.shape[-1])
        keep = self.win_size - keep_last
        return PointValues(np.concatenate([head_scores, scores[-1, keep:]]),
                           np.concatenate([head_errors, errors[-1, keep:]]))  # fmt: skip

    def _flush(self) -> Iterator[PointValues]:
        if not self.context.enabled:
            yield from (self._run(*job) for job in self.ready)
        else:
            rank = self.context.rank
            mine = self._run(*self.ready[rank]) if rank < len(self.ready) else None
            gathered: list[PointValues | None] = [None] * self.context.world_size
            dist.all_gather_object(gathered, mine)
            yield from (PointValues(*part) for part in gathered[: len(self.ready)])
        self.ready.clear()

    def batches(self, rows: np.ndarray) -> Iterator[PointValues]:
        """push, one PointValues per batch of windows scored."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.seen += len(rows)
        pending = np.concatenate([self.pending, rows]) if len(self.pending) else rows
        n_full = len(pending) // self.win_size
        for index in range(n_full):
            self.last_window = pending[index * self.win_size : (index + 1) * self.win_size]
            self.batch.append(self.last_window)
            if len(self.batch) == self.batch_size:
                self.ready.append((self.batch, None))
                self.batch = []
                if len(self.ready) == self.context.world_size:
                    yield from self._flush()
        self.pending = pending[n_full * self.win_size :].copy()  # a copy, so the pushed rows can be freed

    def finish_batches(self) -> Iterator[PointValues]:
        """finish, one PointValues per batch of windows scored."""
        check_long_enough(self.seen, self.win_size, "the series", SCORING_FIX)
        remainder = len(self.pending)
        if remainder:
            self.batch.append(np.concatenate([self.last_window[remainder:], self.pending]))
            self.pending = self.pending[:0]
        if self.batch:
            self.ready.append((self.batch, remainder or None))
            self.batch = []
        if self.ready:
            yield from self._flush()

    def push(self, rows: np.ndarray) -> PointValues:
        """The points of every window that the (n, C) rows complete, in order (none while a window fills)."""
        return _joined(list(self.batches(rows)), self.pending.shape[1])

    def finish(self) -> PointValues:
        """The rest: the unfinished batch and a last window aligned to the end of the series."""
        return _joined(list(self.finish_batches()), self.pending.shape[1])

    def to_dict(self) -> dict:
        """What a restart needs (one process only: batches waiting for other ranks are not kept)."""
        return {"pending": encode_array(self.pending), "seen": self.seen,
                "last_window": None if self.last_window is None else encode_array(self.last_window),
                "batch": [encode_array(window) for window in self.batch]}  # fmt: skip

    def restore(self, record: dict) -> WindowScorer:
        self.pending, self.seen = decode_array(record["pending"]), int(record["seen"])
        self.last_window = None if record["last_window"] is None else decode_array(record["last_window"])
        self.batch = [decode_array(window) for window in record["batch"]]
        return self


def _joined(parts: list[PointValues], n_channels: int) -> PointValues:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return PointValues(np.zeros(0, dtype=np.float32), np.zeros((0, n_channels), dtype=np.float32))
    return PointValues(np.concatenate([p.scores for p in parts]), np.concatenate([p.errors for p in parts]))


def score_chunks(
    model: AnomalyTransformer,
    chunks: Iterable[np.ndarray],
    settings: ScoreSettings,
    *,
    batch_size: int,
    device: torch.device | None = None,
    context: DistributedContext | None = None,
) -> Iterator[PointValues]:
    """Score a normalised series that arrives as consecutive (n_i, C) chunks; yield unsmoothed PointValues
    in order, one per batch of windows (WindowScorer over the chunks)."""
    scorer = WindowScorer(model, settings, batch_size=batch_size, device=device, context=context)
    for chunk in chunks:
        yield from scorer.batches(chunk)
    yield from scorer.finish_batches()


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

    def to_dict(self) -> dict:
        return {"buffer": encode_array(self.buffer), "emitted": self.emitted, "seen": self.seen}

    def restore(self, record: dict) -> CentredSmoother:
        self.buffer = decode_array(record["buffer"])
        self.emitted, self.seen = int(record["emitted"]), int(record["seen"])
        return self


def smooth_scores(scores: np.ndarray, span: int) -> np.ndarray:
    """Centred moving average of span `span` (0 or 1: unchanged), as CentredSmoother streams it."""
    if span <= 1:
        return np.asarray(scores)
    smoother = CentredSmoother(span)
    return np.concatenate([smoother.push(scores), smoother.finish()])


class PointSmoother:
    """smooth_point_stream push-style: push(points) returns the points whose smoothed score is known, each
    with its own errors; finish() the rest. Output lags input by span - span//2 - 1 points."""

    def __init__(self, span: int, n_channels: int) -> None:
        self.smoother = CentredSmoother(span) if span > 1 else None
        self.held = np.zeros((0, n_channels), dtype=np.float32)  # errors of points whose smoothed score is not out

    @property
    def lag(self) -> int:
        return 0 if self.smoother is None else self.smoother.right

    def push(self, part: PointValues) -> PointValues:
        if self.smoother is None:
            return part
        held = np.concatenate([self.held, part.errors]) if len(self.held) else part.errors
        scores = self.smoother.push(part.scores)
        self.held = held[len(scores) :]
        return PointValues(scores, held[: len(scores)])

    def finish(self) -> PointValues:
        if self.smoother is None:
            return PointValues(np.zeros(0, dtype=np.float32), self.held[:0])
        scores, held, self.held = self.smoother.finish(), self.held, self.held[:0]
        return PointValues(scores, held)

    def to_dict(self) -> dict:
        return {"held": encode_array(self.held),
                "smoother": None if self.smoother is None else self.smoother.to_dict()}  # fmt: skip

    def restore(self, record: dict) -> PointSmoother:
        self.held = decode_array(record["held"])
        if self.smoother is not None:
            self.smoother.restore(record["smoother"])
        return self


def smooth_point_stream(parts: Iterable[PointValues], span: int) -> Iterator[PointValues]:
    """score_chunks's output with smooth_scores applied to the scores; each point keeps its own errors."""
    if span <= 1:
        yield from parts
        return
    smoother: PointSmoother | None = None
    for part in parts:
        smoother = smoother or PointSmoother(span, part.errors.shape[1])
        smoothed = smoother.push(part)
        if len(smoothed.scores):
            yield smoothed
    if smoother is not None:
        rest = smoother.finish()
        if len(rest.scores):
            yield rest


class PointStream:
    """A normalised series scored and smoothed push-style, for a live stream: push(rows) returns the points
    whose smoothed score is known, finish() the rest; with batch_size 1 a point waits at most `lag` rows.
    The same scores as score_stream over the same rows and batch size, bit for bit, however they are pushed."""

    def __init__(self, model: AnomalyTransformer, settings: ScoreSettings, *, batch_size: int = 1,
                 device: torch.device | None = None) -> None:  # fmt: skip
        self.scorer = WindowScorer(model, settings, batch_size=batch_size, device=device)
        self.smoother = PointSmoother(settings.smooth, model.config.n_channels)

    @property
    def lag(self) -> int:
        """Rows after a point that arrive before its score is known (batch_size 1): up to win_size - 1 to
        fill its window, plus the centred smoothing's look-ahead."""
        return self.scorer.win_size - 1 + self.smoother.lag

    @property
    def waiting(self) -> int:
        """Rows pushed whose score is not out yet."""
        return len(self.scorer.pending) + sum(map(len, self.scorer.batch)) + len(self.smoother.held)

    def push(self, rows: np.ndarray) -> PointValues:
        return self.smoother.push(self.scorer.push(rows))

    def finish(self) -> PointValues:
        """The rest, the tail window aligned to the end of the series as score_chunks takes it; nothing
        when fewer rows than one window arrived."""
        n_channels = self.scorer.pending.shape[1]
        if self.scorer.seen < self.scorer.win_size:
            return _joined([], n_channels)
        first = self.smoother.push(self.scorer.finish())
        return _joined([first, self.smoother.finish()], n_channels)

    def to_dict(self) -> dict:
        return {"scorer": self.scorer.to_dict(), "smoother": self.smoother.to_dict()}

    def restore(self, record: dict) -> PointStream:
        self.scorer.restore(record["scorer"])
        self.smoother.restore(record["smoother"])
        return self


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
