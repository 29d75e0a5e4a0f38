"""Threshold rules. Only `paper` looks at test scores; none looks at test labels.

| rule    | threshold                                                            | test data used |
|---------|----------------------------------------------------------------------|----------------|
| train   | percentile of the TRAIN scores (default, 99th)                       | none           |
| val     | percentile of the scores on the validation tail of TRAIN             | none           |
| fixed   | a value the user gives                                               | none           |
| pot     | Peaks-Over-Threshold: a generalised Pareto tail fitted to TRAIN      | none           |
| paper   | percentile 100 - r of concat(TRAIN scores, TEST scores) (reference)  | test scores    |

Without a named rule, the default protocol flags by the decision rule stored with the model
(model/alarm_rule.py), fitted on the TRAIN scores; detect.py reads it from the checkpoint
(`detection_rule`), evaluate.py fits it again on the TRAIN scores it computes, to the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import stats

from model.alarm_rule import AlarmRule
from model.detector import Detector
from runtime.errors import UserInputError

THRESHOLD_RULES = ("train", "val", "fixed", "pot", "paper")
POT_RISK = 1e-3  # the pot rule's exceedance probability


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # a readable description, e.g. "99th percentile of TRAIN scores"
    uses_test_scores: bool
    uses_test_labels: bool = False  # no rule here does; the oracle best-F1 is reported apart
    reads_earlier_test_scores: bool = False  # the adaptive decision rule: each point's threshold reads those before it

    def data_used(self) -> str:
        """What the threshold read, in words, for the table and the report."""
        if self.uses_test_scores:
            return "uses TEST scores"
        if self.reads_earlier_test_scores:
            return "each point's from TRAIN and the TEST scores before it, as a live stream would; no labels"
        return "no test data used"


def percentile_threshold(reference_scores: np.ndarray, percentile: float) -> float:
    """The given percentile of scores the model produced on data without test labels (e.g. TRAIN)."""
    if not 0 < percentile < 100:
        raise UserInputError(f"--threshold-percentile must be between 0 and 100 (exclusive), got {percentile}")
    return float(np.percentile(reference_scores, percentile))


def pot_threshold(train_scores: np.ndarray, risk: float = POT_RISK, initial_quantile: float = 0.98) -> float:
    """Peaks-Over-Threshold (Siffer et al., KDD 2017), as OmniAnomaly and TranAD use it.

    Excesses of the TRAIN scores over their `initial_quantile` are fitted with a generalised
    Pareto distribution (location 0); the threshold is the score exceeded with probability
    `risk` under that tail: t + (sigma / gamma) * ((risk * n / n_t) ** -gamma - 1).
    """
    if not 0 < risk < 1 - initial_quantile:
        raise UserInputError(f"--pot-risk must be in (0, {1 - initial_quantile:g}), got {risk}")
    scores = np.asarray(train_scores, dtype=np.float64)
    initial = float(np.quantile(scores, initial_quantile))
    excesses = scores[scores > initial] - initial
    if excesses.size < 10 or np.ptp(excesses) == 0:
        return float(np.quantile(scores, 1 - risk))  # too few distinct peaks to fit a tail
    gamma, _, sigma = stats.genpareto.fit(excesses, floc=0)
    ratio = risk * scores.size / excesses.size
    if abs(gamma) < 1e-8:
        return initial - sigma * np.log(ratio)
    return float(initial + sigma / gamma * (ratio**-gamma - 1))


def choose_threshold(
    rule: str,
    train_scores: np.ndarray,
    test_scores: np.ndarray,
    *,
    percentile: float = 99.0,
    val_ratio: float = 0.2,
    value: float | None = None,
    pot_risk: float | None = None,
    anomaly_ratio: float = 1.0,
) -> Threshold:
    """Apply one rule. `train_scores` cover the whole TRAIN series; its last val_ratio is the validation tail."""
    if rule == "train":
        return Threshold(
            percentile_threshold(train_scores, percentile),
            f"{percentile:g}th percentile of TRAIN scores",
            uses_test_scores=False,
        )
    if rule == "val":
        n_val = int(len(train_scores) * val_ratio)
        if n_val == 0:
            raise UserInputError(
                "the checkpoint was trained without a validation tail (--val-ratio 0); use --threshold train"
            )
        return Threshold(
            percentile_threshold(train_scores[-n_val:], percentile),
            f"{percentile:g}th percentile of validation scores (last {val_ratio:.0%} of TRAIN)",
            uses_test_scores=False,
        )
    if rule == "fixed":
        if value is None or not np.isfinite(value):
            raise UserInputError("--threshold fixed needs --threshold-value X")
        return Threshold(float(value), "fixed value", uses_test_scores=False)
    if rule == "pot":
        risk = POT_RISK if pot_risk is None else pot_risk
        return Threshold(
            pot_threshold(train_scores, risk), f"POT on TRAIN scores, risk {risk:g}", uses_test_scores=False
        )
    if rule == "paper":
        if not 0 < anomaly_ratio < 100:
            raise UserInputError(f"--anomaly-ratio must be in (0, 100), got {anomaly_ratio}")
        combined = np.concatenate([train_scores, test_scores])
        return Threshold(
            float(np.percentile(combined, 100 - anomaly_ratio)),
            f"{100 - anomaly_ratio:g}th percentile of TRAIN + TEST scores (paper protocol)",
            uses_test_scores=True,
        )
    raise UserInputError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")


def detection_rule(
    detector: Detector,
    percentile: float | None,
    value: float | None,
    kind: str | None = None,
    window: int | None = None,
    train_scores: np.ndarray | None = None,
) -> AlarmRule:
    """The rule detect applies: a given threshold value (fixed), else the stored decision rule, with another
    stored TRAIN percentile, rule or shorter window where asked. With train_scores (evaluate.py has them), a
    percentile the checkpoint does not store is read from them instead of refused."""
    if value is not None:
        if not np.isfinite(value):
            raise UserInputError(f"--threshold must be a finite number, got {value}")
        given = [flag for flag, setting in (("--threshold-percentile", percentile), ("--alarm-rule", kind),
                                            ("--alarm-window", window)) if setting is not None]  # fmt: skip
        if given:
            raise UserInputError(f"--threshold VALUE flags above one fixed value, so {given[0]} would be ignored; "
                                 "drop one of them")  # fmt: skip
        return AlarmRule("train", float("nan"), 1, float(value), np.zeros(0), "--threshold value")
    rule = detector.decision_rule()
    if percentile is not None and float(percentile) != rule.percentile:
        stored = (detector.train_score_stats_ or {}).get("percentiles", {})
        if str(float(percentile)) in stored:
            value = float(stored[str(float(percentile))])
        elif train_scores is not None:
            value = percentile_threshold(train_scores, percentile)
        else:  # the Detector's own message speaks to API users, not to flags
            choices = ", ".join(f"{float(key):g}" for key in stored) or "none"
            raise UserInputError(
                f"--threshold-percentile {percentile:g} is not stored in the checkpoint; choose one of {choices} "
                "or pass --threshold VALUE"
            )
        rule = dataclasses.replace(rule, percentile=float(percentile), threshold=value)
    if kind is None and window is None:
        return rule
    return rule.with_kind(rule.kind if kind is None else kind, window)
