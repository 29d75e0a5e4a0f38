"""Per-sensor attribution of flagged segments, and its check against the channels an anomaly touched.

A sensor's contribution to a segment is its mean squared reconstruction error over the segment
divided by its mean error on TRAIN, so a channel the model always reconstructs poorly does not
top every alarm. Shares are the contributions normalised to sum to 1 within the segment.

HitRate@P% (Su et al., OmniAnomaly, KDD 2019): for an anomaly whose true channels are G, the
share of G found among the floor(P% x |G|) highest-ranked channels, averaged over anomalies.
A random ranking scores floor(P% x |G|) / C on average, the baseline reported next to it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import label_segments

HIT_RATE_FACTORS = {"100": 1.0, "150": 1.5}
# A channel reconstructed almost perfectly in TRAIN would turn any later noise into a huge share;
# no channel's TRAIN error counts as less than this fraction of the mean over channels.
SCALE_FLOOR = 0.01


def train_error_scale(train_channel_error: np.ndarray) -> np.ndarray:
    """Each channel's mean squared reconstruction error on TRAIN (C,) (the Detector's
    train_channel_error_), floored."""
    scale = np.asarray(train_channel_error, dtype=np.float64)
    return np.maximum(scale, SCALE_FLOOR * scale.mean() + np.finfo(np.float64).tiny)


def sensor_scale(train_channel_error: np.ndarray | None, n_channels: int) -> np.ndarray:
    """The scale that ranks a stream's sensors: the TRAIN error where the checkpoint stores it; checkpoints
    from before it was stored rank the raw errors (a scale of ones)."""
    return np.ones(n_channels) if train_channel_error is None else train_error_scale(train_channel_error)


def relative_shares(errors: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each row's channel errors (..., C) divided by their TRAIN scale, as shares summing to 1 per row;
    a perfectly reconstructed row shares equally."""
    relative = np.asarray(errors, dtype=np.float64) / scale
    total = relative.sum(axis=-1, keepdims=True)
    even = np.full_like(relative, 1 / relative.shape[-1])
    return np.divide(relative, total, out=even, where=total > 0)


def segment_shares(errors: np.ndarray, scale: np.ndarray, start: int, end: int) -> np.ndarray:
    """Shares (C,) of each channel in the segment [start, end] (inclusive), summing to 1."""
    return relative_shares(errors[start : end + 1].mean(axis=0, dtype=np.float64), scale)


def top_sensor_text(errors: np.ndarray, scale: np.ndarray, names: list[str], k: int) -> list[str]:
    """'name:share;...' of each row's k largest shares (relative_shares), for one flagged point per row."""
    shares = relative_shares(errors, scale)
    order = np.argsort(-shares, axis=1, kind="stable")[:, :k]
    return [";".join(f"{names[c]}:{shares[row, c]:.2f}" for c in order[row]) for row in range(len(errors))]


def ranking(shares: np.ndarray) -> np.ndarray:
    """Channel indices from the largest share down; ties keep channel order."""
    return np.argsort(-shares, kind="stable")


@dataclass(frozen=True)
class SegmentAttribution:
    start: int  # first flagged point
    end: int  # last flagged point (inclusive)
    peak_index: int
    peak_score: float
    shares: np.ndarray  # (C,)

    def top(self, k: int) -> list[tuple[int, float]]:
        return [(int(channel), float(self.shares[channel])) for channel in ranking(self.shares)[:k]]


def exceedance_peak(scores: np.ndarray, thresholds: np.ndarray) -> tuple[int, np.ndarray]:
    """The point of a run that stands highest above its own threshold, and each point's score / threshold: how
    segments and incidents both find their peak. A point the model could not score outranks any finite one; a
    threshold <= 0 gives -inf (then the highest score is the peak)."""
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(thresholds > 0, scores / thresholds, -np.inf)
    key[~np.isfinite(scores)] = np.inf
    peak = int(np.argmax(key)) if (key > -np.inf).any() else int(np.argmax(np.nan_to_num(scores, nan=np.inf)))
    return peak, key


def attribute_segments(
    scores: np.ndarray,
    predictions: np.ndarray,
    errors: np.ndarray,
    scale: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> list[SegmentAttribution]:
    """One attribution per maximal run of flagged points, peaking where the score stands highest above its own
    threshold (thresholds (N,); None: the highest score), as its incident does."""
    thresholds = np.ones(len(scores)) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    segments = []
    for start, stop in label_segments(predictions):
        peak = start + exceedance_peak(scores[start:stop], thresholds[start:stop])[0]
        segments.append(
            SegmentAttribution(
                int(start), int(stop - 1), peak, float(scores[peak]), segment_shares(errors, scale, start, stop - 1)
            )
        )
    return segments


def hit_rate(ranked: np.ndarray, truth: Sequence[int], factor: float) -> float:
    """Share of the true channels among the top floor(factor x |truth|) ranked channels."""
    top = ranked[: int(np.floor(factor * len(truth)))]
    return len(set(top.tolist()) & set(truth)) / len(truth)


def random_hit_rate(n_channels: int, n_truth: int, factor: float) -> float:
    """Expected hit_rate of a uniformly random ranking: each top slot holds a true channel with probability |G|/C."""
    return min(int(np.floor(factor * n_truth)), n_channels) / n_channels


def hit_rates(errors: np.ndarray, scale: np.ndarray, truth_segments: list[tuple[int, int, list[int]]]) -> dict:
    """Mean HitRate@100% and @150% over (start, end inclusive, true channels), and a random ranking's."""
    result: dict = {"n_segments": len(truth_segments)}
    if not truth_segments:
        return result
    n_channels = errors.shape[1]
    for name, factor in HIT_RATE_FACTORS.items():
        found = [hit_rate(ranking(segment_shares(errors, scale, s, e)), g, factor) for s, e, g in truth_segments]
        chance = [random_hit_rate(n_channels, len(g), factor) for _, _, g in truth_segments]
        result[f"hit_rate_{name}"] = float(np.mean(found))
        result[f"random_hit_rate_{name}"] = float(np.mean(chance))
    return result


def labelled_truth(anomalies: list[dict]) -> list[tuple[int, int, list[int]]]:
    """(start, end, channels) of every recorded anomaly that names its channels."""
    return [(a["start"], a["end"], list(a["channels"])) for a in anomalies if a.get("channels")]


def flagged_truth(segments: list[SegmentAttribution], anomalies: list[dict]) -> list[tuple[int, int, list[int]]]:
    """Flagged segments that overlap recorded anomalies, with the union of those anomalies' channels."""
    truth = []
    for segment in segments:
        channels = sorted(
            {
                c
                for a in anomalies
                if a["start"] <= segment.end and segment.start <= a["end"]
                for c in a.get("channels", ())
            }
        )
        if channels:
            truth.append((segment.start, segment.end, channels))
    return truth


@dataclass
class Attribution:
    channel_names: list[str]
    top_k: int
    train_scale: np.ndarray  # (C,) mean TRAIN error per channel, the denominator of every share
    segments: list[SegmentAttribution]
    interpretation: dict | None  # None when the dataset records no anomalous channels

    def to_json(self) -> dict:
        return {
            "top_k": self.top_k,
            "contribution": "mean squared reconstruction error over the segment / the channel's mean on TRAIN",
            "n_segments": len(self.segments),
            "segments": [
                {
                    "start": s.start,
                    "end": s.end,
                    "peak_index": s.peak_index,
                    "peak_score": s.peak_score,
                    "top_sensors": [
                        {"channel": c, "name": self.channel_names[c], "share": share} for c, share in s.top(self.top_k)
                    ],
                }
                for s in self.segments
            ],
            "interpretation": self.interpretation,
        }

    def write_csv(self, path: Path) -> None:
        """One row per flagged segment: start, end (inclusive), length, peak, then the top-k sensors and shares."""
        header = ["start", "end", "length", "peak_index", "peak_score"]
        for rank in range(1, self.top_k + 1):
            header += [f"sensor_{rank}", f"share_{rank}"]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for s in self.segments:
                row = [s.start, s.end, s.end - s.start + 1, s.peak_index, f"{s.peak_score:.9g}"]
                for channel, share in s.top(self.top_k):
                    row += [self.channel_names[channel], f"{share:.4f}"]
                writer.writerow(row)


def interpretation_report(
    errors: np.ndarray, scale: np.ndarray, segments: list[SegmentAttribution], anomalies: list[dict]
) -> dict | None:
    """HitRates over the recorded anomalies (threshold-free) and over the flagged segments that hit one."""
    labelled = labelled_truth(anomalies)
    if not labelled:
        return None
    by_kind: dict[str, list] = {}
    for anomaly, truth in zip((a for a in anomalies if a.get("channels")), labelled, strict=True):
        by_kind.setdefault(anomaly.get("kind", "anomaly"), []).append(truth)
    return {
        "ground_truth": "the channels recorded with each labelled anomaly",
        "labelled_segments": hit_rates(errors, scale, labelled),
        "flagged_segments": hit_rates(errors, scale, flagged_truth(segments, anomalies)),
        "labelled_by_kind": {kind: hit_rates(errors, scale, truths) for kind, truths in by_kind.items()},
    }


def attribute(
    scores: np.ndarray,
    predictions: np.ndarray,
    errors: np.ndarray,
    train_channel_error: np.ndarray,
    channel_names: list[str],
    anomalies: list[dict] | None = None,
    top_k: int = 3,
    thresholds: np.ndarray | None = None,
) -> Attribution:
    """Attribute every flagged segment to sensors; measure HitRates where the anomalies name their channels.

    scores, predictions: (N,) of the test split; errors: (N, C) per-channel squared reconstruction
    error on test; train_channel_error: (C,) its mean on TRAIN.
    """
    scale = train_error_scale(train_channel_error)
    segments = attribute_segments(scores, predictions, errors, scale, thresholds)
    interpretation = interpretation_report(errors, scale, segments, anomalies or [])
    return Attribution(list(channel_names), min(top_k, errors.shape[1]), scale, segments, interpretation)


def format_summary(attribution: Attribution, max_segments: int = 5, stamps: np.ndarray | None = None) -> str:
    """A few readable lines: the highest-peaking segments' top sensors, and the HitRates if measured. stamps: the
    test split's times, where it has them: each segment shows its first and last, as the incidents do."""
    segments = sorted(attribution.segments, key=lambda s: -s.peak_score)[:max_segments]
    lines = [f"attribution: {len(attribution.segments)} flagged segments; the {len(segments)} highest peaks:"]
    for s in segments:
        sensors = ", ".join(f"{attribution.channel_names[c]} {share:.0%}" for c, share in s.top(attribution.top_k))
        when = "" if stamps is None else f", {stamps[s.start]} to {stamps[s.end]}"
        lines.append(f"  steps {s.start}-{s.end}{when} (peak {s.peak_score:.4g}): {sensors}")
    for name, what in (
        ("labelled_segments", "labelled anomalies"),
        ("flagged_segments", "flagged segments on an anomaly"),
    ):
        rates = (attribution.interpretation or {}).get(name, {})
        if rates.get("n_segments"):
            lines.append(
                f"HitRate@100% {rates['hit_rate_100']:.3f} (random {rates['random_hit_rate_100']:.3f}), "
                f"@150% {rates['hit_rate_150']:.3f} (random {rates['random_hit_rate_150']:.3f}) "
                f"over {rates['n_segments']} {what}"
            )
    return "\n".join(lines)
