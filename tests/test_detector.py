"""The Detector API: fit, score, threshold_, predict, save / load, and its extension points."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from data_factory.registry import load_synth
from data_factory.synthetic import SynthSpec
from data_factory.windows import Normalizer
from model import SCORES, AnomalyTransformer, Detector, DetectorConfig, Score
from model.alarm_rule import AlarmRule
from model.scores import reconstruction_error
from runtime.errors import UserInputError

TINY = DetectorConfig(win_size=20, d_model=16, n_heads=2, e_layers=1, d_ff=32, epochs=1, batch_size=32,
                      train_stride=10, device="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def synth():
    return load_synth(spec=SynthSpec(n_channels=4, train_length=1500, test_length=1200, n_anomalies=6, seed=5))


@pytest.fixture(scope="module")
def fitted(synth):
    return Detector(TINY).fit(synth)


def test_predict_flags_by_the_decision_rule_fitted_on_the_train_scores(fitted, synth):
    scores = fitted.score(synth.test)
    assert scores.shape == (len(synth.test),) and np.isfinite(scores).all()
    assert fitted.threshold_ == pytest.approx(np.percentile(fitted.train_scores_, 99.0))
    rule = fitted.decision_rule()
    assert rule.kind == "guarded" and rule.threshold == fitted.threshold_
    flags = fitted.predict(synth.test)
    np.testing.assert_array_equal(flags, rule.flags(scores)[0])
    assert not (flags & (scores <= fitted.threshold_)).any()  # the budget rule only ever raises the threshold
    static = Detector(replace(fitted.config, alarm_rule="train"))
    static.model_, static.normalizer_, static.scoring_ = fitted.model_, fitted.normalizer_, fitted.scoring_
    static.train_score_stats_ = fitted.train_score_stats_
    static.alarm_rule_ = AlarmRule.fit(fitted.train_scores_, "train", 99.0, 1)
    np.testing.assert_array_equal(static.predict(synth.test), (scores > fitted.threshold_).astype(np.uint8))
    assert fitted.train_channel_error_.shape == (4,)


def test_a_saved_detector_loads_with_weights_only_and_scores_identically(fitted, synth, tmp_path):
    path = fitted.save(tmp_path / "d.pth")
    torch.load(path, weights_only=True)  # plain tensors, numbers, strings, lists and dicts only
    loaded = Detector.load(path, synth)
    np.testing.assert_array_equal(loaded.score(synth.test), fitted.score(synth.test))
    assert loaded.threshold_ == fitted.threshold_ and loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.train_channel_error_, fitted.train_channel_error_)


def test_a_detector_fits_a_plain_array(synth):
    detector = Detector(TINY).fit(synth.train)
    assert detector.dataset_["name"] == "array" and detector.channel_names[0] == "channel_00"
    assert detector.score(synth.test).shape == (len(synth.test),)


def test_streamed_chunks_score_exactly_as_the_whole_series(fitted, synth):
    cuts = [0, 7, 7, 300, 301, 1000, len(synth.test)]
    parts = list(fitted.stream(synth.test[a:b] for a, b in zip(cuts, cuts[1:], strict=False)))
    np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), fitted.score(synth.test))


def test_a_given_model_is_trained_on_from_its_own_weights(synth):
    torch.manual_seed(123)
    start = AnomalyTransformer(TINY.model_config(4))
    given = Detector(TINY, model=start).fit(synth)
    fresh = Detector(TINY).fit(synth)
    assert given.model_ is start
    assert not torch.equal(given.model_.embedding.token.weight, fresh.model_.embedding.token.weight)
    with pytest.raises(UserInputError, match="3 input channels"):
        Detector(TINY, model=AnomalyTransformer(TINY.model_config(3))).fit(synth)


def test_a_given_normaliser_is_used_as_it_is(synth):
    shared = Normalizer(np.zeros(4, dtype=np.float32), np.full(4, 2.0, dtype=np.float32))
    detector = Detector(TINY, normalizer=shared).fit(synth)
    assert detector.normalizer_ is shared
    own = Detector(TINY).fit(synth)
    assert not np.array_equal(detector.train_scores_, own.train_scores_)


def test_a_score_added_to_the_registry_is_trained_with_and_stored(synth, tmp_path, monkeypatch):
    def worst_channel(outputs, channels, temperature):
        return ((outputs.reconstruction.float() - outputs.x.float()) ** 2).amax(dim=-1)

    monkeypatch.setitem(SCORES, "worst", Score("worst", worst_channel, "all", 0, "largest channel error"))
    detector = Detector(DetectorConfig(**{**TINY.to_dict(), "score": "worst"})).fit(synth)
    points = detector.score_points(synth.test)
    np.testing.assert_array_equal(points.scores, points.errors.max(axis=1))
    assert Detector.load(detector.save(tmp_path / "w.pth")).scoring_.score == "worst"


def test_the_reconstruction_error_helper_limits_the_error_to_the_named_channels():
    x, reconstruction = torch.zeros(1, 2, 3), torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]])
    outputs = type("Outputs", (), {"x": x, "reconstruction": reconstruction})
    torch.testing.assert_close(reconstruction_error(outputs, [2]), torch.tensor([[9.0, 36.0]]))
    torch.testing.assert_close(reconstruction_error(outputs, None), torch.tensor([[14 / 3, 12.0]]))


def test_an_unfitted_detector_says_so():
    with pytest.raises(UserInputError, match="not fitted"):
        Detector(TINY).score(np.zeros((50, 4), dtype=np.float32))


def test_a_dataset_built_by_hand_is_checked_as_the_loaders_check_theirs(synth):
    train = synth.train.astype(np.float64)
    train[123, 1] = np.nan
    with pytest.raises(UserInputError, match=r"first at row 123, column sensor_01"):
        Detector(TINY).fit(replace(synth, train=train))
    with pytest.raises(UserInputError, match="names 3 channels but its train has 4 columns"):
        Detector(TINY).fit(replace(synth, channel_names=synth.channel_names[:3]))


def test_a_dataframe_keeps_its_column_names_and_is_scored_by_them(synth):
    import pandas as pd

    names = ["temp", "pressure", "flow", "level"]
    detector = Detector(TINY).fit(pd.DataFrame(synth.train, columns=names))
    assert detector.channel_names == names
    test = pd.DataFrame(synth.test, columns=names)
    reordered = test[["flow", "level", "temp", "pressure"]]  # as a CSV with another column order reads
    np.testing.assert_array_equal(detector.score(reordered), detector.score(test))
    np.testing.assert_array_equal(detector.predict(reordered), detector.predict(synth.test))
    chunks = [reordered.iloc[:500], reordered.iloc[500:]]
    streamed = np.concatenate([part.scores for part in detector.stream(chunks)])
    np.testing.assert_array_equal(streamed, detector.score(test))
    renamed = pd.DataFrame(synth.test, columns=["temp", "pressure", "rate", "level"])
    with pytest.warns(UserWarning, match=r"not the model's channels \(missing flow; extra rate\): taken by position"):
        detector.score(renamed)
    stamped = pd.DataFrame(synth.train, columns=names).assign(timestamp="2026-01-01")
    with pytest.raises(UserInputError, match=r"non-numeric columns \['timestamp'\].*df.set_index\('timestamp'\)"):
        Detector(TINY).fit(stamped)


def test_a_dataframe_of_pandas_nullable_numbers_is_read_as_floats_and_its_na_as_missing(synth):
    import pandas as pd

    names = ["temp", "pressure", "flow", "level"]
    nullable = pd.DataFrame(synth.train, columns=names).astype("Float64")  # as read with dtype_backend
    detector = Detector(TINY).fit(nullable)
    plain = Detector(TINY).fit(pd.DataFrame(synth.train, columns=names))
    test = pd.DataFrame(synth.test, columns=names)
    np.testing.assert_array_equal(detector.score(test.astype("Float64")), plain.score(test))
    np.testing.assert_array_equal(detector.predict(test.astype("Float64")), plain.predict(test))
    gap = test.astype("Float64")
    gap.iloc[7, 2] = pd.NA
    with pytest.raises(UserInputError, match=r"1 NaN/Inf values in 1 rows \(first at row 7, column flow\)"):
        detector.score(gap)
    with pytest.raises(UserInputError, match="must hold real numbers"):  # booleans stay refused
        Detector(TINY).fit(pd.DataFrame(synth.train > 0, columns=names).astype("boolean"))


def test_a_missing_value_in_a_scored_dataframe_is_named_by_its_column_as_in_fit(fitted, synth):
    import pandas as pd

    test = pd.DataFrame(synth.test, columns=fitted.channel_names)
    test.iloc[11, 3] = np.nan
    with pytest.raises(UserInputError, match=r"first at row 11, column sensor_03\)"):
        fitted.score(test[fitted.channel_names[::-1]])  # the model's order is restored before the check
    with pytest.raises(UserInputError, match=r"first at row 11, column 3\)"):  # an array: by position
        fitted.score(test.to_numpy())


def test_a_series_shorter_than_the_window_is_refused_with_the_retraining_fix(fitted, synth):
    fix = "fewer than the window of 20; retrain with a smaller train.py --win-size, or give a longer series"
    with pytest.raises(UserInputError, match=f"^the series to score has 19 time steps, {fix}$"):
        fitted.score(synth.test[:19])
    with pytest.raises(UserInputError, match=f"^the series has 5 time steps, {fix}$"):
        list(fitted.stream([synth.test[:5]]))


def test_a_streamed_chunk_is_checked_as_a_whole_series_is(fitted, synth):
    bad = synth.test[:300].copy()
    bad[7, 2] = np.nan
    with pytest.raises(UserInputError, match="a chunk of the series to score has 1 NaN/Inf values"):
        list(fitted.stream([synth.test[:200], bad]))
    with pytest.raises(UserInputError, match="has 2 channels but 4 were expected"):
        list(fitted.stream([synth.test[:200, :2]]))
    empty = [synth.test[:0], synth.test[:300]]  # an empty chunk between reads passes
    streamed = np.concatenate([part.scores for part in fitted.stream(empty)])
    np.testing.assert_array_equal(streamed, fitted.score(synth.test[:300]))


def test_channel_names_must_be_told_apart_and_a_failed_baseline_fit_leaves_it_unfitted(synth):
    import pandas as pd

    from evaluation.baselines import METHODS

    with pytest.raises(UserInputError, match="names channel 'a' more than once"):
        Detector(TINY).fit(pd.DataFrame(synth.train, columns=["a", "a", "b", "c"]))
    with pytest.raises(UserInputError, match="names channel '1' more than once"):  # equal once read as text
        Detector(TINY).fit(pd.DataFrame(synth.train, columns=[1, "1", 2, 3]))
    knn = METHODS["knn"].build(seed=0)
    with pytest.raises(UserInputError):
        knn.fit(synth.train[:10])  # too few rows for its neighbours
    with pytest.raises(UserInputError, match="is not fitted yet"):
        knn.score(synth.test)


def test_loading_the_wrong_kind_of_model_file_names_the_python_call_that_reads_it(fitted, tmp_path):
    from model.fleet import Fleet, open_fleet

    single = fitted.save(tmp_path / "one.pth")
    bundle = Fleet("SYNTH", fitted.config, detectors={"east": fitted}, order=["east"]).save(tmp_path / "fleet.pth")
    with pytest.raises(UserInputError, match=r"in Python: model\.fleet\.Fleet\.load\(path\)\.detector\(NAME\)"):
        Detector.load(bundle)
    with pytest.raises(UserInputError, match=r"in Python: Detector\.load\(path\)"):
        Fleet.load(single)
    # The calls it names do read them.
    np.testing.assert_array_equal(Fleet.load(bundle).detector("east").train_channel_error_, fitted.train_channel_error_)
    assert open_fleet(single).single


def test_a_single_series_fits_as_one_channel_and_a_1d_series_for_many_channels_says_how_many(fitted, synth):
    import pandas as pd

    one = synth.train[:, 1]
    column = Detector(TINY).fit(one[:, None])
    flat = Detector(TINY).fit(one)
    np.testing.assert_array_equal(flat.score(synth.test[:, 1]), column.score(synth.test[:, 1:2]))
    named = Detector(TINY).fit(pd.Series(one, name="pressure"))
    assert named.channel_names == ["pressure"]
    with pytest.raises(UserInputError, match=r"got shape \(1200,\); give all 4$"):
        fitted.score(synth.test[:, 0])
    with pytest.raises(UserInputError, match=r"got shape \(2, 3, 4\)$"):
        Detector(TINY).fit(np.zeros((2, 3, 4)))


def test_score_channels_given_as_a_python_list_of_names_or_indices_are_the_flags_text(synth):
    import pandas as pd

    frame = pd.DataFrame(synth.train, columns=["a", "b", "c", "d"])
    by_name = Detector(replace(TINY, score_channels=["d", "b"])).fit(frame)
    by_index = Detector(replace(TINY, score_channels=(1, 3))).fit(frame)
    as_text = Detector(replace(TINY, score_channels="b,d")).fit(frame)
    assert by_name.scoring_.channels == by_index.scoring_.channels == as_text.scoring_.channels == (1, 3)
    assert by_name.config.score_channels == "d,b"  # stored as train.py stores the flag
    np.testing.assert_array_equal(by_index.score(frame), as_text.score(frame))


def test_fitting_twice_starts_each_time_from_the_given_model_s_weights(synth):
    torch.manual_seed(7)
    detector = Detector(TINY, model=AnomalyTransformer(TINY.model_config(4)))
    first = detector.fit(synth).score(synth.test)
    np.testing.assert_array_equal(detector.fit(synth).score(synth.test), first)  # not trained on from the first fit


def test_a_batch_size_that_is_not_a_positive_whole_number_is_refused_not_replaced(fitted, synth):
    np.testing.assert_array_equal(fitted.score(synth.test, batch_size=7), fitted.score(synth.test))
    for bad in (0, -5, 2.5):
        with pytest.raises(UserInputError, match=f"^batch_size must be a positive whole number, got {bad}$"):
            fitted.score(synth.test, batch_size=bad)
        with pytest.raises(UserInputError, match="batch_size must be a positive whole number"):
            list(fitted.stream([synth.test], batch_size=bad))


def test_a_dataframe_column_that_is_not_real_numbers_is_named_with_the_fix(fitted, synth):
    import pandas as pd

    frame = pd.DataFrame(synth.test, columns=fitted.channel_names).assign(sensor_02=lambda f: f.sensor_02 > 0)
    with pytest.raises(UserInputError, match=r"got dtype object from its columns sensor_02 \(bool\); convert them"):
        fitted.score(frame)
    np.testing.assert_array_equal(fitted.score(frame.astype(float)), fitted.score(frame.to_numpy(np.float64)))
