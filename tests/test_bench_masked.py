"""bench/masked.py: what the masked model sees while training, and how masked scoring assembles errors."""

from __future__ import annotations

import numpy as np
import torch

from bench.masked import PASSES, masked_training_model, point_errors
from model.transformer import ModelConfig

CONFIG = ModelConfig(n_channels=3, win_size=8, d_model=8, n_heads=2, e_layers=1, d_ff=8)


def seen_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.embedding.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0].clone()))
    return seen


def test_training_hides_only_the_score_channels_of_some_steps_and_scoring_hides_nothing() -> None:
    torch.manual_seed(0)
    model = masked_training_model([0], 0.25)(CONFIG)
    seen = seen_inputs(model)
    x = torch.randn(64, 8, 3) + 5.0  # no value is 0 by chance
    clean = x.clone()
    model.train()
    model(x)
    assert torch.equal(x, clean)  # the caller's window, which the losses compare with, stays clean
    hidden = seen[-1][..., 0] == 0
    assert 0.15 < hidden.float().mean() < 0.35  # about a quarter of the steps
    assert torch.equal(seen[-1][..., 1:], x[..., 1:])  # the other channels stay visible
    assert torch.equal(seen[-1][..., 0][~hidden], x[..., 0][~hidden])
    model.eval()
    model(x)
    assert torch.equal(seen[-1], x)


def test_masked_scoring_takes_each_points_error_from_the_pass_that_hid_it() -> None:
    torch.manual_seed(1)
    model = masked_training_model(None, 0.25)(CONFIG).eval()
    series = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)  # 2 windows + a tail window
    errors = point_errors(model, series, [1], masked=True)
    assert errors.shape == (20,)
    window = torch.from_numpy(series[8:16])[None]
    for offset in range(PASSES):
        hidden = window.clone()
        hidden[:, offset::PASSES, 1] = 0.0
        with torch.no_grad():
            reconstruction, _ = model(hidden)
        expected = ((reconstruction - window)[0, offset::PASSES, 1] ** 2).numpy()
        assert np.allclose(errors[8 + offset : 16 : PASSES], expected, rtol=1e-4, atol=1e-6)
    unmasked = point_errors(model, series, [1], masked=False)
    assert not np.allclose(errors, unmasked)  # hiding the value changes what the model can copy
