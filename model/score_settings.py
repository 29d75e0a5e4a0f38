"""How a trained model's outputs become one anomaly score per point: the score, channels and smoothing.

The defaults follow the score (model/scores.py): `paper` keeps the reference's criterion exactly
(every channel, no smoothing); the others score the dataset's target channels (SMAP/MSL: the
telemetry value, not the command flags) and smooth with a centred 50-point moving average.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.scores import SCORES
from runtime.errors import UserInputError


@dataclass(frozen=True)
class ScoreSettings:
    """A score resolved against a dataset: its name, temperature, channel indices and smoothing span."""

    score: str  # a name in model.scores.SCORES
    temperature: float
    channels: tuple[int, ...] | None  # channels whose reconstruction error counts; None: all
    smooth: int  # centred moving-average span over points; 0 or 1: none

    def to_dict(self) -> dict:
        """As checkpoints and reports store it; the score's name under its key of old, "variant"."""
        channels = None if self.channels is None else list(self.channels)
        return {"variant": self.score, "temperature": self.temperature, "channels": channels, "smooth": self.smooth}

    @classmethod
    def from_dict(cls, values: dict) -> ScoreSettings:
        channels = values["channels"]
        return cls(
            score=values["variant"],
            temperature=float(values["temperature"]),
            channels=None if channels is None else tuple(int(c) for c in channels),
            smooth=int(values["smooth"]),
        )

    def describe(self) -> str:
        channels = "all channels" if self.channels is None else f"channels {list(self.channels)}"
        smoothing = f"smoothed over {self.smooth} points" if self.smooth > 1 else "unsmoothed"
        # Only the paper score reads the temperature; naming it there tells scorings at two temperatures apart.
        name = f"{self.score} score" + (f" at temperature {self.temperature:g}" if self.score == "paper" else "")
        return f"{name}, {channels}, {smoothing}"


def check_score(score: str) -> str:
    if score not in SCORES:
        raise UserInputError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    return score


def check_temperature(temperature: float) -> float:
    """The paper score's softmax temperature: a positive, finite number."""
    if not 0 < temperature < float("inf"):
        raise UserInputError(f"--temperature must be a positive finite number, got {temperature}")
    return temperature


def check_smooth(span: int, length: int | None = None) -> int:
    """A span of 0 (off) up to the series length, when known (a longer one only averages everything)."""
    if span < 0:
        raise UserInputError(f"--smooth must be 0 (off) or a number of points, got {span}")
    if length is not None and span > length:
        raise UserInputError(f"--smooth {span} is longer than the {length} TRAIN points; use at most {length}")
    return span


def resolve_channels(spec: str, channel_names: list[str], target_channels: list[int] | None) -> tuple[int, ...] | None:
    """'all' -> None; 'target' -> the dataset's target channels (all when it names none);
    otherwise a comma-separated list of channel names or 0-based indices."""
    spec = spec.strip()
    if spec == "all":
        return None
    if spec == "target":
        return None if not target_channels else tuple(target_channels)
    chosen = []
    for item in (part.strip() for part in spec.split(",")):
        if item in channel_names:
            chosen.append(channel_names.index(item))
        elif item.isdigit() and int(item) < len(channel_names):
            chosen.append(int(item))
        else:
            shown = ", ".join(channel_names[:6]) + (", ..." if len(channel_names) > 6 else "")
            raise UserInputError(
                f"--score-channels: no channel {item!r}; use all, target, or names/indices 0-{len(channel_names) - 1} "
                f"({shown})"
            )
    if len(set(chosen)) != len(chosen):
        raise UserInputError(f"--score-channels lists a channel twice: {spec!r}")
    return tuple(sorted(chosen))


def resolve_score_settings(
    score: str,
    channel_spec: str | None,
    smooth: int | None,
    channel_names: list[str],
    target_channels: list[int] | None,
    temperature: float,
    train_length: int | None = None,
) -> ScoreSettings:
    """The score's own defaults (model.scores.SCORES), overridden by what the user gave; a given --smooth
    may not exceed train_length."""
    definition = SCORES[check_score(score)]
    default_spec, default_smooth = definition.channels, definition.smooth
    return ScoreSettings(
        score=score,
        temperature=temperature,
        channels=resolve_channels(channel_spec or default_spec, channel_names, target_channels),
        smooth=default_smooth if smooth is None else check_smooth(smooth, train_length),
    )


def override_score_settings(
    stored: ScoreSettings,
    score: str | None,
    channel_spec: str | None,
    smooth: int | None,
    channel_names: list[str],
    target_channels: list[int] | None,
    train_length: int | None = None,
    temperature: float | None = None,
) -> ScoreSettings:
    """The checkpoint's scoring, changed only where the user asked: a new score brings its own
    defaults (model.scores.SCORES); --score-channels, --smooth (at most train_length) and --temperature
    override single fields."""
    if score is not None and score != stored.score:
        stored = resolve_score_settings(score, None, None, channel_names, target_channels, stored.temperature)
    channels = (
        stored.channels if channel_spec is None else resolve_channels(channel_spec, channel_names, target_channels)
    )
    return ScoreSettings(
        score=stored.score,
        temperature=stored.temperature if temperature is None else check_temperature(temperature),
        channels=channels,
        smooth=stored.smooth if smooth is None else check_smooth(smooth, train_length),
    )
