"""The model's fast kernels against the plain definition (tests/plain_math.py) on identical weights:
the joint Q/K/V/sigma product, the position-wise linear feed-forward, the prior and the paired
discrepancy with written-out gradients, and the scoring pass that skips the associations."""

import numpy as np
import pytest
import torch

from model.attention import prior_association
from model.discrepancy import minimax_losses, paired_discrepancy
from model.score_settings import ScoreSettings
from model.scores import SCORES, WindowOutputs
from model.scoring import score_series
from model.transformer import AnomalyTransformer, ModelConfig
from tests.plain_math import plain_discrepancy, plain_forward, plain_losses

CONFIGS = [
    ModelConfig(n_channels=5, win_size=16, d_model=16, n_heads=4, e_layers=2, d_ff=32),
    ModelConfig(n_channels=3, win_size=24, d_model=24, n_heads=3, e_layers=3, d_ff=8),
    ModelConfig(n_channels=7, win_size=10, d_model=64, n_heads=8, e_layers=1, d_ff=64),
]
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def model_and_batch(config: ModelConfig, seed: int) -> tuple[AnomalyTransformer, torch.Tensor]:
    torch.manual_seed(seed)
    model = AnomalyTransformer(config)
    return model, torch.randn(4, config.win_size, config.n_channels) * 2


@pytest.mark.parametrize("config", CONFIGS)
def test_the_forward_pass_equals_the_plain_definition(config):
    model, x = model_and_batch(config, 0)
    reconstruction, per_layer = model(x)
    plain_reconstruction, plain_layers = plain_forward(model, x)
    torch.testing.assert_close(reconstruction, plain_reconstruction, **CLOSE)
    for layer, (series, prior, sigma) in zip(per_layer, plain_layers, strict=True):
        torch.testing.assert_close(layer.series, series, **CLOSE)
        torch.testing.assert_close(layer.prior, prior, **CLOSE)
        torch.testing.assert_close(layer.sigma, sigma, **CLOSE)


@pytest.mark.parametrize("config", CONFIGS)
def test_losses_and_every_gradient_equal_the_reference_two_backward_passes(config):
    model, x = model_and_batch(config, 1)
    model.zero_grad(set_to_none=True)
    rec, loss1, loss2 = plain_losses(model, x, k=3.0)
    loss1.backward(retain_graph=True)
    loss2.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    losses = minimax_losses(x, *model(x), k=3.0)
    losses.total.backward()
    for got, expected in ((losses.reconstruction, rec), (losses.loss1, loss1), (losses.loss2, loss2)):
        torch.testing.assert_close(got, expected, **CLOSE)
    assert len(reference) == len(list(model.parameters()))
    # Some gradients are zero in exact arithmetic (the key bias: a softmax ignores a constant added to
    # its row) and rounding noise in both; they are held to the scale of the model's largest gradient.
    scale = max(float(grad.abs().max()) for grad in reference.values())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_the_prior_gradient_is_the_derivative():
    torch.manual_seed(2)
    sigma = (torch.rand(2, 3, 9, dtype=torch.float64) * 2 + 0.05).requires_grad_()
    steps = torch.arange(9, dtype=torch.float64)
    distance = (steps[:, None] - steps[None, :]).abs()
    assert torch.autograd.gradcheck(lambda s: prior_association(s, distance), (sigma,))


def test_the_paired_discrepancy_gradients_are_the_derivatives_of_each_stop_gradient_side():
    torch.manual_seed(3)
    series = torch.softmax(torch.randn(2, 3, 7, 7, dtype=torch.float64), -1).requires_grad_()
    prior = torch.softmax(torch.randn(2, 3, 7, 7, dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, p: paired_discrepancy(s, p)[0], (series, prior.detach()))
    assert torch.autograd.gradcheck(lambda s, p: paired_discrepancy(s, p)[1], (series.detach(), prior))
    to_series, to_prior = paired_discrepancy(series, prior)
    to_series.sum().backward(retain_graph=True)
    assert prior.grad is None  # the series side holds the prior fixed
    to_prior.sum().backward()
    assert prior.grad is not None and torch.count_nonzero(prior.grad) > 0
    torch.testing.assert_close(to_series, to_prior)


@pytest.mark.parametrize("config", CONFIGS)
def test_the_discrepancy_scores_equal_the_plain_definition(config):
    model, x = model_and_batch(config, 4)
    with torch.no_grad():
        outputs = WindowOutputs(x, *model(x))
        torch.testing.assert_close(-SCORES["discrepancy"].compute(outputs, None, 50.0), plain_discrepancy(model, x),
                                   **CLOSE)  # fmt: skip


def test_scoring_without_the_associations_gives_the_same_reconstruction_scores():
    model, _ = model_and_batch(CONFIGS[0], 5)
    series = np.random.default_rng(0).standard_normal((203, 5)).astype(np.float32)
    settings = ScoreSettings("reconstruction", 50.0, None, 0)
    assert not SCORES["reconstruction"].needs_associations
    skipped = score_series(model, series, settings, batch_size=4)
    with torch.no_grad():
        full, per_layer = model(torch.from_numpy(series[:16])[None])
        lean, none = model(torch.from_numpy(series[:16])[None], associations=False)
    assert len(per_layer) == 2 and none == []
    assert torch.equal(full, lean)
    expected = ((lean - torch.from_numpy(series[:16])) ** 2).mean(-1)[0]
    np.testing.assert_allclose(skipped.scores[:16], expected, rtol=1e-5)
