"""The minimax solver: train a model on a normalised TRAIN series, early-stopping on its validation tail.

The pieces are separate so that a caller can replace one: `split_validation`, `run_epoch`,
`validation_losses`, `EarlyStopping`, and the resumable state (`capture_state` / `restore_state`).
`fit_model` puts them together; the Detector (model/detector.py) calls it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_factory.windows import WindowDataset, check_long_enough, scoring_starts, training_starts
from model.config import DetectorConfig
from model.discrepancy import minimax_losses
from model.scoring import autocast_context, resolve_device
from model.transformer import AnomalyTransformer
from runtime.allocator import keep_freed_memory
from runtime.distributed import DistributedContext, epoch_batches
from runtime.errors import UserInputError
from runtime.resume import capture_rng_state, restore_rng_state


class TrainingFailed(Exception):
    """Training could not go on (a non-finite loss); the message says where and what to try."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the current step finished and the resumable state was saved.

    after_training: the signal came after the last epoch (a second one, during the final TRAIN
    scoring or the save); the saved state is marked finished, and --resume redoes only that end.
    """

    def __init__(self, signal_number: int, epoch: int, step: int, after_training: bool = False) -> None:
        self.signal_number, self.epoch, self.step, self.after_training = signal_number, epoch, step, after_training
        super().__init__(signal_number, epoch, step, after_training)  # all of them, so it pickles across processes

    def __str__(self) -> str:
        name = signal.Signals(self.signal_number).name
        if self.after_training:
            return f"{name} after the last epoch, before the checkpoint was written"
        return f"{name} at epoch {self.epoch}, step {self.step}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool):
    """While training: deterministic kernels only (an op that has none raises instead of drifting).

    CPU kernels are deterministic already; on CUDA some backward kernels add in a varying order, and
    cuBLAS needs a fixed workspace, which it reads when its first handle is made. The process's
    previous setting is restored afterwards.
    """
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def training_device(name: str, context: DistributedContext) -> torch.device:
    device = resolve_device(name)
    if context.enabled and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


class StopOnSignal:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step, so no step is cut in half.

    Nested inside another StopOnSignal, a signal sets the outer one's flag too, so a signal that
    lands after the inner block (the training loop) has ended is still seen by the outer one.
    second_stops: once an inner block has ended normally (training is over), a second signal
    raises TrainingInterrupted(after_training=True) at once: the end of a run (the final TRAIN
    scoring, the save) goes on after one signal, and stops at the next.
    """

    def __init__(self, second_stops: bool = False) -> None:
        self.signal_number: int | None = None
        self.second_stops = second_stops
        self.inner_finished = False
        self._previous: dict[int, object] = {}
        self._outer: StopOnSignal | None = None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
            outer = getattr(self._previous[signal.SIGTERM], "__self__", None)
            if isinstance(outer, StopOnSignal):
                self._outer = outer
                self.signal_number = outer.signal_number
        return self

    def _handle(self, number: int, _frame: object) -> None:
        if self.second_stops and self.inner_finished and self.signal_number is not None:
            raise TrainingInterrupted(number, 0, 0, after_training=True)
        self.signal_number = number
        if self._outer is not None:
            self._outer.signal_number = number

    def __exit__(self, exc_type: type | None, *_exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        if self._outer is not None and exc_type is None:
            self._outer.inner_finished = True


def split_validation(series: np.ndarray, config: DetectorConfig, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The part trained on and the validation tail (None when val_ratio is 0), each at least one window long."""
    n_val = int(len(series) * config.val_ratio)
    fit_part = series[: len(series) - n_val]
    tail = " (without its validation tail)" if n_val else ""  # --val-ratio 0 holds none back
    check_long_enough(len(fit_part), config.win_size, f"{name} train{tail}")
    if not n_val:
        return fit_part, None
    check_long_enough(n_val, config.win_size, f"{name} validation tail ({config.val_ratio:.0%} of train)",
                      "lower --win-size, or train on all of TRAIN with --val-ratio 0")  # fmt: skip
    return fit_part, series[len(series) - n_val :]


def validation_losses(
    model: AnomalyTransformer, loader: DataLoader, k: float, device: torch.device, amp: bool
) -> dict[str, float]:
    """Mean reconstruction error and both minimax losses over the validation windows."""
    totals = np.zeros(3)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            with autocast_context(device, amp):
                losses = minimax_losses(batch, *model(batch), k)
            totals += [losses.reconstruction.item(), losses.loss1.item(), losses.loss2.item()]
    rec, loss1, loss2 = totals / max(len(loader), 1)
    return {"rec": float(rec), "loss1": float(loss1), "loss2": float(loss2)}


@dataclass
class Progress:
    """Where a run stands: everything besides the weights and optimiser that a resumed run needs."""

    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: int = 0
    best_val: float = float("inf")
    bad_epochs: int = 0
    epoch: int = 1  # the epoch to run next
    step: int = 0  # steps of that epoch already taken
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # rec, loss1, loss2, steps so far
    seconds: float = 0.0  # time spent in that epoch so far

    KEYS = ("history", "best_state", "best_epoch", "best_val", "bad_epochs", "epoch", "step", "sums", "seconds")


class EarlyStopping:
    """Keep the weights of the epoch with the lowest validation reconstruction error; stop after
    `patience` epochs without improvement. Without validation every epoch counts as an improvement.

    loss1 + loss2 equals 2 * rec in value (the two discrepancy terms cancel), so the validation
    reconstruction error is the objective itself. The reference instead waits for loss1 and loss2
    to fall together, which rarely happens once the discrepancy is being amplified.
    """

    def __init__(self, patience: int, progress: Progress) -> None:
        self.patience, self.progress = patience, progress

    def update(self, epoch: int, model: AnomalyTransformer, val_rec: float | None) -> bool:
        """Record one finished epoch; True when it improved."""
        progress = self.progress
        improved = val_rec is None or val_rec < progress.best_val
        if improved:
            progress.best_state, progress.best_epoch, progress.bad_epochs = copy.deepcopy(model.state_dict()), epoch, 0
            if val_rec is not None:
                progress.best_val = float(val_rec)
        else:
            progress.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.progress.bad_epochs >= self.patience


def capture_state(model, optimizer, scaler, progress: Progress, epoch, step, sums, seconds, finished=False) -> dict:
    """The resumable state: plain tensors, numbers and lists, so it loads with weights_only."""
    return {
        "model_state": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "scaler_state": scaler.state_dict(),
        "history": progress.history,
        "best_state": progress.best_state,
        "best_epoch": progress.best_epoch,
        "best_val": progress.best_val,
        "bad_epochs": progress.bad_epochs,
        "epoch": epoch,
        "step": step,
        "sums": list(sums),
        "seconds": seconds,
        "finished": finished,
        "rng": capture_rng_state(),
    }


def restore_state(state: dict, model, optimizer, scaler) -> Progress:
    try:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        scaler.load_state_dict(state["scaler_state"])
        restore_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"the resumable state does not fit the model it describes ({reason}); start without --resume"
        ) from None
    return Progress(**{key: state[key] for key in Progress.KEYS})


def check_resume_position(
    state: dict, n_windows: int, config: DetectorConfig, context: DistributedContext, name: str = "the resumable state"
) -> None:
    """A resumable state's epoch and step must lie inside the run it claims to continue (`name`: for the message)."""
    epoch, step = state["epoch"], state["step"]
    if not 1 <= epoch <= config.epochs + 1:
        raise UserInputError(
            f"{name} is at epoch {epoch}, outside this run's epochs 1..{config.epochs}; start without --resume"
        )
    batches = len(epoch_batches(n_windows, config.batch_size, config.seed, epoch, context))
    if step > batches or (epoch == config.epochs + 1 and step):
        raise UserInputError(
            f"{name} is at step {step} of epoch {epoch}, which has {batches} batches; start without --resume"
        )


def _out_of_memory_advice(config: DetectorConfig) -> str:
    batch, width, window = config.batch_size, config.d_model, config.win_size
    return (
        f"CUDA ran out of memory at --batch-size {batch}, --d-model {width}, --win-size {window}; "
        f"try --batch-size {max(batch // 2, 1)}, --d-model {max(width // 2, config.n_heads)} "
        f"or --win-size {max(window // 2, 2)}"
    )


@dataclass
class EpochRun:
    """The fixed parts of one training run that every epoch uses."""

    trained: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    windows: WindowDataset
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: DetectorConfig
    device: torch.device
    use_amp: bool
    context: DistributedContext
    stop: StopOnSignal
    save: Callable[[int, int, list[float], float], None]  # (epoch, step, sums, seconds) -> resumable state saved
    save_every: int
    progress_bar: bool


def run_epoch(run: EpochRun, epoch: int, first_step: int, sums: list[float], seconds_before: float) -> list[float]:
    """Train one epoch from `first_step`; return the sums (rec, loss1, loss2, steps) of this rank's steps."""
    config, optimizer = run.config, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = config.lr * 0.5 ** (epoch - 1)  # halved after every epoch
    run.trained.train()
    started = time.perf_counter()
    batches = epoch_batches(len(run.windows), config.batch_size, config.seed, epoch, run.context)
    loader = DataLoader(run.windows, batch_sampler=batches[first_step:], num_workers=config.num_workers)
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}/{config.epochs}",
        disable=not run.progress_bar,
        leave=False,
        initial=first_step,
        total=len(batches),
    )
    for step, batch in enumerate(bar, start=first_step + 1):
        batch = batch.to(run.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        try:
            with autocast_context(run.device, run.use_amp):
                losses = minimax_losses(batch, *run.trained(batch), config.k)
            values = [losses.reconstruction.item(), losses.loss1.item(), losses.loss2.item()]
            finite = bool(np.isfinite(values).all())
            if finite:
                run.scaler.scale(losses.total).backward()
                run.scaler.step(optimizer)
                run.scaler.update()
        except torch.cuda.OutOfMemoryError:
            raise TrainingFailed(_out_of_memory_advice(config)) from None
        # Every rank must agree to stop, or the others would wait forever in the next all-reduce.
        stop_requested, any_nonfinite = run.context.sum([float(run.stop.signal_number is not None), float(not finite)])
        if any_nonfinite:
            raise TrainingFailed(
                f"the loss became non-finite at epoch {epoch}, step {step}; lower --lr or check the data for "
                "extreme values (the checkpoints already on disk are kept)"
            )
        sums = [total + value for total, value in zip(sums, [*values, 1.0], strict=True)]
        if step % 10 == 0 or step == len(batches):
            bar.set_postfix(rec=f"{values[0]:.4f}", loss1=f"{values[1]:.4f}", loss2=f"{values[2]:.4f}")
        elapsed = seconds_before + time.perf_counter() - started
        if stop_requested:
            bar.close()
            run.save(epoch, step, sums, elapsed)
            raise TrainingInterrupted(run.stop.signal_number or signal.SIGTERM, epoch, step)
        if run.save_every and step % run.save_every == 0:
            run.save(epoch, step, sums, elapsed)
    bar.close()
    return sums


def epoch_summary(record: dict, epochs: int) -> str:
    summary = (
        f"epoch {record['epoch']}/{epochs} | train rec {record['train_rec']:.5f} "
        f"loss1 {record['train_loss1']:.5f} loss2 {record['train_loss2']:.5f}"
    )
    if "val_rec" in record:
        summary += f" | val rec {record['val_rec']:.5f} loss1 {record['val_loss1']:.5f} loss2 {record['val_loss2']:.5f}"
    return f"{summary} | lr {record['lr']:.2e} | {record['seconds']:.1f}s{' | best' if record['improved'] else ''}"


@dataclass
class FitResult:
    model: AnomalyTransformer  # with the best epoch's weights
    history: list[dict]
    best_epoch: int


def fit_model(
    model: AnomalyTransformer,
    series: np.ndarray,
    config: DetectorConfig,
    *,
    name: str = "the series",
    log: Callable[[str], None] = print,
    progress: bool = True,
    resume: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
    save_every: int = 0,
    context: DistributedContext | None = None,
) -> FitResult:
    """Train `model` (already on its device) with the minimax strategy on a normalised TRAIN series.

    resume: a state from save_state, to continue exactly where it stopped.
    save_state: called (on rank 0) with the resumable state at every epoch end, every
        `save_every` steps, and when SIGINT/SIGTERM stops the run.
    context: the torchrun process group; each rank trains on its share of every global batch.
    """
    keep_freed_memory()  # each step's association tensors reuse the last step's pages (runtime/allocator.py)
    context = context or DistributedContext()
    device = next(model.parameters()).device
    use_amp = config.amp and device.type == "cuda"
    if not context.is_main:
        log, progress = (lambda _: None), False
    windows, val_loader = _training_data(series, config, name)
    trained = model
    if context.enabled:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Loss scaling only matters for float16; bfloat16 and float32 run unscaled.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    state = Progress()
    finished = resume is not None and resume["finished"]
    if resume is not None:
        state = _resumed(resume, len(windows), config, context, (model, optimizer, scaler), log)
    stopping = EarlyStopping(config.patience, state)

    def save(epoch: int, step: int, sums: list[float], seconds: float, finished: bool = False) -> None:
        if save_state is not None and context.is_main:
            save_state(capture_state(model, optimizer, scaler, state, epoch, step, sums, seconds, finished))

    start_epoch, start_step = state.epoch, state.step
    with StopOnSignal() as stop:
        run = EpochRun(trained, windows, optimizer, scaler, config, device, use_amp, context, stop, save, save_every,
                       progress)  # fmt: skip
        for epoch in range(start_epoch, start_epoch if finished else config.epochs + 1):
            resumed = epoch == start_epoch
            seconds_before = state.seconds if resumed else 0.0
            started = time.perf_counter()
            sums = run_epoch(
                run,
                epoch,
                start_step if resumed else 0,
                list(state.sums) if resumed else [0.0, 0.0, 0.0, 0.0],
                seconds_before,
            )
            record = _epoch_record(epoch, config, context.sum(sums))
            val_rec = None
            if val_loader is not None:
                val = validation_losses(model, val_loader, config.k, device, use_amp)
                record.update({f"val_{key}": float(value) for key, value in val.items()})
                val_rec = val["rec"]
            record["seconds"] = round(seconds_before + time.perf_counter() - started, 3)
            record["improved"] = bool(stopping.update(epoch, model, val_rec))
            state.history.append(record)
            log(epoch_summary(record, config.epochs))
            save(epoch + 1, 0, [0.0, 0.0, 0.0, 0.0], 0.0, finished=stopping.should_stop or epoch == config.epochs)
            if stopping.should_stop:
                log(
                    f"early stopping: no validation improvement for {state.bad_epochs} epochs; "
                    f"keeping epoch {state.best_epoch}"
                )
                break
    model.load_state_dict(state.best_state)
    return FitResult(model, state.history, state.best_epoch)


def _training_data(series: np.ndarray, config: DetectorConfig, name: str) -> tuple[WindowDataset, DataLoader | None]:
    """The training windows of the fitted part, and the loader of the held-out part's windows (None without one)."""
    fit_part, val_part = split_validation(series, config, name)
    win = config.win_size
    windows = WindowDataset(fit_part, training_starts(len(fit_part), win, config.train_stride), win)
    if val_part is None:
        return windows, None
    val_windows = WindowDataset(val_part, scoring_starts(len(val_part), win), win)
    return windows, DataLoader(val_windows, batch_size=config.batch_size, num_workers=config.num_workers)


def _resumed(
    resume: dict,
    n_windows: int,
    config: DetectorConfig,
    context: DistributedContext,
    parts: tuple[AnomalyTransformer, torch.optim.Optimizer, torch.amp.GradScaler],
    log: Callable[[str], None],
) -> Progress:
    """The progress a resumable state holds, with its weights, optimiser and scaler restored into `parts`."""
    check_resume_position(resume, n_windows, config, context)
    state = restore_state(resume, *parts)
    if resume["finished"]:
        log(f"the run finished its epochs; keeping epoch {state.best_epoch} and scoring TRAIN again")
    else:
        log(f"resuming at epoch {state.epoch}, step {state.step}")
    return state


def _epoch_record(epoch: int, config: DetectorConfig, totals: list[float]) -> dict:
    """An epoch's line in the history from its summed losses (rec, loss1, loss2, windows) over every rank."""
    train_means = np.array(totals[:3]) / max(totals[3], 1.0)
    return {
        "epoch": epoch,
        "lr": config.lr * 0.5 ** (epoch - 1),
        "train_rec": float(train_means[0]),
        "train_loss1": float(train_means[1]),
        "train_loss2": float(train_means[2]),
    }
