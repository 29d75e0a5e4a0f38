"""Every setting of a Detector, each default written once; presets; the command-line flags built from them.

A field's metadata carries its help text (and, where it has them, its choices); `add_config_flags`
turns the fields into argparse flags whose defaults and help come from here, and
`config_from_flags` layers defaults, then a preset, then the flags a user gave.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

import torch

from model.alarm_rule import ALARM_RULES, DEFAULT_ALARM_RULE, DEFAULT_ALARM_WINDOW, check_alarm_settings, rules_help
from model.scores import DEFAULT_SCORE, SCORES
from model.transformer import ModelConfig
from runtime.errors import UserInputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _setting(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class DetectorConfig:
    """Architecture, optimisation and scoring of one Anomaly Transformer; defaults are the original README's.

    Each field is a flag of train.py (`win_size` is `--win-size`), and errors name the flag: from Python,
    read `--win-size` as the field `win_size`."""

    # Architecture (paper §3.1).
    win_size: int = _setting(100, "sliding window length")
    d_model: int = _setting(256, "model dimension")
    n_heads: int = _setting(8, "attention heads; must divide --d-model")
    e_layers: int = _setting(3, "encoder layers")
    d_ff: int = _setting(512, "feed-forward dimension")
    dropout: float = _setting(0.0, "dropout rate")
    # Optimisation (paper §3.2).
    epochs: int = _setting(10, "maximum epochs; lr halves after each")
    batch_size: int = _setting(128, "batch size")
    lr: float = _setting(1e-4, "Adam learning rate")
    k: float = _setting(3.0, "weight of the association discrepancy in the minimax losses")
    val_ratio: float = _setting(0.2, "share of TRAIN, from its end, held out for early stopping; 0: train on all")
    patience: int = _setting(3, "epochs without validation improvement before stopping")
    train_stride: int = _setting(1, "step between training windows")
    seed: int = _setting(0, "random seed; CPU runs with the same seed are identical")
    device: str = _setting("auto", "where to train (auto: CUDA, then MPS, then CPU)", choices=DEVICES)
    amp: bool = _setting(False, "mixed precision on CUDA (bfloat16 where supported, else float16)")
    num_workers: int = _setting(0, "DataLoader worker processes")
    deterministic: bool = _setting(
        False, "CUDA: deterministic kernels only, so a seed fixes the weights and --resume is exact"
    )
    # Scoring (paper §3.3 and the registered alternatives).
    score: str = _setting(DEFAULT_SCORE, "anomaly score stored with the model", choices=tuple(SCORES))
    temperature: float = _setting(50.0, "softmax temperature of the paper score")
    score_channels: str | None = _setting(
        None,
        "channels whose reconstruction error counts: all, target (SMAP/MSL: the telemetry value), or "
        "comma-separated names/indices",
    )
    smooth: int | None = _setting(
        None, "centred moving average of the scores over N points, 0 = off"
    )
    threshold_percentile: float = _setting(99.0, "percentile of TRAIN scores the decision rule starts from")
    alarm_rule: str = _setting(
        DEFAULT_ALARM_RULE,
        f"decision rule stored with the model: {rules_help()}",
        choices=ALARM_RULES,
    )
    alarm_window: int = _setting(DEFAULT_ALARM_WINDOW, "recent scores the guarded and budget rules read, in points")

    def __post_init__(self) -> None:
        # From Python a list of channels is the natural form; the flag's text is what is checked and stored.
        if isinstance(self.score_channels, list | tuple):
            self.score_channels = ",".join(str(channel) for channel in self.score_channels)

    def model_config(self, n_channels: int) -> ModelConfig:
        return ModelConfig(
            n_channels=n_channels,
            win_size=self.win_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            e_layers=self.e_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
        )

    def validate(self, check_device: bool = True) -> DetectorConfig:
        """Raise UserInputError naming the first setting of the wrong type or out of range; return self.

        check_device: also refuse a --device this machine does not have (cuda without a GPU, mps off a Mac).
        """
        for spec in fields(self):
            problem = type_problem(spec.type, getattr(self, spec.name))
            if problem:
                raise UserInputError(f"--{_flag(spec.name)} must be {problem}, got {getattr(self, spec.name)!r}")
        for name in ("win_size", "d_model", "n_heads", "e_layers", "d_ff", "epochs", "batch_size", "patience"):
            if getattr(self, name) <= 0:
                raise UserInputError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        if self.train_stride <= 0:
            raise UserInputError(f"--train-stride must be positive, got {self.train_stride}")
        if self.d_model % self.n_heads:
            # The nearest head count at most the one asked for that divides d_model (8 need not: 60 % 8).
            fits = max(heads for heads in range(1, min(self.n_heads, self.d_model) + 1) if self.d_model % heads == 0)
            raise UserInputError(
                f"--n-heads {self.n_heads} does not divide --d-model {self.d_model}; pick a divisor such as {fits}"
            )
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.lr > 0:
            raise UserInputError(f"--lr must be positive, got {self.lr}")
        if not self.k >= 0:
            raise UserInputError(f"--k must be 0 or positive, got {self.k}")
        if not self.temperature > 0:
            raise UserInputError(f"--temperature must be positive, got {self.temperature}")
        if not 0 <= self.val_ratio < 1:
            raise UserInputError(f"--val-ratio must be in [0, 1), got {self.val_ratio}")
        if not 0 <= self.seed < 2**32:
            raise UserInputError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.num_workers < 0:
            raise UserInputError(f"--num-workers must be 0 (load in this process) or positive, got {self.num_workers}")
        if self.score not in SCORES:
            raise UserInputError(f"unknown score {self.score!r}; choose one of {', '.join(SCORES)}")
        if self.device not in DEVICES:
            raise UserInputError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.smooth is not None and self.smooth < 0:
            raise UserInputError(f"--smooth must be 0 (off) or a number of points, got {self.smooth}")
        if not 0 < self.threshold_percentile < 100:
            raise UserInputError(f"--threshold-percentile must be in (0, 100), got {self.threshold_percentile}")
        check_alarm_settings(self.alarm_rule, self.alarm_window)
        if check_device:
            check_device_available(self.device)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DetectorConfig:
        """Settings as stored in a checkpoint; names of older checkpoints are read too, unknown keys ignored."""
        values = dict(values)
        if "score_variant" in values:  # the field's name before it matched the --score flag
            values.setdefault("score", values.pop("score_variant"))
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


# Each preset may set any field. paper: the reference's recipe (all of TRAIN, the paper score);
# small / medium / large: the original README's sizes; fleet: a small model per entity, as
# measured per entity on MSL and SMAP (docs/research-log.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "d_model": 512,
        "n_heads": 8,
        "e_layers": 3,
        "d_ff": 512,
        "win_size": 100,
        "dropout": 0.0,
        "batch_size": 256,
        "epochs": 3,
        "val_ratio": 0.0,
        "score": "paper",
    },
    "small": {"d_model": 128, "e_layers": 2},
    "medium": {},
    "large": {"d_model": 512, "e_layers": 4},
    "fleet": {"d_model": 64, "n_heads": 4, "e_layers": 2, "d_ff": 64, "epochs": 2, "batch_size": 32, "lr": 1e-3,
              "train_stride": 5, "val_ratio": 0.0},
}
# Where the reference's recipe differs by dataset: SMD trains 10 epochs on windows 100 steps apart.
DATASET_PRESETS: dict[tuple[str, str], dict[str, Any]] = {("paper", "SMD"): {"epochs": 10, "train_stride": 100}}


def preset_values(preset: str | None, dataset_name: str = "") -> dict[str, Any]:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise UserInputError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    family = dataset_name.upper().split("_")[0]  # an entity (SMD_machine-1-1) follows its dataset
    return {**PRESETS[preset], **DATASET_PRESETS.get((preset, family), {})}


def type_problem(annotation: str, value: Any) -> str | None:
    """What a value of a field annotated `annotation` ("int", "float", "str | None", ...) should be, when
    it is not; None when it fits. Floats must be finite; a bool is not a number."""
    kinds = [kind.strip() for kind in str(annotation).split("|")]
    if value is None:
        return None if "None" in kinds else "given"
    if isinstance(value, bool):
        return None if "bool" in kinds else ("true or false" if kinds == ["bool"] else f"a {kinds[0]}, not a bool")
    if "int" in kinds and isinstance(value, int):
        return None
    if "float" in kinds and isinstance(value, int | float):
        return None if math.isfinite(value) else "a finite number"
    if "str" in kinds and isinstance(value, str):
        return None
    wanted = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false"}
    return " or ".join(wanted.get(kind, kind) for kind in kinds if kind != "None")


def check_device_available(name: str) -> None:
    """Refuse a device this torch build cannot use, before any work (torch would fail later with an assert)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(
            f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu or auto"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserInputError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def describe_preset(name: str) -> str:
    values = PRESETS[name]
    return ", ".join(f"{_flag(key)} {value}" for key, value in values.items()) or "the defaults"


def _shown(value: Any) -> str:
    """A default as a person writes it: 3 not 3.0, 1e-4 not 0.0001."""
    if not isinstance(value, float):
        return str(value)
    if value and abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return f"{value:g}"


def add_config_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """One flag per config field (or per field in `names`); defaults and help come from DetectorConfig.

    Every flag defaults to None on the parser, so config_from_flags can tell a flag the user gave
    from one a preset should fill.
    """
    for spec in fields(DetectorConfig):
        if names is not None and spec.name not in names:
            continue
        default = spec.default if spec.default is not MISSING else None
        flag = f"--{_flag(spec.name)}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=spec.metadata["help"])
            continue
        if default is None:  # score_channels, smooth: each score brings its own
            shown = "the score's own: " + ", ".join(f"{s.name} {getattr(s, spec.name.split('_')[-1])}" for s in
                                                     SCORES.values())  # fmt: skip
        else:
            shown = _shown(default)
        help_text = f"{spec.metadata['help']} (default: {shown})".replace("%", "%%")
        kind = {"int": int, "float": float}.get(str(spec.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, default=None, choices=spec.metadata.get("choices"), help=help_text)


def config_from_flags(args: argparse.Namespace, preset: str | None = None, dataset_name: str = "") -> DetectorConfig:
    """The defaults, then the preset (with its dataset-specific values), then every flag given explicitly."""
    given = {spec.name: getattr(args, spec.name) for spec in fields(DetectorConfig) if hasattr(args, spec.name)}
    explicit = {name: value for name, value in given.items() if value is not None}
    return replace(DetectorConfig(), **{**preset_values(preset, dataset_name), **explicit})
