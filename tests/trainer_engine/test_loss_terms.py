"""The two loss options of the loop, checked against their formulas: min-SNR-gamma weights and the noise offset.

Both are computed by small pure functions in loradeck.trainer.train.loop that the loop calls once per micro-batch.
The expected values here are computed in plain float64 from the scheduler's alphas_cumprod, not with the code under
test's own arithmetic."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from loradeck.trainer.train.loop import min_snr_weights, training_noise

TIMESTEPS = [0, 1, 10, 50, 100, 250, 500, 750, 900, 999]


@pytest.fixture(scope="module")
def scheduler():
    """Stable Diffusion 1.x's training schedule (scaled-linear betas, 1000 steps)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def snr_of(scheduler, t: int) -> float:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t), in float64."""
    alpha_bar = float(scheduler.alphas_cumprod[t].double())
    return alpha_bar / (1.0 - alpha_bar)


@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
def test_min_snr_weights_for_epsilon_prediction_are_min_snr_gamma_over_snr(scheduler, gamma):
    weights = min_snr_weights(scheduler, torch.tensor(TIMESTEPS), gamma, "epsilon")
    expected = [min(snr_of(scheduler, t), gamma) / snr_of(scheduler, t) for t in TIMESTEPS]
    assert weights.shape == (len(TIMESTEPS),)
    assert weights.double().tolist() == pytest.approx(expected, rel=1e-4)
    # The effect: easy (high-SNR, low-noise) timesteps are down-weighted, noisy ones keep weight 1.
    assert weights[0] < 0.05 and weights[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_for_v_prediction_are_min_snr_gamma_over_snr_plus_one(scheduler, gamma):
    weights = min_snr_weights(scheduler, torch.tensor(TIMESTEPS), gamma, "v_prediction")
    expected = [min(snr_of(scheduler, t), gamma) / (snr_of(scheduler, t) + 1.0) for t in TIMESTEPS]
    assert weights.double().tolist() == pytest.approx(expected, rel=1e-4)


def test_min_snr_weights_follow_each_samples_own_timestep(scheduler):
    """A batch with repeated and shuffled timesteps gets each sample's own weight."""
    t = torch.tensor([999, 0, 500, 0])
    weights = min_snr_weights(scheduler, t, 5.0, "epsilon")
    assert weights[1] == weights[3]
    assert weights.tolist() == pytest.approx([min(snr_of(scheduler, int(s)), 5.0) / snr_of(scheduler, int(s))
                                              for s in t], rel=1e-4)


SHAPE = (3, 4, 8, 8)  # (batch, channels, height, width) of a latent batch


def noise_with(offset: float, seed: int = 7) -> torch.Tensor:
    return training_noise(SHAPE, offset, torch.Generator().manual_seed(seed))


def test_without_an_offset_the_noise_is_one_plain_gaussian_draw():
    gen = torch.Generator().manual_seed(7)
    expected = torch.randn(SHAPE, generator=gen)
    assert torch.equal(noise_with(0.0), expected)
    # ...and it takes nothing more from the generator (the timesteps drawn next stay the same).
    gen_used = torch.Generator().manual_seed(7)
    training_noise(SHAPE, 0.0, gen_used)
    assert torch.equal(torch.randn(5, generator=gen_used), torch.randn(5, generator=gen))


def test_the_noise_offset_adds_offset_times_one_draw_per_sample_and_channel():
    offset = 0.1
    shifted, plain = noise_with(offset), noise_with(0.0)
    shift = shifted - plain
    # Constant over the spatial dims: one value per (sample, channel)...
    per_channel = shift.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(shift, per_channel.expand(SHAPE), atol=1e-6)
    # ...equal to offset times the (b, c, 1, 1) draw that follows the plain noise in the generator.
    gen = torch.Generator().manual_seed(7)
    torch.randn(SHAPE, generator=gen)
    draw = torch.randn((SHAPE[0], SHAPE[1], 1, 1), generator=gen)
    assert torch.allclose(per_channel, offset * draw, atol=1e-6)
    assert per_channel.abs().max() > 0  # it did shift something


def test_the_noise_shift_scales_with_the_offset():
    plain = noise_with(0.0)
    small, large = noise_with(0.05) - plain, noise_with(0.2) - plain
    assert torch.allclose(large, 4 * small, atol=1e-5)
