import numpy as np
import pytest

from model.alarm_rule import AlarmRule, AlarmSettings, RuleState
from runtime.errors import UserInputError


def _train_scores(n: int = 3000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(4.0, 0.25, n)  # positive, skewed: like reconstruction errors


def test_the_train_rule_flags_above_the_train_percentile():
    train = _train_scores()
    rule = AlarmRule.fit(train, "train", 99.0, 100)
    test = np.array([0.1, rule.threshold, rule.threshold * 1.01, 50.0])
    flags, thresholds, _ = rule.flags(test)
    assert rule.threshold == pytest.approx(np.percentile(train, 99))
    np.testing.assert_array_equal(flags, [0, 0, 1, 1])
    np.testing.assert_array_equal(thresholds, rule.threshold)


def test_the_budget_rule_stops_flagging_a_lasting_shift_within_a_window():
    train = _train_scores()
    rule = AlarmRule.fit(train, "budget", 99.0, window=400)
    rng = np.random.default_rng(1)
    shifted = rng.gamma(4.0, 0.25, 3000) * 5.0  # the machine settles five times higher and stays there
    flags, thresholds, _ = rule.flags(shifted)
    static = AlarmRule.fit(train, "train", 99.0, 400).flags(shifted)[0]
    assert static.mean() > 0.8  # the fixed threshold floods
    assert flags[:20].mean() > 0.8  # the shift is flagged when it starts
    assert flags[400:].mean() < 0.15  # once the window holds only the new level, about a tenth is flagged
    assert thresholds[-1] > 3 * rule.threshold


def test_the_budget_rule_is_the_train_rule_where_the_scores_stay_as_in_train():
    train = _train_scores()
    rule = AlarmRule.fit(train, "budget", 99.0, window=500)
    test = _train_scores(2000, seed=5)
    test[1500:1540] += 10.0  # a burst shorter than a tenth of the window
    flags, thresholds, _ = rule.flags(test)
    np.testing.assert_array_equal(flags, AlarmRule.fit(train, "train", 99.0, 500).flags(test)[0])
    assert flags[1500:1540].all()
    assert (thresholds >= rule.threshold).all()


@pytest.mark.parametrize("kind", ["guarded", "budget"])
def test_flags_are_the_same_in_one_pass_and_in_chunks_of_any_size(kind):
    train = _train_scores()
    rule = AlarmRule.fit(train, kind, 99.0, window=300)
    rng = np.random.default_rng(3)
    test = np.concatenate([rng.gamma(4.0, 0.25, 700), rng.gamma(4.0, 0.25, 900) * 4, rng.gamma(4.0, 0.25, 400)])
    test[500] = np.nan
    whole_flags, whole_thresholds, whole_state = rule.flags(test)
    for sizes in ([1] * 50 + [1950], [7, 293, 1000, 700], [2000]):
        state, flags, thresholds, start = rule.start(), [], [], 0
        for size in sizes:
            part_flags, part_thresholds, state = rule.flags(test[start : start + size], state)
            state = RuleState.from_dict(state.to_dict())  # what a restarted stream would read back
            flags.append(part_flags)
            thresholds.append(part_thresholds)
            start += size
        np.testing.assert_array_equal(np.concatenate(flags), whole_flags)
        np.testing.assert_array_equal(np.concatenate(thresholds), whole_thresholds)
        np.testing.assert_array_equal(state.recent, whole_state.recent)


@pytest.mark.parametrize("kind", ["guarded", "budget"])
def test_a_flag_never_reads_a_later_score(kind):
    train = _train_scores()
    rule = AlarmRule.fit(train, kind, 99.0, window=200)
    test = np.random.default_rng(4).gamma(4.0, 0.25, 1000)
    changed = test.copy()
    changed[600:] *= 50  # the future changes completely
    np.testing.assert_array_equal(rule.flags(test)[1][:601], rule.flags(changed)[1][:601])


@pytest.mark.parametrize("kind", ["guarded", "budget"])
def test_non_finite_scores_are_flagged_and_do_not_move_the_level(kind):
    rule = AlarmRule.fit(_train_scores(), kind, 99.0, window=50)
    test = np.full(200, 0.5)
    test[100:] = np.inf
    flags, thresholds, _ = rule.flags(test)
    assert flags[100:].all()
    assert np.isfinite(thresholds).all()


@pytest.mark.parametrize("kind", ["guarded", "budget"])
def test_the_rule_round_trips_through_a_checkpoint_record(kind):
    rule = AlarmSettings(kind, 95.0, 500).fit(_train_scores())
    again = AlarmRule.from_checkpoint(rule.to_checkpoint())
    test = _train_scores(800, seed=9) * 2
    np.testing.assert_array_equal(rule.flags(test)[0], again.flags(test)[0])
    assert again.percentile == 95.0 and len(again.train_tail) == 500 and again.train_spread == rule.train_spread


def test_a_record_from_before_the_guard_takes_the_spread_of_its_remembered_train_scores():
    rule = AlarmSettings("budget", 99.0, 500).fit(_train_scores())
    record = rule.to_checkpoint()
    del record["train_spread"]
    tail = record["train_tail"].numpy()
    q25, q75 = np.percentile(tail, [25, 75])
    assert AlarmRule.from_checkpoint(record).train_spread == pytest.approx((q75 - q25) / 1.349)


def test_the_guard_lets_a_climbing_score_pass_where_the_budget_flags_it_and_still_flags_a_spike():
    train = _train_scores()  # gamma(4, 0.25): median about 0.92, robust spread about 0.46
    ramp = np.linspace(1.0, 40.0, 3000)  # a steady climb, far above TRAIN, with no anomaly on it
    ramp[2000:2010] += 30.0  # a spike on the climb
    budget = AlarmRule.fit(train, "budget", 99.0, 1000).flags(ramp)[0].astype(bool)
    guarded = AlarmRule.fit(train, "guarded", 99.0, 1000).flags(ramp)[0].astype(bool)
    assert budget[1000:2000].all()  # each new score tops the quantile of its own past
    assert not guarded[1000:2000].any()  # it sits about 1.35 recent spreads above the recent median, below the guard
    assert guarded[2000:2010].all()
    # What it flags besides the spike is the start of the climb, while the recent window still holds TRAIN.
    assert not guarded[1000:2000].any() and not guarded[2010:].any() and guarded.sum() < budget.sum() / 4


@pytest.mark.parametrize(("kind", "window", "message"), [("spot", 10, "unknown --alarm-rule"),
                                                          ("budget", 0, "--alarm-window must be a positive")])
def test_bad_rule_settings_are_one_line_errors(kind, window, message):
    with pytest.raises(UserInputError, match=message):
        AlarmRule.fit(_train_scores(), kind, 99.0, window)


def test_a_shorter_window_can_be_chosen_but_not_a_longer_one():
    rule = AlarmRule.fit(_train_scores(), "budget", 99.0, window=500)
    assert len(rule.with_kind("budget", 100).train_tail) == 100
    with pytest.raises(UserInputError, match="longer than the 500 TRAIN scores"):
        rule.with_kind("budget", 1000)


def test_the_guarded_window_opens_on_300_train_scores_and_learns_a_higher_test_level_sooner():
    train = _train_scores()
    rng = np.random.default_rng(6)
    higher = rng.gamma(4.0, 0.25, 3000) * 2.0  # normal TEST errors twice TRAIN's in-sample ones: no anomaly
    guarded = AlarmRule.fit(train, "guarded", 99.0, 1000)
    budget = AlarmRule.fit(train, "budget", 99.0, 1000)
    np.testing.assert_array_equal(guarded.start().recent, train[-300:])
    np.testing.assert_array_equal(budget.start().recent, train[-1000:])
    flags = guarded.flags(higher)[0]
    # The same rule opening on the whole remembered tail, as it did before: it flags longer at the start.
    full_start = guarded.flags(higher, RuleState(guarded.train_tail.copy()))[0]
    assert flags[:300].sum() < full_start[:300].sum()
    np.testing.assert_array_equal(flags[1400:], full_start[1400:])  # once both windows hold only TEST scores
    short = AlarmRule.fit(train[:120], "guarded", 99.0, 1000)  # fewer TRAIN scores than the opening: all of them
    np.testing.assert_array_equal(short.start().recent, train[:120])


def test_the_guarded_and_budget_thresholds_by_hand():
    # TRAIN 1..10: the 90th percentile is 9.1 (numpy's linear rule: 9 + 0.1 * (10 - 9)); the robust spread r0 is
    # (7.75 - 3.25) / 1.349 = 3.3358. Window 5, so TEST opens on the TRAIN tail 6..10.
    rule = AlarmRule.fit(np.arange(1.0, 11.0), "guarded", 90.0, 5)
    r0 = 4.5 / 1.349
    assert rule.threshold == pytest.approx(9.1) and rule.train_spread == pytest.approx(r0)
    flags, thresholds, _ = rule.flags(np.array([20.0, 5, 5, 5, 5, 30]))
    # Before each point, the 5 scores before it, sorted; 90 % quantile at position 3.6; median; IQR q75 - q25:
    # t0 6 7 8 9 10: 9.6, median 8, IQR 2 -> r0 wins: 8 + 3 r0 = 18.007 (20 flagged)
    # t1 7 8 9 10 20: 16, median 9, IQR 2 -> 9 + 3 r0 = 19.007; t2 5 8 9 10 20: 16, median 9, IQR 2 -> 19.007
    # t3 5 5 9 10 20: 16, median 9, IQR 5 -> 9 + 3 * 5 / 1.349 = 20.119; t4 5 5 5 10 20: 16, median 5, IQR 5 -> 16.119
    # t5 5 5 5 5 20: 14, median 5, IQR 0 -> 5 + 3 r0 = 15.007 (30 flagged)
    spread = 5 / 1.349
    expected = [8 + 3 * r0, 9 + 3 * r0, 9 + 3 * r0, 9 + 3 * spread, 5 + 3 * spread, 5 + 3 * r0]
    np.testing.assert_allclose(thresholds, expected)
    np.testing.assert_array_equal(flags, [1, 0, 0, 0, 0, 1])
    # The budget rule: max(9.1, the 90 % quantile) alone.
    np.testing.assert_allclose(rule.with_kind("budget").flags(np.array([20.0, 5, 5, 5, 5, 30]))[1],
                               [9.6, 16, 16, 16, 16, 14])  # fmt: skip


def test_a_non_finite_score_keeps_its_place_in_the_window_but_not_in_its_quantiles():
    # As above (TRAIN 1..10, window 5, r0 = 4.5 / 1.349). Before point 2 the last 5 points are 8 9 10 20 NaN: the
    # quantiles read 8 9 10 20 (not 7 8 9 10 20): median 9.5, IQR 12.5 - 8.75 = 3.75 (r0 wins), 90 % quantile
    # 10 + 0.7 * 10 = 17, so the threshold is 9.5 + 3 r0 = 19.507 (with 7 in the window it would be 9 + 3 r0).
    rule = AlarmRule.fit(np.arange(1.0, 11.0), "guarded", 90.0, 5)
    flags, thresholds, _ = rule.flags(np.array([20.0, np.nan, 5, 5]))
    np.testing.assert_array_equal(flags, [1, 1, 0, 0])
    assert thresholds[2] == pytest.approx(9.5 + 3 * 4.5 / 1.349)


def test_a_train_without_spread_turns_the_guard_off():
    # TRAIN eight 0s, then 1 and 2: its 25th and 75th percentiles are both 0, so r0 = 0 and the guard is off (the
    # budget rule). 90th percentile 1 + 0.1 * (2 - 1) = 1.1; TEST opens on the tail 0 0 0 1 2 (window 5).
    rule = AlarmRule.fit(np.array([0.0] * 8 + [1, 2]), "guarded", 90.0, 5)
    assert rule.train_spread == 0.0
    flags, thresholds, _ = rule.flags(np.array([3.0, 3.0]))
    # t0: 0 0 0 1 2 -> 90 % quantile 1.6; t1: 0 0 1 2 3 -> 2.6. A guard would have stood at median 1 plus
    # 3 * (2 - 0) / 1.349 = 5.448 at t1 and passed the second 3.
    np.testing.assert_allclose(thresholds, [1.6, 2.6])
    np.testing.assert_array_equal(flags, [1, 1])
