"""The decision rule: from a stream of anomaly scores to flags, causally.

A rule is fitted on the TRAIN scores (plain numbers and the last TRAIN scores, stored in the
checkpoint) and then reads the scores in order: the flag of point t depends on the TRAIN scores
and on the scores before t, never on a later one, so the rule adds no delay to the scoring's own
and gives the same flags whether the scores arrive at once or in chunks of any size (`RuleState`
carries what the next chunk needs).

| rule      | flags point t when                                                                        |
|-----------|-------------------------------------------------------------------------------------------|
| `guarded` | s_t > max(q, b_t, m_t + 3 max(r_t, r0)): the budget rule's bound, and at least 3 robust   |
|           | spreads above the median of the recent scores (m_t, r_t over the same window; r0 TRAIN's);|
|           | its window opens TEST with the last 300 TRAIN scores and grows to `window`                |
| `budget`  | s_t > max(q, b_t): q the TRAIN percentile, b_t the 90th percentile of the `window` scores |
|           | before t (the last TRAIN scores fill the window at the start)                             |
| `train`   | s_t > q (the rule before the budget one)                                                  |

The budget rule is an alarm budget: whatever happens to the scores, it flags at most about a tenth
of any `window` consecutive points, so a machine whose errors settle on a new level after an
incident, or drift away from TRAIN, stops raising alarms once the recent scores have caught up,
instead of flagging every point from then on. Where the scores stay as quiet as in TRAIN, b_t is
below q and it is the TRAIN rule. A score that keeps climbing tops the quantile of its own past at
every point, so the budget alone flags a ramp for as long as it lasts; the guard asks a point to
stand out from the recent level by three robust spreads (r = interquartile range / 1.349, never
below TRAIN's), which a steady ramp does not (it sits about 1.35 spreads above its recent median).
The budget rule was chosen among ten rules on the development data, the guard added after a second
study and widened from two spreads to three after a third, which also trained on short TRAINs
(docs/research-log.md, "The decision rule", "... with a ramp guard" and "The decision rule's budget
and guard"). The guarded window opens TEST with only the last 300 TRAIN scores: they are in-sample
errors, lower than a new point's wherever the model generalises imperfectly, and a full window of
them floods the first hundred or so TEST points until a tenth of it holds TEST scores; a study on
the development data chose 300 among 1000, 300, 100 and 0 (same page, "The decision rule's start").
The width and the start are the rule's, not the checkpoint's: a checkpoint that stores `guarded` flags
with today's. Non-finite scores are always flagged and left out of the recent window's quantiles (each keeps its
place among the last `window` points). Where TRAIN's robust spread is 0 (its quartiles equal) the guard is off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from runtime.errors import UserInputError

ALARM_RULES = ("guarded", "budget", "train")
DEFAULT_ALARM_RULE = "guarded"
DEFAULT_ALARM_WINDOW = 1000  # recent scores the budget and guarded rules read (docs/research-log.md)
BUDGET_QUANTILE = 0.9  # the budget rule flags at most about a tenth of the recent points
GUARD_SPREADS = 3.0  # how far above the recent median a guarded flag must stand, in robust spreads
GUARDED_START = 300  # the last TRAIN scores the guarded rule's window opens TEST with (docs/research-log.md)
IQR_PER_SPREAD = 1.349  # a normal distribution's interquartile range, in standard deviations


@dataclass(frozen=True)
class AlarmSettings:
    """Which rule, from which TRAIN percentile, over how many recent scores: what fitting needs besides the scores."""

    kind: str = DEFAULT_ALARM_RULE
    percentile: float = 99.0
    window: int = DEFAULT_ALARM_WINDOW

    def fit(self, train_scores: np.ndarray) -> AlarmRule:
        return AlarmRule.fit(train_scores, self.kind, self.percentile, self.window)

    def describe(self) -> str:
        return "the " + rule_text(self.kind, self.percentile, self.window)


@dataclass
class RuleState:
    """What the rule remembers between chunks: the last `window` scores (NaN for a non-finite one)."""

    recent: np.ndarray  # (<= window,) float64

    def to_dict(self) -> dict:
        return {"recent": self.recent.tolist()}

    @classmethod
    def from_dict(cls, record: dict) -> RuleState:
        return cls(np.asarray(record["recent"], dtype=np.float64))


@dataclass(frozen=True)
class AlarmRule:
    """A fitted decision rule. threshold: the TRAIN percentile q; train_tail: the last `window` TRAIN
    scores, from which the recent window at the start of TEST is taken (start(); empty: the rule starts
    from q alone); train_spread: r0, the robust spread of the TRAIN scores (0: the guard is off)."""

    kind: str
    percentile: float
    window: int
    threshold: float
    train_tail: np.ndarray  # (<= window,) float64
    label: str = ""  # how the threshold was given, where it was not fitted (e.g. "--threshold value")
    train_spread: float = 0.0

    @classmethod
    def fit(
        cls,
        train_scores: np.ndarray,
        kind: str = DEFAULT_ALARM_RULE,
        percentile: float = 99.0,
        window: int = DEFAULT_ALARM_WINDOW,
    ) -> AlarmRule:
        check_alarm_settings(kind, window)
        scores = np.asarray(train_scores)
        finite = scores[np.isfinite(scores)]
        if finite.size == 0:
            raise UserInputError("the TRAIN scores hold no finite value; the decision rule cannot be fitted")
        # In the scores' own dtype: the same number as the percentiles the checkpoint stores beside it.
        return cls(
            kind,
            float(percentile),
            int(window),
            float(np.percentile(finite, percentile)),
            _recent_values(scores[-window:]),
            train_spread=robust_spread(finite),
        )

    def describe(self) -> str:
        if self.label:
            return self.label
        return rule_text(self.kind, self.percentile, self.window, self.threshold)

    def start(self) -> RuleState:
        """The state at the first point after TRAIN: the guarded rule's last GUARDED_START TRAIN scores, the
        budget rule's whole remembered tail."""
        opening = GUARDED_START if self.kind == "guarded" else len(self.train_tail)
        return RuleState(self.train_tail[max(len(self.train_tail) - opening, 0) :].copy())

    def thresholds(self, scores: np.ndarray, state: RuleState | None = None) -> tuple[np.ndarray, RuleState]:
        """Each point's threshold (N,) for the next scores in the stream, and the state after them."""
        state = state or self.start()
        recent = np.concatenate([state.recent, _recent_values(scores)])
        after = RuleState(recent[-self.window :].copy())
        if self.kind == "train":
            return np.full(len(recent) - len(state.recent), self.threshold), after
        if self.kind == "guarded" and self.train_spread > 0:
            budget, q25, median, q75 = _quantiles_before(recent, len(state.recent), self.window,
                                                         (BUDGET_QUANTILE, 0.25, 0.5, 0.75))  # fmt: skip
            return np.fmax(np.fmax(self.threshold, budget), self.guard(median, q25, q75, GUARD_SPREADS)), after
        (budget,) = _quantiles_before(recent, len(state.recent), self.window, (BUDGET_QUANTILE,))
        return np.fmax(self.threshold, budget), after

    def recent_quantiles(
        self, scores: np.ndarray, quantiles: tuple[float, ...], state: RuleState | None = None
    ) -> list[np.ndarray]:
        """Each quantile (N,) of the `window` scores before each of the next scores in the stream."""
        state = state or self.start()
        recent = np.concatenate([state.recent, _recent_values(scores)])
        return _quantiles_before(recent, len(state.recent), self.window, quantiles)

    def guard(self, median: np.ndarray, q25: np.ndarray, q75: np.ndarray, spreads: float) -> np.ndarray:
        """The recent median raised by `spreads` robust spreads (interquartile range / 1.349, never below TRAIN's)."""
        return median + spreads * np.fmax((q75 - q25) / IQR_PER_SPREAD, self.train_spread)

    def flags(self, scores: np.ndarray, state: RuleState | None = None) -> tuple[np.ndarray, np.ndarray, RuleState]:
        """(flags (N,) uint8, thresholds (N,), state after): a point is flagged above its threshold,
        and always when its score is NaN/Inf, which no rule may pass as normal."""
        scores = np.asarray(scores, dtype=np.float64)
        thresholds, after = self.thresholds(scores, state)
        with np.errstate(invalid="ignore"):
            flagged = (scores > thresholds) | ~np.isfinite(scores)
        return flagged.astype(np.uint8), thresholds, after

    def to_checkpoint(self) -> dict:
        """Plain numbers and one float64 tensor: loadable with torch.load(weights_only=True)."""
        return {
            "kind": self.kind,
            "percentile": self.percentile,
            "window": self.window,
            "threshold": self.threshold,
            "train_tail": torch.from_numpy(self.train_tail.copy()),
            "train_spread": self.train_spread,
        }

    @classmethod
    def from_checkpoint(cls, record: dict) -> AlarmRule:
        tail = record["train_tail"].numpy().astype(np.float64)
        # Checkpoints from before the guard existed: the spread of the TRAIN scores they remember.
        spread = float(record["train_spread"]) if "train_spread" in record else robust_spread(tail)
        return cls(record["kind"], float(record["percentile"]), int(record["window"]), float(record["threshold"]),
                   tail, train_spread=spread)  # fmt: skip

    def with_kind(self, kind: str, window: int | None = None) -> AlarmRule:
        """The same TRAIN statistics under another rule (window: fewer remembered TRAIN scores only)."""
        window = self.window if window is None else window
        check_alarm_settings(kind, window)
        if window > self.window and len(self.train_tail) == self.window:
            raise UserInputError(
                f"--alarm-window {window} is longer than the {self.window} TRAIN scores the model stores; "
                f"choose at most {self.window} or retrain with --alarm-window {window}"
            )
        return AlarmRule(kind, self.percentile, window, self.threshold, self.train_tail[-window:],
                         train_spread=self.train_spread)  # fmt: skip


def rules_help() -> str:
    """The rules in a line, for the --alarm-rule help of the CLIs."""
    return (f"guarded (above the TRAIN percentile, the {BUDGET_QUANTILE:.0%} quantile of the recent scores and "
            f"{GUARD_SPREADS:g} robust spreads above their median), budget (the first two) or train (the TRAIN "
            "percentile alone)")  # fmt: skip


def rule_text(kind: str, percentile: float, window: int, threshold: float | None = None) -> str:
    """The rule in words: "99th percentile of TRAIN scores (value) or the 90% quantile of the last ..."."""
    base = f"{percentile:g}th percentile of TRAIN scores" + ("" if threshold is None else f" ({threshold:.6g})")
    if kind == "train":
        return base
    budget = f"{base} or the {BUDGET_QUANTILE:.0%} quantile of the last {window} scores, whichever is higher"
    if kind == "budget":
        return budget
    return f"{budget}, and {GUARD_SPREADS:g} robust spreads above their median"


def robust_spread(scores: np.ndarray) -> float:
    """The interquartile range / 1.349 (a normal distribution's standard deviation) of finite scores; 0 for none."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0
    q25, q75 = np.percentile(finite, [25, 75])
    return float((q75 - q25) / IQR_PER_SPREAD)


def _quantiles_before(
    recent: np.ndarray, remembered: int, window: int, quantiles: tuple[float, ...]
) -> list[np.ndarray]:
    """Each quantile of the `window` values before each point of `recent` after its first `remembered`: rolling
    over the remembered values and the new ones, read one step back. pandas skips NaN (a non-finite score);
    nothing remembered yet is NaN."""
    rolling = pd.Series(recent).rolling(window, min_periods=1)
    return [np.concatenate([[np.nan], rolling.quantile(q).to_numpy()[:-1]])[remembered:] for q in quantiles]


def _recent_values(scores: np.ndarray) -> np.ndarray:
    """Scores as the recent window keeps them: float64, a non-finite one as NaN (skipped by the quantile)."""
    values = np.asarray(scores, dtype=np.float64).copy()
    values[~np.isfinite(values)] = np.nan
    return values


def check_alarm_settings(kind: str, window: int) -> None:
    if kind not in ALARM_RULES:
        raise UserInputError(f"unknown --alarm-rule {kind!r}; choose one of {', '.join(ALARM_RULES)}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise UserInputError(f"--alarm-window must be a positive whole number of points, got {window!r}")
