"""The minimax solver: train on TRAIN with early stopping on a validation tail of TRAIN."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_factory.dataset import TimeSeriesDataset
from data_factory.errors import UserInputError
from data_factory.windows import Normalizer, WindowDataset, check_long_enough, scoring_starts, training_starts
from model.discrepancy import minimax_losses
from model.distributed import DistributedContext, epoch_batches
from model.resume import capture_rng_state, restore_rng_state
from model.score_settings import DEFAULT_VARIANT, ScoreSettings, check_smooth, check_variant, resolve_score_settings
from model.scoring import autocast_context, resolve_device, score_points
from model.transformer import AnomalyTransformer, ModelConfig

SCORE_PERCENTILES = (90.0, 95.0, 99.0, 99.5, 99.9)


class TrainingFailed(Exception):
    """Training could not go on (a non-finite loss); the message says where and what to try."""


@dataclass
class TrainConfig:
    """Optimisation settings; the defaults are the original README's."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-4
    k: float = 3.0
    val_ratio: float = 0.2
    patience: int = 3
    train_stride: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = 0
    deterministic: bool = False  # CUDA: deterministic kernels only, so that a seed fixes the weights
    score_variant: str = DEFAULT_VARIANT
    temperature: float = 50.0
    score_channels: str | None = None  # all, target or names/indices; None: the variant's default
    smooth: int | None = None  # centred moving-average span of the scores; None: the variant's default

    def validate(self) -> None:
        if self.epochs <= 0:
            raise UserInputError(f"--epochs must be positive, got {self.epochs}")
        if not self.lr > 0:
            raise UserInputError(f"--lr must be positive, got {self.lr}")
        if self.batch_size <= 0:
            raise UserInputError(f"--batch-size must be positive, got {self.batch_size}")
        if not 0 <= self.val_ratio < 1:
            raise UserInputError(f"--val-ratio must be in [0, 1), got {self.val_ratio}")
        if self.train_stride <= 0:
            raise UserInputError(f"--train-stride must be positive, got {self.train_stride}")
        if self.patience <= 0:
            raise UserInputError(f"--patience must be positive, got {self.patience}")
        check_variant(self.score_variant)
        if self.smooth is not None:
            check_smooth(self.smooth)

    def score_settings(self, dataset: TimeSeriesDataset) -> ScoreSettings:
        """The scoring these settings imply on this dataset (target channels resolved to indices)."""
        return resolve_score_settings(
            self.score_variant,
            self.score_channels,
            self.smooth,
            dataset.channel_names,
            dataset.target_channels,
            self.temperature,
            train_length=len(dataset.train),
        )


def validate_model_config(config: ModelConfig) -> None:
    for name in ("win_size", "d_model", "n_heads", "e_layers", "d_ff"):
        if getattr(config, name) <= 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    if config.d_model % config.n_heads:
        raise UserInputError(
            f"--n-heads {config.n_heads} does not divide --d-model {config.d_model}; pick a divisor such as 8"
        )
    if not 0 <= config.dropout < 1:
        raise UserInputError(f"--dropout must be in [0, 1), got {config.dropout}")


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


def _deterministic_when_asked(train: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run the training under deterministic_kernels when its TrainConfig asks for them."""

    @functools.wraps(train)
    def wrapper(dataset: TimeSeriesDataset, model_config: ModelConfig, train_config: TrainConfig, *args, **kwargs):
        with deterministic_kernels(train_config.deterministic):
            return train(dataset, model_config, train_config, *args, **kwargs)

    return wrapper


@dataclass
class TrainResult:
    model: AnomalyTransformer
    normalizer: Normalizer
    history: list[dict]
    best_epoch: int
    train_scores: np.ndarray  # (N_train,) scores of the whole TRAIN series under the best weights
    scoring: ScoreSettings  # how those scores were made; evaluate.py and detect.py score the same way


def _mean_losses(model: AnomalyTransformer, loader: DataLoader, k: float, device: torch.device, amp: bool) -> dict:
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


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the current step finished and the resumable state was saved."""

    def __init__(self, signal_number: int, epoch: int, step: int) -> None:
        self.signal_number, self.epoch, self.step = signal_number, epoch, step
        super().__init__(f"{signal.Signals(signal_number).name} at epoch {epoch}, step {step}")


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step, so no step is cut in half."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: object) -> None:
        self.signal_number = number

    def __exit__(self, *_exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _out_of_memory_advice(train_config: TrainConfig, model_config: ModelConfig) -> str:
    batch, width, window = train_config.batch_size, model_config.d_model, model_config.win_size
    return (
        f"CUDA ran out of memory at --batch-size {batch}, --d-model {width}, --win-size {window}; "
        f"try --batch-size {max(batch // 2, 1)}, --d-model {max(width // 2, model_config.n_heads)} "
        f"or --win-size {max(window // 2, 2)}"
    )


def _training_device(name: str, context: DistributedContext) -> torch.device:
    device = resolve_device(name)
    if context.enabled and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


@_deterministic_when_asked
def train_anomaly_transformer(
    dataset: TimeSeriesDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
    *,
    resume: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
    save_every: int = 0,
    context: DistributedContext | None = None,
) -> TrainResult:
    """Fit the model on dataset.train only; the test split is never read.

    resume: a state from save_state, to continue exactly where it stopped.
    save_state: called (on rank 0) with the resumable state at every epoch end, every
        `save_every` steps, and when SIGINT/SIGTERM stops the run.
    context: the torchrun process group; each rank trains on its share of every global batch.
    """
    train_config.validate()
    validate_model_config(model_config)
    scoring = train_config.score_settings(dataset)  # a bad --score-channels fails before training
    context = context or DistributedContext()
    seed_everything(train_config.seed)
    device = _training_device(train_config.device, context)
    use_amp = train_config.amp and device.type == "cuda"
    if not context.is_main:
        log, progress = (lambda _: None), False

    normalizer = Normalizer.fit(dataset.train)
    series = normalizer.transform(dataset.train)
    win = model_config.win_size
    n_val = int(len(series) * train_config.val_ratio)
    fit_part, val_part = series[: len(series) - n_val], series[len(series) - n_val :]
    check_long_enough(len(fit_part), win, f"{dataset.name} train (without its validation tail)")
    if n_val:
        check_long_enough(n_val, win, f"{dataset.name} validation tail ({train_config.val_ratio:.0%} of train)")
    windows = WindowDataset(fit_part, training_starts(len(fit_part), win, train_config.train_stride), win)
    val_loader = None
    if n_val:
        val_loader = DataLoader(
            WindowDataset(val_part, scoring_starts(len(val_part), win), win),
            batch_size=train_config.batch_size,
            num_workers=train_config.num_workers,
        )

    model = AnomalyTransformer(model_config).to(device)
    trained = model
    if context.enabled:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    # Loss scaling only matters for float16; bfloat16 and float32 run unscaled.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    progress_state = {
        "history": [],
        "best_state": None,
        "best_epoch": 0,
        "best_val": float("inf"),
        "bad_epochs": 0,
        "epoch": 1,
        "step": 0,
        "sums": [0.0, 0.0, 0.0, 0.0],
        "seconds": 0.0,
    }
    if resume is not None:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        scaler.load_state_dict(resume["scaler_state"])
        progress_state.update({key: resume[key] for key in progress_state})
        restore_rng_state(resume["rng"])
        log(f"resuming at epoch {progress_state['epoch']}, step {progress_state['step']}")

    def snapshot(epoch: int, step: int, sums: list[float], seconds: float, finished: bool = False) -> dict:
        return {
            "model_state": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
            "optimizer_state": optimizer.state_dict(),
            "scaler_state": scaler.state_dict(),
            **{key: progress_state[key] for key in ("history", "best_state", "best_epoch", "best_val", "bad_epochs")},
            "epoch": epoch,
            "step": step,
            "sums": list(sums),
            "seconds": seconds,
            "finished": finished,
            "rng": capture_rng_state(),
        }

    def save(state: dict) -> None:
        if save_state is not None and context.is_main:
            save_state(state)

    history = progress_state["history"]
    start_epoch, start_step = progress_state["epoch"], progress_state["step"]
    with _StopOnSignal() as stop:
        for epoch in range(start_epoch, train_config.epochs + 1):
            lr = train_config.lr * 0.5 ** (epoch - 1)  # halved after every epoch
            for group in optimizer.param_groups:
                group["lr"] = lr
            trained.train()
            resumed = epoch == start_epoch
            first_step = start_step if resumed else 0
            sums = list(progress_state["sums"]) if resumed else [0.0, 0.0, 0.0, 0.0]
            seconds_before = progress_state["seconds"] if resumed else 0.0
            started = time.perf_counter()
            batches = epoch_batches(len(windows), train_config.batch_size, train_config.seed, epoch, context)
            loader = DataLoader(windows, batch_sampler=batches[first_step:], num_workers=train_config.num_workers)
            bar = tqdm(
                loader,
                desc=f"epoch {epoch}/{train_config.epochs}",
                disable=not progress,
                leave=False,
                initial=first_step,
                total=len(batches),
            )
            for step, batch in enumerate(bar, start=first_step + 1):
                batch = batch.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                try:
                    with autocast_context(device, use_amp):
                        losses = minimax_losses(batch, *trained(batch), train_config.k)
                    values = [losses.reconstruction.item(), losses.loss1.item(), losses.loss2.item()]
                    finite = bool(np.isfinite(values).all())
                    if finite:
                        scaler.scale(losses.total).backward()
                        scaler.step(optimizer)
                        scaler.update()
                except torch.cuda.OutOfMemoryError:
                    raise TrainingFailed(_out_of_memory_advice(train_config, model_config)) from None
                # Every rank must agree to stop, or the others would wait forever in the next all-reduce.
                stop_requested, any_nonfinite = context.sum([float(stop.signal_number is not None), float(not finite)])
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
                    save(snapshot(epoch, step, sums, elapsed))
                    raise TrainingInterrupted(stop.signal_number or signal.SIGTERM, epoch, step)
                if save_every and step % save_every == 0:
                    save(snapshot(epoch, step, sums, elapsed))
            bar.close()

            totals = context.sum(sums)
            train_means = np.array(totals[:3]) / max(totals[3], 1.0)
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_rec": float(train_means[0]),
                "train_loss1": float(train_means[1]),
                "train_loss2": float(train_means[2]),
            }
            if val_loader is not None:
                val = _mean_losses(model, val_loader, train_config.k, device, use_amp)
                record.update({f"val_{name}": float(value) for name, value in val.items()})
                # loss1 + loss2 equals 2 * rec in value (the two discrepancy terms cancel), so the
                # validation reconstruction error is the objective itself. The reference instead
                # waits for loss1 and loss2 to fall together, which rarely happens once the
                # discrepancy is being amplified.
                improved = val["rec"] < progress_state["best_val"]
            else:
                improved = True
            record["seconds"] = round(seconds_before + time.perf_counter() - started, 3)
            record["improved"] = bool(improved)
            history.append(record)
            log(_epoch_summary(record, train_config.epochs, val_loader is not None))

            if improved:
                progress_state.update(best_state=copy.deepcopy(model.state_dict()), best_epoch=epoch, bad_epochs=0)
                if val_loader is not None:
                    progress_state["best_val"] = float(val["rec"])
            else:
                progress_state["bad_epochs"] += 1
            early_stop = progress_state["bad_epochs"] >= train_config.patience
            save(snapshot(epoch + 1, 0, [0.0, 0.0, 0.0, 0.0], 0.0, finished=early_stop or epoch == train_config.epochs))
            if early_stop:
                log(
                    f"early stopping: no validation improvement for {progress_state['bad_epochs']} epochs; "
                    f"keeping epoch {progress_state['best_epoch']}"
                )
                break

    model.load_state_dict(progress_state["best_state"])
    train_scores = score_points(model, series, scoring, batch_size=train_config.batch_size, device=device, amp=use_amp)
    return TrainResult(model, normalizer, history, progress_state["best_epoch"], train_scores, scoring)


def _epoch_summary(record: dict, epochs: int, with_validation: bool) -> str:
    summary = (
        f"epoch {record['epoch']}/{epochs} | train rec {record['train_rec']:.5f} "
        f"loss1 {record['train_loss1']:.5f} loss2 {record['train_loss2']:.5f}"
    )
    if with_validation:
        summary += f" | val rec {record['val_rec']:.5f} loss1 {record['val_loss1']:.5f} loss2 {record['val_loss2']:.5f}"
    return f"{summary} | lr {record['lr']:.2e} | {record['seconds']:.1f}s{' | best' if record['improved'] else ''}"


def train_score_statistics(scores: np.ndarray) -> dict:
    """Summary of TRAIN scores kept in the checkpoint, for thresholds that use no test data."""
    return {
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "percentiles": {str(q): float(np.percentile(scores, q)) for q in SCORE_PERCENTILES},
    }
