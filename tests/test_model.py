import math

import pytest
import torch

from model.attention import AnomalyAttention, prior_association, squash_sigma
from model.discrepancy import association_discrepancy, kl_per_step, symmetric_kl
from model.score_settings import check_score
from model.scores import SCORES, WindowOutputs
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.errors import UserInputError


def small_model(seed: int = 0, **overrides) -> AnomalyTransformer:
    torch.manual_seed(seed)
    settings = {"n_channels": 5, "win_size": 16, "d_model": 16, "n_heads": 4, "e_layers": 2, "d_ff": 32}
    return AnomalyTransformer(ModelConfig(**{**settings, **overrides}))


def test_forward_returns_reconstruction_and_every_layers_associations():
    model = small_model()
    x = torch.randn(3, 16, 5)
    reconstruction, per_layer = model(x)
    assert reconstruction.shape == (3, 16, 5)
    assert len(per_layer) == 2
    for layer in per_layer:
        assert layer.series.shape == layer.prior.shape == (3, 4, 16, 16)
        assert layer.sigma.shape == (3, 4, 16)


def test_series_and_prior_rows_sum_to_one():
    _, per_layer = small_model()(torch.randn(2, 16, 5) * 3)
    for layer in per_layer:
        torch.testing.assert_close(layer.series.sum(-1), torch.ones(2, 4, 16))
        torch.testing.assert_close(layer.prior.sum(-1), torch.ones(2, 4, 16))


def test_prior_is_a_gaussian_of_distance_peaking_on_the_diagonal():
    distance = (torch.arange(8.0)[:, None] - torch.arange(8.0)[None, :]).abs()
    sigma = torch.full((1, 1, 8), 1.5)
    prior = prior_association(sigma, distance)[0, 0]
    gaussian = torch.exp(-(distance**2) / (2 * 1.5**2)) / (math.sqrt(2 * math.pi) * 1.5)
    torch.testing.assert_close(prior, gaussian / gaussian.sum(-1, keepdim=True))
    assert torch.equal(prior.argmax(-1), torch.arange(8))


def test_sigma_stays_in_the_reference_range_even_for_extreme_inputs():
    raw = torch.tensor([-1e4, -10.0, 0.0, 10.0, 1e4])
    sigma = squash_sigma(raw)
    low, high = 3**1e-5 - 1, 3 ** (1 + 1e-5) - 1
    # float32 resolves 3^(1e-5) - 1 only to about 2 %.
    assert torch.all(sigma > 0.98 * low) and torch.all(sigma <= high * (1 + 1e-6))
    assert sigma[0] == pytest.approx(low, rel=0.02) and sigma[-1] == pytest.approx(high, rel=1e-5)
    assert sigma[2] == pytest.approx(3**0.5 - 1, rel=1e-4)


def test_tiny_sigma_gives_a_one_hot_prior_without_nan():
    attention = AnomalyAttention(d_model=8, n_heads=2, win_size=6)
    prior = prior_association(torch.full((1, 2, 6), 3**1e-5 - 1), attention.distance)
    assert torch.isfinite(prior).all()
    torch.testing.assert_close(prior[0, 0], torch.eye(6))


def test_discrepancy_is_non_negative_and_zero_when_series_equals_prior():
    p = torch.softmax(torch.randn(2, 3, 10, 10), -1)
    q = torch.softmax(torch.randn(2, 3, 10, 10), -1)
    assert torch.all(symmetric_kl(p, q) > 0)
    assert torch.all(kl_per_step(p, q) >= -1e-6)
    torch.testing.assert_close(symmetric_kl(p, p), torch.zeros(2, 10))
    torch.testing.assert_close(symmetric_kl(p, q), kl_per_step(p, q) + kl_per_step(q, p))


def test_association_discrepancy_sums_the_layers():
    _, per_layer = small_model()(torch.randn(2, 16, 5))
    total = association_discrepancy(per_layer)
    expected = symmetric_kl(per_layer[0].prior, per_layer[0].series) + symmetric_kl(
        per_layer[1].prior, per_layer[1].series
    )
    torch.testing.assert_close(total, expected)


def test_paper_score_is_the_window_softmax_of_minus_discrepancy_times_step_error():
    model = small_model().eval()
    x = torch.randn(2, 16, 5)
    reconstruction, per_layer = model(x)
    outputs = WindowOutputs(x, reconstruction, per_layer)
    step_error = ((reconstruction - x) ** 2).mean(-1)
    weight = torch.softmax(-association_discrepancy(per_layer) * 50.0, dim=-1)
    torch.testing.assert_close(SCORES["paper"].compute(outputs, None, 50.0), weight * step_error)
    torch.testing.assert_close(SCORES["reconstruction"].compute(outputs, None, 50.0), step_error)
    torch.testing.assert_close(SCORES["discrepancy"].compute(outputs, None, 50.0), -association_discrepancy(per_layer))
    with pytest.raises(KeyError):
        SCORES["magic"]
    with pytest.raises(UserInputError, match="unknown score 'magic'"):
        check_score("magic")


def test_model_rejects_heads_that_do_not_divide_d_model():
    with pytest.raises(ValueError, match="not divisible"):
        small_model(d_model=18, n_heads=4)
