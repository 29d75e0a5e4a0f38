"""The minimax solver: train on TRAIN with early stopping on a validation tail of TRAIN."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_factory.dataset import TimeSeriesDataset
from data_factory.errors import UserInputError
from data_factory.windows import Normalizer, WindowDataset, check_long_enough, scoring_starts, training_starts
from model.discrepancy import SCORE_VARIANTS, minimax_losses
from model.scoring import autocast_context, resolve_device, score_series
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
    score_variant: str = "paper"
    temperature: float = 50.0

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
        if self.score_variant not in SCORE_VARIANTS:
            raise UserInputError(f"--score must be one of {', '.join(SCORE_VARIANTS)}")


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


@dataclass
class TrainResult:
    model: AnomalyTransformer
    normalizer: Normalizer
    history: list[dict]
    best_epoch: int
    train_scores: np.ndarray  # (N_train,) scores of the whole TRAIN series under the best weights


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
    return {"rec": rec, "loss1": loss1, "loss2": loss2}


def train_anomaly_transformer(
    dataset: TimeSeriesDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    """Fit the model on dataset.train only; the test split is never read."""
    train_config.validate()
    validate_model_config(model_config)
    seed_everything(train_config.seed)
    device = resolve_device(train_config.device)
    use_amp = train_config.amp and device.type == "cuda"

    normalizer = Normalizer.fit(dataset.train)
    series = normalizer.transform(dataset.train)
    win = model_config.win_size
    n_val = int(len(series) * train_config.val_ratio)
    fit_part, val_part = series[: len(series) - n_val], series[len(series) - n_val :]
    check_long_enough(len(fit_part), win, f"{dataset.name} train (without its validation tail)")
    if n_val:
        check_long_enough(n_val, win, f"{dataset.name} validation tail ({train_config.val_ratio:.0%} of train)")

    generator = torch.Generator().manual_seed(train_config.seed)
    train_loader = DataLoader(
        WindowDataset(fit_part, training_starts(len(fit_part), win, train_config.train_stride), win),
        batch_size=train_config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=train_config.num_workers,
        drop_last=False,
    )
    val_loader = None
    if n_val:
        val_loader = DataLoader(
            WindowDataset(val_part, scoring_starts(len(val_part), win), win),
            batch_size=train_config.batch_size,
            num_workers=train_config.num_workers,
        )

    model = AnomalyTransformer(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    # Loss scaling only matters for float16; bfloat16 and float32 run unscaled.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    history: list[dict] = []
    best_state, best_epoch, best_val, bad_epochs = None, 0, np.inf, 0
    for epoch in range(1, train_config.epochs + 1):
        lr = train_config.lr * 0.5 ** (epoch - 1)  # halved after every epoch
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        started = time.perf_counter()
        sums = np.zeros(3)
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{train_config.epochs}", disable=not progress, leave=False)
        for step, batch in enumerate(bar, start=1):
            batch = batch.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, use_amp):
                losses = minimax_losses(batch, *model(batch), train_config.k)
            values = [losses.reconstruction.item(), losses.loss1.item(), losses.loss2.item()]
            if not np.isfinite(values).all():
                raise TrainingFailed(
                    f"the loss became non-finite at epoch {epoch}, step {step}; lower --lr or check the data "
                    "for extreme values (nothing was written)"
                )
            scaler.scale(losses.total).backward()
            scaler.step(optimizer)
            scaler.update()
            sums += values
            if step % 10 == 0 or step == len(train_loader):
                bar.set_postfix(rec=f"{values[0]:.4f}", loss1=f"{values[1]:.4f}", loss2=f"{values[2]:.4f}")
        bar.close()

        train_means = sums / len(train_loader)
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
            improved = val["rec"] < best_val
        else:
            improved = True
        record["seconds"] = round(time.perf_counter() - started, 3)
        record["improved"] = bool(improved)
        history.append(record)

        summary = (
            f"epoch {epoch}/{train_config.epochs} | train rec {record['train_rec']:.5f} "
            f"loss1 {record['train_loss1']:.5f} loss2 {record['train_loss2']:.5f}"
        )
        if val_loader is not None:
            summary += (
                f" | val rec {record['val_rec']:.5f} loss1 {record['val_loss1']:.5f} loss2 {record['val_loss2']:.5f}"
            )
        log(f"{summary} | lr {lr:.2e} | {record['seconds']:.1f}s{' | best' if improved else ''}")

        if improved:
            best_state, best_epoch, bad_epochs = copy.deepcopy(model.state_dict()), epoch, 0
            if val_loader is not None:
                best_val = val["rec"]
        else:
            bad_epochs += 1
            if bad_epochs >= train_config.patience:
                log(f"early stopping: no validation improvement for {bad_epochs} epochs; keeping epoch {best_epoch}")
                break

    model.load_state_dict(best_state)
    train_scores = score_series(
        model,
        series,
        batch_size=train_config.batch_size,
        variant=train_config.score_variant,
        temperature=train_config.temperature,
        device=device,
        amp=use_amp,
    )
    return TrainResult(model, normalizer, history, best_epoch, train_scores)


def train_score_statistics(scores: np.ndarray) -> dict:
    """Summary of TRAIN scores kept in the checkpoint, for thresholds that use no test data."""
    return {
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "percentiles": {str(q): float(np.percentile(scores, q)) for q in SCORE_PERCENTILES},
    }
