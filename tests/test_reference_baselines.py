import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.tsb_vus_check import telemanom_entity
from data_factory.windows import Normalizer
from evaluation import baselines
from evaluation.baseline_api import SERIES, TRAIN, Baseline, FittedOnSeries
from evaluation.baselines import METHODS, REFERENCE_BASELINES, Method, baseline_scores, parse_baselines
from evaluation.fleet_report import PER_ENTITY_METRICS, EntityScores, FleetEvaluation, format_fleet_table
from evaluation.sarfraz_baselines import L2Norm, NearestTrainDistance, PcaError, SensorRangeDeviation, pca_dimension
from evaluation.tsb_baselines import TsbCnn, TsbPca
from model.alarm_rule import AlarmSettings
from runtime.errors import UserInputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class MeanLevel(Baseline):
    """A toy baseline: the distance of each point's mean to TRAIN's mean."""

    def _fit(self, train):
        self.level_ = train.mean()
        return self.score(train)

    def _score(self, series):
        return np.abs(series.mean(axis=1) - self.level_)


def test_a_baseline_added_to_the_registry_is_selectable_and_scored(monkeypatch):
    monkeypatch.setitem(METHODS, "mean_level", Method(lambda seed, channels: MeanLevel(), TRAIN, "toy"))
    assert parse_baselines("random, mean_level") == ("random", "mean_level")
    train, test = np.zeros((5, 2)), np.array([[1.0, 3.0], [0.0, 0.0]])
    train_scores, test_scores = baseline_scores("mean_level", train, test)
    np.testing.assert_array_equal(train_scores, np.zeros(5))
    np.testing.assert_array_equal(test_scores, [2.0, 0.0])


def test_an_unknown_baseline_is_one_line_naming_the_choices():
    empty = np.zeros((3, 1))
    for call in (lambda: parse_baselines("pca,lof"), lambda: baseline_scores("lof", empty, empty)):
        with pytest.raises(UserInputError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and "'lof'" in message and "tsb_pca_series" in message and "reference" in message


def test_every_registered_baseline_runs_in_its_declared_fit_mode():
    for name, method in METHODS.items():
        built = method.build(seed=0, channels=None)
        assert isinstance(built, Baseline) and built.fit_mode == method.fit_mode, name
        assert method.description and (name.endswith("_series") == (method.fit_mode == SERIES)), name
    assert "tsb_cnn" in REFERENCE_BASELINES and "tsb_cnn" not in baselines.DEFAULT_FLEET_BASELINES
    assert parse_baselines("reference") == REFERENCE_BASELINES and parse_baselines("all") == tuple(METHODS)


def test_every_fitted_baseline_pickles_and_scores_the_same_after(tmp_path):
    import pickle

    rng = np.random.default_rng(1)
    train, series = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    for name, method in METHODS.items():
        if name == "tsb_cnn":  # a torch model that takes seconds to train; it holds no factory of its own
            continue
        fitted = method.build(seed=0).fit(train)
        restored = pickle.loads(pickle.dumps(fitted))  # e.g. by joblib, to score in another process
        np.testing.assert_array_equal(restored.score(series), fitted.score(series), err_msg=name)


def test_series_mode_fits_the_series_it_scores_and_takes_its_threshold_from_train():
    rng = np.random.default_rng(0)
    train, series = rng.normal(size=(300, 3)), rng.normal(size=(200, 3)) + 5.0

    def make():
        return baselines.WindowKMeans(window=10, n_clusters=4, seed=0)

    fitted = FittedOnSeries(make).fit(train)
    np.testing.assert_array_equal(fitted.score(series), make().fit(series).train_scores_)
    np.testing.assert_array_equal(fitted.train_scores_, make().fit(train).train_scores_)
    assert fitted.threshold_ == np.percentile(fitted.train_scores_, 99)
    # Fitted on TRAIN instead, the shifted series is far from every centroid of the level-keeping variant.
    level = baselines.WindowKMeans(window=10, n_clusters=4, seed=0, standardise=False).fit(train)
    assert level.score(series).min() > level.train_scores_.max()
    assert (
        FittedOnSeries(lambda: baselines.WindowKMeans(window=10, n_clusters=4, standardise=False))
        .fit(train)
        .score(series)
        .max()
        < level.score(series).min()
    )


def test_sensor_range_deviation_and_l2_norm_on_a_hand_computed_toy():
    train = np.array([[0.0, 10.0], [2.0, 30.0]])  # TRAIN's range: [0, 2] and [10, 30]
    test = np.array([[1.0, 20.0], [3.0, 20.0], [-1.0, 40.0], [2.0, 30.0]])  # scaled: (.5,.5) (1.5,.5) (-.5,1.5) (1,1)
    deviation = SensorRangeDeviation().fit(train)
    np.testing.assert_array_equal(deviation.train_scores_, [0.0, 0.0])
    np.testing.assert_array_equal(deviation.score(test), [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(deviation.predict(test), [0, 1, 1, 0])
    norm = L2Norm().fit(train)
    np.testing.assert_allclose(norm.train_scores_, [0.0, np.sqrt(2.0)])
    np.testing.assert_allclose(norm.score(test), np.sqrt([0.5, 2.5, 2.5, 2.0]))


def test_nearest_train_distance_on_a_hand_computed_toy():
    train = np.array([[0.0, 10.0], [2.0, 30.0], [1.0, 10.0]])  # scaled: (0, 0), (1, 1), (0.5, 0)
    nearest = NearestTrainDistance().fit(train)
    # Each TRAIN point's nearest other TRAIN point: (0.5, 0), (0.5, 0), (0, 0).
    np.testing.assert_allclose(nearest.train_scores_, [0.5, np.sqrt(1.25), 0.5])
    np.testing.assert_allclose(nearest.score(np.array([[2.0, 10.0], [0.0, 10.0]])), [0.5, 0.0])


def test_pca_error_is_the_distance_off_trains_plane():
    assert [pca_dimension(c) for c in (1, 3, 9, 12, 38, 50, 51, 55)] == [1, 2, 2, 10, 10, 10, 30, 30]
    rng = np.random.default_rng(1)
    train = np.column_stack([rng.random(50), rng.random(50), np.full(50, 5.0)])  # on the plane z = 5, scaled z = 0
    error = PcaError().fit(train)  # 3 channels: 2 components, the plane
    np.testing.assert_allclose(error.train_scores_, 0.0, atol=1e-12)
    on_plane, off_plane = [train[0, 0], train[0, 1], 5.0], [train[0, 0], train[0, 1], 8.0]  # scaled z = 0 and 3
    np.testing.assert_allclose(error.score(np.array([on_plane, off_plane])), [0.0, 3.0], atol=1e-9)


def test_tsb_pca_weighs_each_eigenvectors_distance_by_its_variance_ratio():
    # Window 1 on two channels: the PCA of the z-scored points, scored as sum_j ||x - v_j|| / r_j.
    rng = np.random.default_rng(2)
    train = rng.normal(size=(500, 2)) @ np.array([[3.0, 1.0], [0.0, 0.5]])
    pca = TsbPca(window=1, n_components=None).fit(train)
    standard = (train - train.mean(axis=0)) / train.std(axis=0)
    variances, vectors = np.linalg.eigh(np.cov(standard.T))
    ratios, vectors = variances / variances.sum(), vectors.T  # rows: the eigenvectors, up to their sign
    for point, score in zip(standard[:5], pca.train_scores_[:5], strict=True):
        # Each eigenvector's sign is scikit-learn's choice: one of the four sign pairs gives the score.
        totals = [
            sum(
                np.linalg.norm(point - sign * vector) / ratio
                for sign, vector, ratio in zip(signs, vectors, ratios, strict=True)
            )
            for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1))
        ]
        assert min(abs(total - score) for total in totals) <= 1e-6 * score


@pytest.fixture(scope="module")
def msl_channel():
    if not (SHARED_DATA / "MSL" / "channels.csv").exists():
        pytest.skip("MSL is not under ../shared/data")
    train, test, _ = telemanom_entity(SHARED_DATA / "MSL", "C-1")
    normalizer = Normalizer.fit(train)
    return normalizer.transform(train)[:600], normalizer.transform(test)[:400]


@pytest.mark.parametrize("name", [name for name in REFERENCE_BASELINES if name != "tsb_cnn"])
def test_each_reference_baseline_on_a_real_msl_channel(msl_channel, name):
    train, test = msl_channel
    fitted = METHODS[name].build(seed=0).fit(train)
    scores = fitted.score(test)
    assert fitted.train_scores_.shape == (len(train),) and scores.shape == (len(test),)
    assert np.isfinite(scores).all() and np.isfinite(fitted.train_scores_).all()
    assert fitted.threshold_ == np.percentile(fitted.train_scores_, 99)
    flags = METHODS[name].build(seed=0).fit(train).predict(test)  # a fresh fit: random's stream starts again
    np.testing.assert_array_equal(flags, (scores > fitted.threshold_).astype(np.uint8))
    if METHODS[name].fit_mode == SERIES:  # fitted on the series it scores: TRAIN does not change the scores
        np.testing.assert_array_equal(scores, METHODS[name].build(seed=0).fit(train[:300]).score(test))


def test_tsb_cnn_trains_on_train_and_forecasts_a_real_msl_channel(msl_channel):
    train, test = msl_channel
    cnn = TsbCnn(epochs=3, seed=0).fit(train)
    scores = cnn.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[:50], scores[50])  # the first window's forecast covers the first 50 steps
    np.testing.assert_array_equal(TsbCnn(epochs=3, seed=0).fit(train).score(test), scores)  # seeded
    with pytest.raises(UserInputError, match="the CNN needs more than 50"):
        cnn.score(test[:50])


def test_the_fleet_table_keeps_a_cell_with_a_count_apart_from_the_next():
    labels = np.array([0, 1, 0, 1], dtype=np.uint8)
    metrics = dict.fromkeys(PER_ENTITY_METRICS, 0.5) | {"roc_auc": 0.844, "f1": 0.7}
    entities = []
    for index, f1 in enumerate((0.7, None)):  # the second entity's F1 left out: the mean counts 1 of 2
        scored = EntityScores(f"E-{index}", labels, {}, {})
        scored.metrics = {"model": dict(metrics), "kmeans_level_series": {**metrics, "f1": f1}}
        entities.append(scored)
    evaluation = FleetEvaluation("MSL", ["model", "kmeans_level_series"], entities, {}, {}, AlarmSettings())
    rows = [line for line in format_fleet_table(evaluation).splitlines() if line.startswith(("model", "kmeans"))]
    ranking, alarms = rows[:2], rows[2:]
    for row in ranking:  # the method and four ranking cells, each pair at least two spaces apart
        assert len(re.split(r"\s{2,}", row.strip())) == 5, row
    for row in alarms:  # the method and nine alarm cells
        assert len(re.split(r"\s{2,}", row.strip())) == 10, row
    assert "0.844 ± 0.000  " in ranking[1]
    assert re.split(r"\s{2,}", alarms[1].strip())[1] == "0.700 ± 0.000 (1)"


@pytest.mark.parametrize("name", ["pca", "knn", "sarfraz_nn", "kmeans"])
def test_a_baseline_used_by_hand_refuses_bad_input_in_one_line(name):
    train = np.random.default_rng(0).normal(size=(400, 3))
    fresh = METHODS[name].build(seed=0)
    with pytest.raises(UserInputError, match="is not fitted yet; call fit"):
        fresh.predict(train)
    with pytest.raises(UserInputError, match=r"must be a non-empty 2-D array .* got shape \(400,\)"):
        METHODS[name].build(seed=0).fit(train[:, 0])
    nan = train.copy()
    nan[5, 1] = np.nan
    with pytest.raises(UserInputError, match="holds NaN/Inf"):
        METHODS[name].build(seed=0).fit(nan)
    fitted = METHODS[name].build(seed=0).fit(train)
    with pytest.raises(UserInputError, match="has 2 channels but the baseline was fitted on 3"):
        fitted.score(train[:, :2])
    assert fitted.predict(train).shape == (400,)


@pytest.mark.parametrize("name", ["pca", "knn", "sarfraz_nn"])
def test_a_baseline_reads_a_dataframe_of_pandas_nullable_numbers_as_floats(name):
    import pandas as pd

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(400, 3)), rng.normal(size=(200, 3))
    plain = METHODS[name].build(seed=0).fit(train)
    nullable = METHODS[name].build(seed=0).fit(pd.DataFrame(train).astype("Float64"))
    # to rounding: a DataFrame's array is column-major (PCA's error on these iid channels is about 1e-31)
    np.testing.assert_allclose(nullable.score(pd.DataFrame(test).astype("Float64")), plain.score(test), atol=1e-12)
    gap = pd.DataFrame(test).astype("Float64")
    gap.iloc[3, 1] = pd.NA
    with pytest.raises(UserInputError, match="holds NaN/Inf"):  # a missing value, not 'non-numbers'
        nullable.score(gap)


def test_tsb_cnn_scores_a_read_only_array_the_same_and_without_a_warning():
    series = np.sin(np.arange(400)[:, None] / 9 + np.arange(2)).astype(np.float32)
    cnn = TsbCnn(epochs=1, seed=0).fit(series[:300])
    frozen = series[300:].copy()
    frozen.flags.writeable = False  # as a DataFrame's values can be: torch warned it could not write to them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = cnn.score(frozen)
    np.testing.assert_array_equal(scores, cnn.score(series[300:].copy()))
