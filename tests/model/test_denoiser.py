import torch

from diffworld.diffusion.loss import edm_weight
from diffworld.model.denoiser import Denoiser, edm_scalings
from tests.model.test_dit import inputs, make_dit

SIGMAS = torch.logspace(-3, 2, 50, dtype=torch.float64)


def test_input_scaling_gives_unit_variance():
    for sd in (0.5, 1.0, 0.2):
        _, _, c_in, _ = edm_scalings(SIGMAS, sd)
        assert torch.allclose(c_in**2 * (SIGMAS**2 + sd**2), torch.ones_like(SIGMAS))


def test_training_target_has_unit_variance():
    """Var[(x − c_skip·(x + σn)) / c_out] = 1 for x ~ (0, σ_d²), n ~ (0, 1): EDM's choice of c_skip, c_out."""
    for sd in (0.5, 1.0):
        c_skip, c_out, _, _ = edm_scalings(SIGMAS, sd)
        var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * SIGMAS**2) / c_out**2
        assert torch.allclose(var, torch.ones_like(var))


def test_loss_weight_cancels_output_scale():
    c_skip, c_out, _, _ = edm_scalings(SIGMAS, 0.5)
    assert torch.allclose(edm_weight(SIGMAS, 0.5) * c_out**2, torch.ones_like(SIGMAS))


def test_noise_label_and_limits():
    c_skip, c_out, _, c_noise = edm_scalings(SIGMAS, 0.5)
    assert torch.allclose(c_noise, SIGMAS.log() / 4)
    assert c_skip[0] > 0.9999 and c_out[0] < 0.0021  # σ → 0: D(x; σ) → x
    assert c_skip[-1] < 1e-4  # σ → ∞: the skip connection closes


def test_denoiser_is_skip_plus_scaled_network():
    net = make_dit()
    den = Denoiser(net, sigma_data=0.5)
    x, _, a, t = inputs()
    sigma = torch.rand(2, 5) * 3 + 0.01
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, 0.5)
    e = (...,) + (None,) * 3
    expected = c_skip[e] * x + c_out[e] * net(c_in[e] * x, c_noise, a, t)
    assert torch.allclose(den(x, sigma, a, t), expected, atol=1e-6)
