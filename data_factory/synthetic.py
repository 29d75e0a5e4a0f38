"""SYNTH: a seeded multivariate series with labelled, injected anomalies of five kinds.

Every channel mixes a few shared seasonal factors (cross-channel correlation) with a seasonal
term of its own, a slow trend and Gaussian noise. TRAIN is clean; TEST carries anomalies:

- spike:       one to three points far outside the channel's range;
- level_shift: a stretch offset by a few standard deviations;
- frequency:   a stretch where the channel oscillates twice as fast;
- shape:       a stretch where the sensor sticks at one value or turns into a sawtooth;
- timing:      a stretch where one sensor lags ever further behind the others. Each value stays
               in its normal range; only its timing relative to the other sensors is wrong,
               the kind the association discrepancy is meant to catch.

Every anomaly records its kind, its inclusive [start, end] and the channels it touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANOMALY_KINDS = ("spike", "level_shift", "frequency", "shape", "timing")


@dataclass(frozen=True)
class SynthSpec:
    n_channels: int = 12
    train_length: int = 10_000
    test_length: int = 10_000
    n_anomalies: int = 20
    n_factors: int = 3
    noise: float = 0.1
    seed: int = 0


class _CleanSignal:
    """The noise-free series as a function of (possibly fractional) time, per channel."""

    def __init__(self, spec: SynthSpec, rng: np.random.Generator) -> None:
        self.factor_periods = rng.uniform(40, 400, size=spec.n_factors)
        self.factor_phases = rng.uniform(0, 2 * np.pi, size=spec.n_factors)
        self.mixing = rng.normal(size=(spec.n_factors, spec.n_channels)) / np.sqrt(spec.n_factors)
        self.own_periods = rng.uniform(20, 150, size=spec.n_channels)
        self.own_phases = rng.uniform(0, 2 * np.pi, size=spec.n_channels)
        self.own_amplitudes = rng.uniform(0.2, 0.6, size=spec.n_channels)
        total = spec.train_length + spec.test_length
        self.trend_slopes = rng.uniform(-0.3, 0.3, size=spec.n_channels) / total

    def __call__(self, time: np.ndarray, channel: int | None = None) -> np.ndarray:
        """time: (T,) -> (T, C), or (T,) for one channel."""
        time = np.asarray(time, dtype=np.float64)[:, None]
        factors = np.sin(2 * np.pi * time / self.factor_periods + self.factor_phases)  # (T, F)
        own = self.own_amplitudes * np.sin(2 * np.pi * time / self.own_periods + self.own_phases)
        values = factors @ self.mixing + own + self.trend_slopes * time  # (T, C)
        return values if channel is None else values[:, channel]


def _inject(
    kind: str,
    test: np.ndarray,
    start: int,
    length: int,
    channels: np.ndarray,
    clean: _CleanSignal,
    offset: int,
    scale: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Overwrite test[start:start+length, channels] in place with an anomaly of this kind."""
    stretch = slice(start, start + length)
    time = np.arange(start, start + length) + offset  # absolute time of the stretch
    for channel in channels:
        sign = rng.choice([-1.0, 1.0])
        if kind == "spike":
            test[stretch, channel] += sign * rng.uniform(4, 6) * scale[channel]
        elif kind == "level_shift":
            test[stretch, channel] += sign * rng.uniform(1.5, 3) * scale[channel]
        elif kind == "frequency":
            faster = time[0] + 2.0 * (time - time[0])
            test[stretch, channel] += clean(faster, channel) - clean(time, channel)
        elif kind == "shape":
            if rng.random() < 0.5:  # stuck sensor: noise-free and flat
                test[stretch, channel] = test[start, channel]
            else:  # sawtooth of the channel's own amplitude
                ramp = (np.arange(length) % 25) / 25.0
                test[stretch, channel] = test[start, channel] + (2 * ramp - 1) * scale[channel]
        elif kind == "timing":
            lag = np.linspace(0, rng.uniform(15, 30), length)
            test[stretch, channel] += clean(time - lag, channel) - clean(time, channel)


def generate_synthetic(spec: SynthSpec | None = None) -> dict:
    """Build SYNTH deterministically from spec.seed.

    Returns a dict with train (N_train, C) and test (N_test, C) float32 arrays, test_labels
    (N_test,) uint8, anomalies: a list of {kind, start, end, channels} with end inclusive, and
    test_without_anomalies: the same test series before injection (ground truth for attribution).
    """
    spec = spec or SynthSpec()
    slot = spec.test_length // max(spec.n_anomalies, 1)
    if slot < 80:
        raise ValueError(f"test_length {spec.test_length} leaves under 80 steps per anomaly; use fewer anomalies")
    rng = np.random.default_rng(spec.seed)
    clean = _CleanSignal(spec, rng)
    total = spec.train_length + spec.test_length
    series = clean(np.arange(total)) + spec.noise * rng.normal(size=(total, spec.n_channels))
    train = series[: spec.train_length]
    clean_test = series[spec.train_length :]
    test = clean_test.copy()
    scale = train.std(axis=0)

    labels = np.zeros(spec.test_length, dtype=np.uint8)
    anomalies = []
    for index in range(spec.n_anomalies):
        kind = ANOMALY_KINDS[index % len(ANOMALY_KINDS)]
        length = int(rng.integers(1, 4)) if kind == "spike" else int(rng.integers(30, min(120, slot // 2) + 1))
        start = index * slot + int(rng.integers(slot // 4, slot - length))
        n_touched = 1 if kind == "timing" else int(rng.integers(1, min(3, spec.n_channels) + 1))
        channels = np.sort(rng.choice(spec.n_channels, size=n_touched, replace=False))
        _inject(kind, test, start, length, channels, clean, spec.train_length, scale, rng)
        labels[start : start + length] = 1
        anomalies.append(
            {"kind": kind, "start": start, "end": start + length - 1, "channels": [int(c) for c in channels]}
        )
    return {
        "train": train.astype(np.float32),
        "test": test.astype(np.float32),
        "test_labels": labels,
        "anomalies": anomalies,
        "test_without_anomalies": clean_test.astype(np.float32),
    }
