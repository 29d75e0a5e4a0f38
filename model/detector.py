"""The Detector: one Anomaly Transformer with its normaliser, scoring and TRAIN-score statistics.

In scikit-learn's vocabulary: configure in the constructor, `fit(train)` learns, `score(series)`
gives per-point anomaly scores, `threshold_` and `predict(series)` follow from the TRAIN scores.
`save(path)` writes a checkpoint that loads with torch.load(weights_only=True), and
`Detector.load(path)` rebuilds the detector from it alone. train.py, evaluate.py, detect.py and
inspect_checkpoint.py all go through this class.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_factory.dataset import TimeSeriesDataset, check_series, fingerprint_of
from data_factory.readers import column_differences
from data_factory.windows import SCORING_FIX, Normalizer, check_long_enough
from model.alarm_rule import AlarmRule
from model.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from model.config import DetectorConfig
from model.score_settings import ScoreSettings, resolve_score_settings
from model.scoring import PointValues, resolve_device, score_series, score_stream
from model.solver import (
    TrainingFailed,
    deterministic_kernels,
    fit_model,
    seed_everything,
    split_validation,
    training_device,
)
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.distributed import DistributedContext
from runtime.errors import UserInputError

# TRAIN-score percentiles kept in the checkpoint, so detect can threshold without the TRAIN data.
SCORE_PERCENTILES = (90.0, 95.0, 99.0, 99.5, 99.9)


@dataclass(frozen=True)
class TrainData:
    """What a Detector learns from: the TRAIN series and what is known about its channels."""

    name: str
    train: np.ndarray  # (N, C) float32
    channel_names: list[str]
    target_channels: list[int] | None  # the channels `--score-channels target` means; None: all
    record: dict  # name, n_channels, channel names, lengths and fingerprints, stored in the checkpoint

    @classmethod
    def of(cls, data: TimeSeriesDataset | np.ndarray) -> TrainData:
        """The TRAIN of a dataset, or an array (a DataFrame's column names become the channel names; a 1-D array
        or a Series is one channel), checked: float32 (N, C), finite, one name per channel."""
        if isinstance(data, TimeSeriesDataset):
            # A dataset built by hand is checked as the loaders check theirs (they return it unchanged).
            names = list(data.channel_names)
            _check_unique(names, data.name)
            columns = np.shape(data.train)[1] if np.ndim(data.train) == 2 else None
            if columns is not None and len(names) != columns:
                raise UserInputError(f"{data.name} names {len(names)} channels but its train has {columns} columns; "
                                     "give one name per column")  # fmt: skip
            data = dataclasses.replace(data, train=check_series(data.train, f"{data.name} train", channel_names=names))
            record = {
                "name": data.name,
                "n_channels": data.n_channels,
                "channel_names": list(data.channel_names),
                "train_length": len(data.train),
                "test_length": len(data.test),
                "fingerprint": data.fingerprint(),
                "train_fingerprint": data.train_fingerprint(),
            }
            return cls(data.name, data.train, list(data.channel_names), data.target_channels, record)
        if isinstance(data, pd.Series):  # one channel, named by the Series
            data = data.to_frame()
        elif np.ndim(data) == 1:  # one channel, as score() reads a 1-D series for a one-channel model
            data = np.asarray(data)[:, None]
        given = [str(column) for column in data.columns] if isinstance(data, pd.DataFrame) else None
        _check_unique(given or [], "the DataFrame")
        _check_numeric(data)
        train = check_series(data, "the training array", channel_names=given)
        names = given or [f"channel_{index:02d}" for index in range(train.shape[1])]
        digest = fingerprint_of(train)
        record = {
            "name": "array",
            "n_channels": train.shape[1],
            "channel_names": names,
            "train_length": len(train),
            "test_length": 0,
            "fingerprint": digest,
            "train_fingerprint": digest,  # there is no TEST: the same digest
        }
        return cls("array", train, names, None, record)


def _check_numeric(data: np.ndarray | pd.DataFrame) -> None:
    """A DataFrame of sensor columns only; a timestamp or label column is named, with the way to set it aside."""
    if not isinstance(data, pd.DataFrame):
        return
    text = [str(column) for column, dtype in data.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if text:
        raise UserInputError(f"the DataFrame has non-numeric columns {text[:5]}; drop them, or make a timestamp the "
                             f"index (df.set_index({text[0]!r}))")  # fmt: skip


def _check_unique(names: list[str], what: str) -> None:
    """Channel names that can be told apart: scoring takes a DataFrame's columns by them."""
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise UserInputError(f"{what} names channel {twice!r} more than once; give each channel its own name")


def train_score_statistics(scores: np.ndarray, percentiles: Iterable[float]) -> dict:
    """Summary of TRAIN scores kept in the checkpoint, for thresholds that use no test data."""
    return {
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "percentiles": {str(float(q)): float(np.percentile(scores, q)) for q in sorted(set(percentiles))},
    }


def package_versions() -> dict:
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }


class Detector:
    """An Anomaly Transformer anomaly detector.

    model, normalizer: optional replacements for the fresh model and the z-score fitted on TRAIN
    (e.g. pre-trained weights, or statistics shared by several entities); fit trains the model
    further and uses the normaliser as given.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        model: AnomalyTransformer | None = None,
        normalizer: Normalizer | None = None,
    ) -> None:
        self.config = config or DetectorConfig()
        # What fit starts from each time: the given model (trained further) and normaliser, or fresh ones.
        self._initial_model, self._initial_normalizer = model, normalizer
        self._initial_weights: dict | None = None  # the given model's weights before the first fit trained them
        self.model_ = model
        self.normalizer_ = normalizer
        self.scoring_: ScoreSettings | None = None  # how TRAIN was scored; score() scores the same way
        self.train_scores_: np.ndarray | None = None  # (N_train,) only after fit, not stored in checkpoints
        self.train_score_stats_: dict | None = None
        self.alarm_rule_: AlarmRule | None = None  # the decision rule fitted on the TRAIN scores
        self.train_channel_error_: np.ndarray | None = None  # (C,) mean squared TRAIN error per channel
        self.history_: list[dict] = []
        self.best_epoch_: int = 0
        self.dataset_: dict = {}
        self.created_: str | None = None
        self.versions_: dict = {}

    # ---- learning -------------------------------------------------------------------------------

    def fit(
        self,
        data: TimeSeriesDataset | np.ndarray,
        *,
        log: Callable[[str], None] = lambda _: None,
        progress: bool = False,
        resume: dict | None = None,
        save_state: Callable[[dict], None] | None = None,
        save_every: int = 0,
        context: DistributedContext | None = None,
        config_checked: bool = False,
    ) -> Detector:
        """Train on TRAIN data only (a dataset's test split is never read); return self.

        resume / save_state / save_every / context: see model.solver.fit_model. config_checked: the caller
        ran config.validate() already (the training service does, before it creates any file), so fit
        does not check the settings again.
        """
        config = self.config if config_checked else self.config.validate()
        data = TrainData.of(data)
        scoring = resolve_score_settings(
            config.score,
            config.score_channels,
            config.smooth,
            data.channel_names,
            data.target_channels,
            config.temperature,
            train_length=len(data.train),
        )  # a bad --score-channels fails before training
        context = context or DistributedContext()
        with deterministic_kernels(config.deterministic):
            seed_everything(config.seed)
            device = training_device(config.device, context)
            normalizer = self._initial_normalizer or Normalizer.fit(data.train)
            series = normalizer.transform(data.train)
            split_validation(series, config, data.name)  # a window longer than the data fails before the model
            model = self._initial_model or AnomalyTransformer(config.model_config(series.shape[1]))
            if self._initial_model is not None:  # it is trained in place: a second fit starts from its given weights
                if self._initial_weights is None:
                    self._initial_weights = copy.deepcopy(model.state_dict())
                model.load_state_dict(self._initial_weights)
            if model.config.n_channels != series.shape[1]:
                raise UserInputError(
                    f"the model given has {model.config.n_channels} input channels but {data.name} has "
                    f"{series.shape[1]}"
                )
            result = fit_model(
                model.to(device),
                series,
                config,
                name=data.name,
                log=log,
                progress=progress and context.is_main,
                resume=resume,
                save_state=save_state,
                save_every=save_every,
                context=context,
            )
            # In float32 even after mixed-precision training: evaluate and detect score in float32, and
            # the thresholds must come from the same arithmetic as the scores they cut.
            points = score_series(result.model, series, scoring, batch_size=config.batch_size, device=device)
        bad = ~np.isfinite(points.scores)
        if bad.any():  # thresholds read from these would be NaN, and nothing would ever be flagged
            raise TrainingFailed(
                f"the trained model gives {int(bad.sum())} of the {len(bad)} TRAIN points a non-finite score "
                f"(first at row {int(np.argmax(bad))}); lower --lr or --temperature, or check {data.name} for "
                "extreme values (the checkpoints already on disk are kept)"
            )
        self.model_, self.normalizer_, self.scoring_ = result.model.eval(), normalizer, scoring
        self.train_scores_ = points.scores
        percentiles = (*SCORE_PERCENTILES, config.threshold_percentile)
        self.train_score_stats_ = train_score_statistics(points.scores, percentiles)
        self.alarm_rule_ = AlarmRule.fit(points.scores, config.alarm_rule, config.threshold_percentile,
                                         config.alarm_window)  # fmt: skip
        self.train_channel_error_ = points.errors.mean(axis=0, dtype=np.float64)
        self.history_, self.best_epoch_, self.dataset_ = result.history, result.best_epoch, data.record
        self.created_ = datetime.now(UTC).isoformat(timespec="seconds")
        self.versions_ = package_versions()
        return self

    # ---- scoring --------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self.model_ is None or self.scoring_ is None or self.normalizer_ is None:
            raise UserInputError("this Detector is not fitted yet; call fit(train) or Detector.load(path) first")

    @property
    def win_size(self) -> int:
        self._check_fitted()
        return self.model_.config.win_size

    @property
    def channel_names(self) -> list[str]:
        return list(self.dataset_.get("channel_names", []))

    @property
    def constant_channels(self) -> list[str]:
        """The channels that never moved in TRAIN (Normalizer.constant_in_train): the model never saw them move."""
        return [name for name, constant in zip(self.channel_names, self.normalizer_.constant_in_train, strict=True)
                if constant]  # fmt: skip

    def to(self, device: str | torch.device) -> Detector:
        """Move the model to a device (auto: CUDA, then MPS, then CPU); return self."""
        self._check_fitted()
        self.model_ = self.model_.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def score_points(
        self,
        series: np.ndarray,
        *,
        batch_size: int | None = None,
        context: DistributedContext | None = None,
        what: str = "the series to score",
    ) -> PointValues:
        """Scores (N,) and per-channel squared reconstruction errors (N, C) of a raw series (N, C); a DataFrame's
        columns are taken by the model's channel names where it has them all (other columns are left out).
        what: the series in the user's words, for the errors (e.g. "TEST of CUSTOM")."""
        self._check_fitted()
        ordered = self._in_channel_order(series)
        # A DataFrame's bad value is named by its own column, as fit names it; an array's by its position.
        names = [str(column) for column in ordered.columns] if isinstance(ordered, pd.DataFrame) else None
        series = check_series(ordered, what, self.model_.config.n_channels, names)
        check_long_enough(len(series), self.win_size, what, SCORING_FIX)
        normalised = self.normalizer_.transform(series)
        return score_series(self.model_, normalised, self.scoring_, batch_size=self._batch_size(batch_size),
                            device=self._device(), context=context)  # fmt: skip

    def score(self, series: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """Per-point anomaly scores (N,) of a raw series (N, C): higher is more anomalous."""
        return self.score_points(series, batch_size=batch_size).scores

    def stream(
        self,
        chunks: Iterable[np.ndarray],
        *,
        batch_size: int | None = None,
        context: DistributedContext | None = None,
        normalised: bool = False,
    ) -> Iterator[PointValues]:
        """score_points over a raw series arriving in consecutive chunks, yielding as soon as points are
        scored; bit-identical to scoring the whole series at once. normalised=True: the chunks are
        already z-scored with normalizer_ (a caller that needs them so itself normalises only once)."""
        self._check_fitted()
        if not normalised:
            chunks = (self.normalizer_.transform(self._checked_chunk(chunk)) for chunk in chunks)
        return score_stream(self.model_, chunks, self.scoring_, batch_size=self._batch_size(batch_size),
                            device=self._device(), context=context)  # fmt: skip

    def _batch_size(self, batch_size: int | None) -> int:
        """The windows per forward pass: the one given, else config.batch_size (0 or -1 must not mean either)."""
        if batch_size is None:
            return self.config.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size <= 0:
            raise UserInputError(f"batch_size must be a positive whole number, got {batch_size!r}")
        return int(batch_size)

    def _in_channel_order(self, series: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
        """A DataFrame holding every channel name of the model, its columns in the model's order; any other
        input as it came (taken by position), with a warning for a DataFrame whose names are other ones."""
        if not isinstance(series, pd.DataFrame) or not self.channel_names:
            return series
        columns = [str(column) for column in series.columns]
        if set(self.channel_names) <= set(columns):
            return series.set_axis(columns, axis=1)[self.channel_names]
        differences = column_differences(columns, self.channel_names)
        warnings.warn(f"the DataFrame's columns are not the model's channels ({differences}): taken by position",
                      stacklevel=3)  # fmt: skip
        return series

    def _checked_chunk(self, chunk: np.ndarray | pd.DataFrame) -> np.ndarray:
        """One chunk of a streamed series, checked as score_points checks a whole one (an empty chunk passes)."""
        chunk = self._in_channel_order(chunk)
        if np.ndim(chunk) == 2 and np.shape(chunk)[0] == 0:  # nothing arrived: only its width must be right
            width = np.shape(chunk)[1]
            if width != self.model_.config.n_channels:
                raise UserInputError(f"a chunk of the series to score has {width} channels but "
                                     f"{self.model_.config.n_channels} were expected")  # fmt: skip
            return np.zeros((0, width), dtype=np.float32)
        return check_series(chunk, "a chunk of the series to score", self.model_.config.n_channels)

    def threshold(self, percentile: float | None = None) -> float:
        """The stored percentile of TRAIN scores (default: config.threshold_percentile)."""
        self._check_fitted()
        percentile = self.config.threshold_percentile if percentile is None else percentile
        stored = (self.train_score_stats_ or {}).get("percentiles", {})
        key = str(float(percentile))
        if not stored:
            raise UserInputError("this detector stores no TRAIN-score percentiles; give a threshold value instead")
        if key not in stored:
            raise UserInputError(
                f"the TRAIN-score percentile {percentile:g} is not stored; choose one of "
                f"{', '.join(f'{float(k):g}' for k in stored)} or give a threshold value"
            )
        return float(stored[key])

    @property
    def threshold_(self) -> float:
        return self.threshold()

    def predict(self, series: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """The decision rule's flags (N,) uint8 for a series that follows TRAIN: 1 where a point's score
        exceeds its threshold (threshold_, raised by the level rule where the recent scores rise)."""
        return self.decision_rule().flags(self.score(series, batch_size=batch_size))[0]

    def decision_rule(self) -> AlarmRule:
        """The rule fitted on the TRAIN scores; for a checkpoint written before the rule was stored, the same
        rule from its stored TRAIN percentile, with no TRAIN scores remembered (it starts from that percentile)."""
        self._check_fitted()
        if self.alarm_rule_ is not None:
            return self.alarm_rule_
        config = self.config
        return AlarmRule(config.alarm_rule, config.threshold_percentile, config.alarm_window,
                         self.threshold(config.threshold_percentile), np.zeros(0))  # fmt: skip

    def rescored(self, scoring: ScoreSettings) -> Detector:
        """A copy that scores another way; it keeps the weights but no TRAIN-score statistics, which
        belong to the old scoring."""
        self._check_fitted()
        if scoring == self.scoring_:
            return self
        other = copy.copy(self)
        other.scoring_, other.train_scores_, other.train_score_stats_, other.alarm_rule_ = scoring, None, None, None
        return other

    # ---- persistence ----------------------------------------------------------------------------

    def to_checkpoint(self) -> dict:
        self._check_fitted()
        return {
            "format_version": FORMAT_VERSION,
            "kind": "best",
            "model_state": {name: tensor.detach().cpu() for name, tensor in self.model_.state_dict().items()},
            "model_config": self.model_.config.to_dict(),
            "train_config": self.config.to_dict(),
            "dataset": dict(self.dataset_),
            "normalization": self.normalizer_.to_record(),
            "train_scores": self.train_score_stats_,
            "alarm_rule": None if self.alarm_rule_ is None else self.alarm_rule_.to_checkpoint(),
            "train_channel_error": torch.from_numpy(np.asarray(self.train_channel_error_, dtype=np.float64)),
            "scoring": self.scoring_.to_dict(),
            "best_epoch": self.best_epoch_,
            "history": self.history_,
            "versions": self.versions_,
            "created": self.created_,  # UTC, for inspect_checkpoint.py
        }

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically: an interrupted save never replaces a good file with a broken one."""
        return save_checkpoint(self.to_checkpoint(), path)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> Detector:
        config = DetectorConfig.from_dict({**checkpoint["model_config"], **checkpoint.get("train_config", {})})
        model = AnomalyTransformer(ModelConfig.from_dict(checkpoint["model_config"]))
        try:
            model.load_state_dict(checkpoint["model_state"])
        except RuntimeError as error:  # load_checkpoint's schema check catches this first for files
            reason = str(error).strip().splitlines()[-1].strip()
            raise UserInputError(
                f"the checkpoint's weights do not fit its model_config ({reason}); retrain it"
            ) from None
        detector = cls(config, model=model.eval(), normalizer=Normalizer.from_record(checkpoint["normalization"]))
        detector.scoring_ = stored_scoring(checkpoint)
        detector.train_score_stats_ = checkpoint.get("train_scores")
        rule = checkpoint.get("alarm_rule")
        detector.alarm_rule_ = None if rule is None else AlarmRule.from_checkpoint(rule)
        channel_error = checkpoint.get("train_channel_error")
        detector.train_channel_error_ = None if channel_error is None else channel_error.numpy()
        detector.history_ = list(checkpoint.get("history", []))
        detector.best_epoch_ = checkpoint.get("best_epoch", 0)
        detector.dataset_ = dict(checkpoint["dataset"])
        detector.created_ = checkpoint.get("created")
        detector.versions_ = dict(checkpoint.get("versions", {}))
        return detector

    @classmethod
    def load(cls, path: str | Path, dataset: TimeSeriesDataset | None = None, device: str = "cpu") -> Detector:
        """Rebuild a saved detector; with `dataset`, first check that it was trained on those data."""
        return cls.from_checkpoint(load_checkpoint(path, dataset)).to(device)


def stored_scoring(checkpoint: dict) -> ScoreSettings:
    """How the checkpoint's TRAIN scores were made; checkpoints from before --score-channels and
    --smooth scored every channel, unsmoothed."""
    if "scoring" in checkpoint:
        return ScoreSettings.from_dict(checkpoint["scoring"])
    trained_with = checkpoint.get("train_config", {})
    return ScoreSettings(trained_with.get("score_variant", "paper"), trained_with.get("temperature", 50.0), None, 0)
