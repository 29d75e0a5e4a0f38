"""Drift of new data against TRAIN: per-channel mean shift and spread, streamed over chunks."""

from __future__ import annotations

import numpy as np

# Drift bound, in units of the TRAIN statistics: a channel has drifted when its mean moved by more
# than MEAN_SHIFT_BOUND TRAIN standard deviations, or its standard deviation grew or shrank by more
# than SPREAD_BOUND times. On SYNTH the test split (trend plus 10 % anomalies) stays within 0.21 and
# 1.07 of those, while a sensor offset or a stuck sensor crosses them.
MEAN_SHIFT_BOUND = 0.5
SPREAD_BOUND = 2.0


class ChannelMoments:
    """Streaming per-channel count, mean and sum of squared deviations (Chan et al.'s merge)."""

    def __init__(self, width: int) -> None:
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def update(self, values: np.ndarray) -> None:
        n = len(values)
        if not n:
            return
        mean = values.mean(axis=0, dtype=np.float64)
        m2 = ((values - mean) ** 2).sum(axis=0, dtype=np.float64)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


def drift_report(moments: ChannelMoments, constant: np.ndarray, channel_names: list[str]) -> dict:
    """Drift of the normalised input against TRAIN (mean 0, std 1 after normalisation).

    constant: (C,) bool, the channels that never moved in TRAIN (Normalizer.constant_in_train). They are stored
    with std 1, so their shift and spread are in their own units; a spread cannot shrink below none, so only
    a shrinking spread is not checked for them.
    """
    channels, drifted = [], []
    for index, name in enumerate(channel_names):
        shift, spread = float(moments.mean[index]), float(moments.std[index])
        moved = abs(shift) > MEAN_SHIFT_BOUND or spread > SPREAD_BOUND
        moved |= spread < 1 / SPREAD_BOUND and not constant[index]
        channels.append({"name": name, "mean_shift_std": shift, "spread_ratio": spread, "drifted": bool(moved),
                         "constant_in_train": bool(constant[index])})  # fmt: skip
        if moved:
            drifted.append(name)
    return {
        "bound": {"mean_shift_std": MEAN_SHIFT_BOUND, "spread_ratio": [1 / SPREAD_BOUND, SPREAD_BOUND]},
        "drifted": drifted,
        "channels": channels,
    }


def series_drift(normalised: np.ndarray, constant: np.ndarray, channel_names: list[str]) -> dict:
    """drift_report of a whole normalised series (N, C) held in memory, e.g. evaluate.py's TEST."""
    moments = ChannelMoments(len(channel_names))
    moments.update(normalised)
    return drift_report(moments, constant, channel_names)


def _moved_text(channel: dict) -> str:
    """One drifted channel; one constant in TRAIN has no TRAIN std to count in, so its own units are shown."""
    shift, spread = channel["mean_shift_std"], channel["spread_ratio"]
    if channel.get("constant_in_train"):
        return f"{channel['name']} (constant in TRAIN, now mean {shift:+.3g} and spread {spread:.3g} in its own units)"
    return f"{channel['name']} (mean {shift:+.2f} std, spread x{spread:.2f})"


def _beyond_bound(channel: dict) -> float:
    """How many times its bound a channel's drift is: mean shift, spread grown, or spread shrunk (a stuck sensor)."""
    shift, spread = abs(channel["mean_shift_std"]), channel["spread_ratio"]
    # A channel constant in TRAIN has no spread to shrink from (drift_report does not check it).
    shrunk = 0.0 if channel.get("constant_in_train") else 1 / spread if spread > 0 else float("inf")
    return max(shift / MEAN_SHIFT_BOUND, max(spread, shrunk) / SPREAD_BOUND)


def drift_warning(drift: dict | None) -> str | None:
    """One line naming the drifted channels, or None (also for None: no drift was computed)."""
    if not drift or not drift["drifted"]:
        return None
    # The farthest beyond the bound first: a tag whose units changed must not hide behind ten mildly moved ones.
    moved = sorted((c for c in drift["channels"] if c["drifted"]), key=_beyond_bound, reverse=True)
    details = ", ".join(_moved_text(channel) for channel in moved[:10])
    return (
        f"warning: drift in {len(moved)} of {len(drift['channels'])} channels beyond the bound "
        f"(|mean shift| > {MEAN_SHIFT_BOUND} TRAIN std or spread outside x{1 / SPREAD_BOUND:g}-x{SPREAD_BOUND:g}), "
        "the farthest first: "
        f"{details}{', ...' if len(moved) > 10 else ''}; the scores may not be trustworthy"
    )
