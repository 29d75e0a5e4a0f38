"""What a checkpoint, a fleet bundle and a resumable state must hold, checked when they are loaded.

A file that loads safely (weights_only) may still have been damaged or edited by hand: a key
missing, a number stored as text, a channel index past the last channel, weights of another
shape, a window that disagrees with the settings it was trained with. Each such file is refused
with one error that names the key, before anything is built from it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from model.alarm_rule import ALARM_RULES
from model.config import DetectorConfig, type_problem
from model.scores import SCORES
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.errors import UserInputError

FORMAT_VERSION = 1
ARCHITECTURE = ("n_channels", "win_size", "d_model", "n_heads", "e_layers", "d_ff")
NORMALISATIONS = ("entity", "global")


class Checker:
    """Raises one UserInputError naming the file, the key and the fix."""

    def __init__(self, path: str | Path, fix: str, what: str = "checkpoint") -> None:
        self.path, self.fix, self.what = path, fix, what

    def fail(self, key: str, problem: str) -> None:
        raise UserInputError(f"{self.what} {self.path} is damaged or was edited: {key} {problem}; {self.fix}")

    def get(self, record: dict, key: str, where: str, kinds: type | tuple[type, ...], optional: bool = False):
        """record[key], which must be one of `kinds` (a bool is never a number); None if optional and absent."""
        name = f"{where}[{key!r}]" if where else repr(key)
        if key not in record:
            if optional:
                return None
            self.fail(name, "is missing")
        value = record[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            wanted = " or ".join(kind.__name__ for kind in _tuple(kinds))
            self.fail(name, f"is {type(value).__name__} {_shown(value)}, not {wanted}")
        if isinstance(value, float) and not math.isfinite(value) and key not in ("best_val",):
            self.fail(name, f"is {value}, not a finite number")
        return value

    def positive_int(self, record: dict, key: str, where: str) -> int:
        value = self.get(record, key, where, int)
        if value <= 0:
            self.fail(f"{where}[{key!r}]", f"is {value}, not a positive whole number")
        return value

    def tensor(self, record: dict, key: str, where: str, shape: tuple[int, ...] | None, optional: bool = False):
        value = self.get(record, key, where, torch.Tensor, optional)
        if value is None:
            return None
        name = f"{where}[{key!r}]"
        if shape is not None and tuple(value.shape) != shape:
            self.fail(name, f"has shape {tuple(value.shape)}, not {shape}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            self.fail(name, "holds NaN or infinite values")
        return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_version(check: Checker, record: dict) -> None:
    version = check.get(record, "format_version", "", int)
    if version != FORMAT_VERSION:
        raise UserInputError(
            f"{check.what} {check.path} has format_version {version}, but this tool reads version {FORMAT_VERSION} "
            "only; retrain it with this version, or use the version of the tool that wrote it"
        )


@functools.lru_cache(maxsize=8)
def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of a model built from `config`.

    Built on the CPU, under 0.1 s even at the paper's size: on the meta device its factory calls would
    import torch._dynamo, which takes 2 to 3 s of every evaluate, detect and inspect.
    """
    model = AnomalyTransformer(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_model_config(check: Checker, record: dict, key: str = "model_config") -> ModelConfig:
    values = check.get(record, key, "", dict)
    for name in ARCHITECTURE:
        check.positive_int(values, name, key)
    dropout = check.get(values, "dropout", key, (int, float), optional=True)
    if dropout is not None and not 0 <= dropout < 1:
        check.fail(f"{key}['dropout']", f"is {dropout}, not in [0, 1)")
    if values["d_model"] % values["n_heads"]:
        check.fail(f"{key}['n_heads']", f"({values['n_heads']}) does not divide d_model ({values['d_model']})")
    return ModelConfig.from_dict(values)


def _least_build_size(config: ModelConfig) -> int:
    """Floats that building a model of `config` allocates at the least: each layer's four d_model x d_model
    projections, two feed-forward maps and |i - j| table."""
    d_model = config.d_model
    return config.e_layers * (4 * d_model * d_model + 2 * d_model * config.d_ff + config.win_size**2)


def check_weights(check: Checker, record: dict, key: str, config: ModelConfig) -> None:
    """Every tensor the model needs, of the shape its config gives it, finite, and nothing else."""
    weights = check.get(record, key, "", dict)
    stored = sum(value.numel() for value in weights.values() if isinstance(value, torch.Tensor))
    least = _least_build_size(config)
    if least > 8 * stored + 2**20:  # the shapes come from a built model: a damaged config must not build a huge one
        check.fail(key, f"holds {stored:,} values, far fewer than a model of this model_config ({least:,} at the "
                        "least): the config or the weights are damaged")  # fmt: skip
    expected = expected_shapes(config)
    for name, shape in expected.items():
        check.tensor(weights, name, key, shape)
    unknown = [name for name in weights if name not in expected]
    if unknown:
        check.fail(f"{key}[{unknown[0]!r}]", "is not a weight of this model")


def check_train_config(check: Checker, values: dict, key: str, model_config: ModelConfig | None) -> DetectorConfig:
    """Known settings of the right types and ranges; the architecture ones must agree with the model's."""
    known = DetectorConfig.__dataclass_fields__
    for name, value in values.items():
        if name in known:
            problem = type_problem(known[name].type, value)
            if problem:
                check.fail(f"{key}[{name!r}]", f"is {_shown(value)}, not {problem}")
    if model_config is not None:
        for name in (*ARCHITECTURE[1:], "dropout"):
            if name in values and values[name] != getattr(model_config, name):
                check.fail(
                    f"{key}[{name!r}]",
                    f"is {values[name]!r} but model_config[{name!r}] is {getattr(model_config, name)!r}: they disagree",
                )
    config = DetectorConfig.from_dict({**(model_config.to_dict() if model_config else {}), **values})
    try:
        config.validate(check_device=False)
    except UserInputError as error:
        check.fail(key, f"holds a setting out of range ({error})")
    return config


def check_dataset_record(check: Checker, record: dict, n_channels: int, win_size: int | None) -> dict:
    dataset = check.get(record, "dataset", "", dict)
    check.get(dataset, "name", "dataset", str)
    check.get(dataset, "fingerprint", "dataset", str)
    check.get(dataset, "train_fingerprint", "dataset", str, optional=True)  # absent in files written before it
    if check.get(dataset, "n_channels", "dataset", int) != n_channels:
        check.fail("dataset['n_channels']", f"is {dataset['n_channels']} but the model has {n_channels} channels")
    names = check.get(dataset, "channel_names", "dataset", list, optional=True)
    if names is not None and (len(names) != n_channels or not all(isinstance(name, str) for name in names)):
        check.fail("dataset['channel_names']", f"is not a list of {n_channels} names")
    length = check.get(dataset, "train_length", "dataset", int, optional=True)
    if length is not None and win_size is not None and length < win_size:
        check.fail("dataset['train_length']", f"({length}) is shorter than the window ({win_size}) it was trained with")
    return dataset


def check_scoring(check: Checker, record: dict, n_channels: int) -> None:
    scoring = check.get(record, "scoring", "", dict, optional=True)
    if scoring is None:
        return
    score = check.get(scoring, "variant", "scoring", str)  # the score's name, under its key of old
    if score not in SCORES:
        check.fail("scoring['variant']", f"is {score!r}, not one of {', '.join(SCORES)}")
    temperature = check.get(scoring, "temperature", "scoring", (int, float))
    if temperature <= 0:
        check.fail("scoring['temperature']", f"is {temperature}, not positive")
    if check.get(scoring, "smooth", "scoring", int) < 0:
        check.fail("scoring['smooth']", f"is {scoring['smooth']}, not 0 or a number of points")
    channels = check.get(scoring, "channels", "scoring", (list, type(None)))
    if channels is not None:
        if not channels or not all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
            check.fail("scoring['channels']", f"is {_shown(channels)}, not a list of channel indices")
        outside = [c for c in channels if not 0 <= c < n_channels]
        if outside:
            check.fail("scoring['channels']", f"names channel {outside[0]}, outside 0..{n_channels - 1}")
        if len(set(channels)) != len(channels):
            check.fail("scoring['channels']", "lists a channel twice")


def check_train_scores(check: Checker, record: dict) -> None:
    stats = check.get(record, "train_scores", "", (dict, type(None)), optional=True)
    if stats is None:
        return
    if check.get(stats, "count", "train_scores", int) <= 0:
        check.fail("train_scores['count']", f"is {stats['count']}, not positive")
    check.get(stats, "mean", "train_scores", (int, float))
    check.get(stats, "std", "train_scores", (int, float))
    percentiles = check.get(stats, "percentiles", "train_scores", dict)
    for key in percentiles:
        try:
            valid = 0 < float(key) < 100
        except (TypeError, ValueError):
            valid = False
        if not valid:
            check.fail(f"train_scores['percentiles'][{key!r}]", "is not a percentile in (0, 100)")
        check.get(percentiles, key, "train_scores['percentiles']", (int, float))


def check_alarm_rule(check: Checker, record: dict) -> None:
    """The fitted decision rule (model/alarm_rule.py); absent in checkpoints written before it existed."""
    rule = check.get(record, "alarm_rule", "", (dict, type(None)), optional=True)
    if rule is None:
        return
    if check.get(rule, "kind", "alarm_rule", str) not in ALARM_RULES:
        check.fail("alarm_rule['kind']", f"is {rule['kind']!r}, not one of {', '.join(ALARM_RULES)}")
    if not 0 < check.get(rule, "percentile", "alarm_rule", (int, float)) < 100:
        check.fail("alarm_rule['percentile']", "is not a percentile in (0, 100)")
    window = check.positive_int(rule, "window", "alarm_rule")
    check.get(rule, "threshold", "alarm_rule", (int, float))
    tail = check.tensor(rule, "train_tail", "alarm_rule", None)
    if tail.dim() != 1 or len(tail) > window or tail.dtype != torch.float64:
        check.fail("alarm_rule['train_tail']", f"is not a float64 vector of at most {window} TRAIN scores")
    spread = check.get(rule, "train_spread", "alarm_rule", (int, float), optional=True)  # absent before the guard
    if spread is not None and not spread >= 0:
        check.fail("alarm_rule['train_spread']", f"is {spread}, not a spread of 0 or more")


def check_detector(check: Checker, record: dict, settings_shared: bool = False) -> None:
    """One model's record: a single model's checkpoint, or one entity's in a bundle (settings_shared: its
    train_config is the bundle's, checked once there)."""
    model_config = check_model_config(check, record)
    n_channels = model_config.n_channels
    train_config = None if settings_shared else check.get(record, "train_config", "", dict, True)
    if train_config is not None:
        check_train_config(check, train_config, "train_config", model_config)
    check_weights(check, record, "model_state", model_config)
    check_dataset_record(check, record, n_channels, model_config.win_size)
    normalization = check.get(record, "normalization", "", dict)
    check.tensor(normalization, "mean", "normalization", (n_channels,))
    std = check.tensor(normalization, "std", "normalization", (n_channels,))
    if not bool((std > 0).all()):
        check.fail("normalization['std']", "holds a value that is not positive")
    check.tensor(normalization, "constant", "normalization", (n_channels,), optional=True)
    check_scoring(check, record, n_channels)
    check_train_scores(check, record)
    check_alarm_rule(check, record)
    error = check.tensor(record, "train_channel_error", "", (n_channels,), optional=True)
    if error is not None and not bool((error >= 0).all()):
        check.fail("'train_channel_error'", "holds a negative value")
    check.get(record, "history", "", list, optional=True)
    best_epoch = check.get(record, "best_epoch", "", int, optional=True)
    if best_epoch is not None and best_epoch < 0:
        check.fail("'best_epoch'", f"is {best_epoch}, not 0 or positive")


# What a damaged file of each kind is called, and its fix.
CHECKPOINT_FILE = ("retrain it, or restore the file train.py wrote", "checkpoint")
BUNDLE_FILE = ("retrain it (train.py --per-entity), or restore the file train.py wrote", "fleet bundle")


def check_model_file(record: dict, path: str | Path) -> None:
    """A model file train.py writes, as a map of entity to model record, each record checked by check_detector:
    one model's checkpoint is a single record that holds its own settings; a fleet bundle holds one record
    per entity and their settings once."""
    bundle = record.get("kind") == "fleet"
    check = Checker(path, *(BUNDLE_FILE if bundle else CHECKPOINT_FILE))
    check_version(check, record)
    for entity_check, model in _bundle_entities(check, record) if bundle else [(check, record)]:
        check_detector(entity_check, model, settings_shared=bundle)


def _bundle_entities(check: Checker, bundle: dict) -> list[tuple[Checker, dict]]:
    """A bundle's own keys checked; each entity's record, with a Checker that names the entity, once its
    model_config is one that the shared settings describe."""
    check.get(bundle, "dataset", "", str)
    config = check.get(bundle, "config", "", dict)
    check_train_config(check, config, "config", None)
    normalisation = check.get(bundle, "normalisation", "", str, optional=True)
    if normalisation is not None and normalisation not in NORMALISATIONS:
        check.fail("'normalisation'", f"is {normalisation!r}, not one of {', '.join(NORMALISATIONS)}")
    entities = []
    for name, record in check.get(bundle, "entities", "", dict).items():
        entity_check = Checker(f"{check.path} (entity {name})", check.fix, check.what)
        if not isinstance(record, dict):
            entity_check.fail(f"entities[{name!r}]", "is not a record")
        entity_check.get(record, "model_config", "", dict)
        for key in ARCHITECTURE[1:]:  # the shared settings must describe every entity's model
            if key in config and record["model_config"].get(key) != config[key]:
                entity_check.fail(f"model_config[{key!r}]", f"disagrees with the bundle's config[{key!r}]")
        entities.append((entity_check, record))
    skipped = check.get(bundle, "skipped", "", dict, optional=True) or {}
    if not all(isinstance(reason, str) for reason in skipped.values()):
        check.fail("'skipped'", "is not a map of entity to reason")
    order = check.get(bundle, "order", "", list, optional=True)
    if order is not None and not all(isinstance(name, str) for name in order):
        check.fail("'order'", "is not a list of entity names")
    return entities


def check_last_state(state: dict, path: str | Path) -> None:
    """A resumable state: its settings, weights, optimiser and where in the run it stopped."""
    check = Checker(path, "start without --resume", "resumable state")
    check_version(check, state)
    model_config = check_model_config(check, state)
    train_config = check_train_config(check, check.get(state, "train_config", "", dict), "train_config", model_config)
    check_weights(check, state, "model_state", model_config)
    best = check.get(state, "best_state", "", (dict, type(None)))
    if best is not None:
        check_weights(check, state, "best_state", model_config)
    dataset = check.get(state, "dataset", "", dict)
    check.get(dataset, "name", "dataset", str)
    check.get(dataset, "fingerprint", "dataset", str)
    check.get(dataset, "train_fingerprint", "dataset", str, optional=True)  # absent in files written before it
    if check.get(dataset, "n_channels", "dataset", int) != model_config.n_channels:
        check.fail("dataset['n_channels']", f"is {dataset['n_channels']} but the model has {model_config.n_channels}")
    for key in ("optimizer_state", "scaler_state", "rng"):
        check.get(state, key, "", dict)
    history = check.get(state, "history", "", list)
    if not all(isinstance(record, dict) for record in history):
        check.fail("'history'", "is not a list of epoch records")
    epoch = check.get(state, "epoch", "", int)
    if not 1 <= epoch <= train_config.epochs + 1:
        check.fail("'epoch'", f"is {epoch}, not an epoch of this run (1 to {train_config.epochs}, "
                   f"or {train_config.epochs + 1} once they are done)")  # fmt: skip
    if check.get(state, "step", "", int) < 0:
        check.fail("'step'", f"is {state['step']}, not 0 or positive")
    for key in ("best_epoch", "bad_epochs"):
        if check.get(state, key, "", int) < 0:
            check.fail(repr(key), f"is {state[key]}, not 0 or positive")
    best_val = check.get(state, "best_val", "", (int, float))
    if math.isnan(best_val):
        check.fail("'best_val'", "is NaN")
    sums = check.get(state, "sums", "", list)
    if len(sums) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in sums):
        check.fail("'sums'", "is not a list of 4 numbers")
    if check.get(state, "seconds", "", (int, float)) < 0:
        check.fail("'seconds'", "is negative")
    finished = check.get(state, "finished", "", bool)
    if finished and best is None:
        check.fail("'best_state'", "is missing although the run is marked finished")
