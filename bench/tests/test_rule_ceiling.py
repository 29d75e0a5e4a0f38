"""bench/rule_ceiling.py: the oracle rules it compares the decision rule with, on toys worked by hand."""

from __future__ import annotations

import numpy as np

from bench.rule_ceiling import dataset_means, share_oracle_flags


def test_share_oracle_flags_as_many_points_as_are_anomalous_highest_first():
    labels = np.array([0, 0, 1, 1, 0, 0])
    test = np.array([0.1, 0.7, 0.9, np.nan, 0.3, 0.2])  # NaN counts as the highest score, as every rule flags it
    assert share_oracle_flags(labels, test).tolist() == [0, 0, 1, 1, 0, 0]
    assert share_oracle_flags(np.array([1, 0, 0]), np.array([0.1, 0.5, 0.2])).tolist() == [0, 1, 0]


def test_dataset_means_grades_each_rule_against_the_best_threshold():
    # TEST: anomalous 2..3 at 0.9 and 0.8; a normal point at 0.85 sits between them, so the best threshold
    # (0.8) gets F1 2 * 2 / (2 * 2 + 1) = 0.8; the share oracle flags the two highest, 0.9 and 0.85: F1 0.5.
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    test = np.array([0.1, 0.2, 0.9, 0.8, 0.85, 0.1, 0.2, 0.1])
    train = np.linspace(0.0, 0.5, 200)  # every TRAIN percentile lies below all three high TEST scores
    fleet = {
        "a": {"labels": labels, "train": {"model": train}, "test": {"model": test}},
        "constant": {"labels": np.zeros(8, int), "train": {"model": train}, "test": {"model": test}},
    }
    best, rules = dataset_means([fleet], "model")
    assert best == 0.8
    assert rules["share oracle"]["f1"] == 0.5
    assert rules["train p100"]["f1"] == 0.8  # flags the three high scores: precision 2/3, recall 1
    assert rules["train p100"]["flagged"] == 3 / 8
    assert set(rules) >= {"guarded", "train p99", "share oracle"}  # the entity without anomalies is left out
