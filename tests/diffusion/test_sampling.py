import math

import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig, draw_marginal, karras_sigmas, one_hot_argmax, sample


def test_karras_schedule_endpoints_and_order():
    s = karras_sigmas(8, 0.002, 80.0, 7.0)
    assert len(s) == 9 and s[-1] == 0
    assert torch.isclose(s[0], torch.tensor(80.0)) and torch.isclose(s[-2], torch.tensor(0.002))
    assert (s[:-1] > s[1:]).all()
    assert torch.equal(karras_sigmas(1, 0.002, 5.0), torch.tensor([5.0, 0.0]))


def gaussian_denoiser(sd: float):
    """The exact D(x; σ) = E[x0 | x] for x0 ~ N(0, sd²)."""
    return lambda x, sigma: x * sd**2 / (sigma**2 + sd**2)


def exact_solution(x_max: torch.Tensor, sigma_max: float, sd: float) -> torch.Tensor:
    """The probability-flow ODE of N(0, sd²) data scales x by sqrt(σ² + sd²): its value at σ = 0."""
    return x_max * sd / (sigma_max**2 + sd**2) ** 0.5


@pytest.mark.parametrize("method,steps,tol", [("euler", 256, 0.01), ("heun", 32, 0.01)])
def test_sampler_solves_the_gaussian_ode(method, steps, tol):
    sd, sigma_max = 0.5, 80.0
    x = sample(
        gaussian_denoiser(sd),
        (20000,),
        karras_sigmas(steps, 0.002, sigma_max),
        torch.Generator().manual_seed(0),
        method,
    )
    x_max = torch.randn(20000, generator=torch.Generator().manual_seed(0)) * sigma_max
    assert (x - exact_solution(x_max, sigma_max, sd)).abs().mean() < tol
    assert abs(x.std().item() - sd) < 0.02


def test_heun_converges_faster_than_euler():
    """Doubling the steps divides Euler's error by ~2 (1st order) and Heun's by ~4 (2nd order)."""
    sd, sigma_max = 0.5, 80.0
    x_max = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * sigma_max
    exact = exact_solution(x_max, sigma_max, sd)
    err = {}
    for method in ("euler", "heun"):
        for steps in (32, 64):
            g = torch.Generator().manual_seed(0)
            x = sample(gaussian_denoiser(sd), (4000,), karras_sigmas(steps, 0.002, sigma_max), g, method)
            err[method, steps] = (x - exact).abs().mean().item()
    assert 1.6 < err["euler", 32] / err["euler", 64] < 2.6
    assert err["heun", 32] / err["heun", 64] > 3.0
    assert err["heun", 32] < err["euler", 32] / 4


def test_sampling_is_seeded():
    den = gaussian_denoiser(1.0)
    a = sample(den, (5,), karras_sigmas(3, 0.002, 5.0), torch.Generator().manual_seed(3))
    b = sample(den, (5,), karras_sigmas(3, 0.002, 5.0), torch.Generator().manual_seed(3))
    c = sample(den, (5,), karras_sigmas(3, 0.002, 5.0), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_churn_keeps_the_distribution_and_renoises_along_the_way():
    sd, sigma_max = 0.5, 80.0
    sigmas = karras_sigmas(64, 0.002, sigma_max)
    plain = sample(gaussian_denoiser(sd), (20000,), sigmas, torch.Generator().manual_seed(0), "heun")
    churned = sample(gaussian_denoiser(sd), (20000,), sigmas, torch.Generator().manual_seed(0), "heun", churn=20.0)
    assert abs(churned.std().item() - sd) < 0.02  # an exact denoiser: still N(0, sd²)
    # fresh noise on the way: the sample is no longer the ODE's map of the starting noise
    assert (churned - plain).abs().mean() > 0.1


def test_given_draws_replace_the_generators_in_order():
    """`draws` feeds the start and each churn's noise: the same numbers give the same sample."""
    den, sigmas, gen = gaussian_denoiser(0.5), karras_sigmas(6, 0.002, 5.0), torch.Generator().manual_seed(5)
    noise = [torch.randn(7, generator=torch.Generator().manual_seed(9 + i)) for i in range(6)]

    seeded = sample(den, (7,), sigmas, torch.Generator().manual_seed(1), churn=3.0)
    given = sample(den, (7,), sigmas, gen, churn=3.0, draws=iter(noise))
    by_hand = noise[0] * sigmas[0]
    gamma = min(3.0 / 6, 2**0.5 - 1)
    for i in range(6):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if i > 0:
            by_hand = by_hand + ((s * (1 + gamma)) ** 2 - s**2) ** 0.5 * noise[i]
            s = s * (1 + gamma)
        by_hand = by_hand + (s_next - s) * (by_hand - den(by_hand, s)) / s
    assert torch.allclose(given, by_hand, atol=1e-6) and not torch.allclose(given, seeded)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(5).get_state())  # the generator untouched
    with pytest.raises(ValueError, match=r"one draw of shape \(7,\) for the start and each churn; got None"):
        sample(den, (7,), sigmas, churn=3.0, draws=iter(noise[:3]))  # too few: an error, not a silent reuse
    with pytest.raises(ValueError, match=r"got \(8,\)"):
        sample(den, (7,), sigmas, draws=iter([torch.zeros(8)]))


@pytest.mark.parametrize(
    "bad", [dict(steps=0), dict(method="ddim"), dict(sigma_min=0.0), dict(sigma_ctx=0.0), dict(churn=-1.0)]
)
def test_bad_sampler_settings(bad):
    with pytest.raises(ValueError):
        SamplerConfig(**bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["sigma_min", "sigma_max", "rho", "sigma_ctx", "guidance", "churn"])
def test_every_numeric_sampler_setting_must_be_finite(name, value):
    with pytest.raises(ValueError, match=rf"^sampler {name}: expected a finite number.*, found {value}$"):
        SamplerConfig(**{name: value})


@pytest.mark.parametrize("bad", [dict(rho=0.0), dict(guidance=-1.0), dict(sigma_max=0.001)])
def test_sampler_settings_out_of_range(bad):
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=rf"sampler {name}: expected .*found {value}$"):
        SamplerConfig(**bad)


def test_marginal_draws_binary_cells_with_their_probability():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    mean = (2.0 + 3.0 * p).expand(40000, 5)  # value range (2, 5)
    x = draw_marginal(mean, "binary", -1, (2.0, 5.0), torch.Generator().manual_seed(0))
    assert set(x.unique().tolist()) == {2.0, 5.0}
    freq = (x == 5.0).float().mean(0)
    assert (freq - p).abs().max() < 4 * (0.25 / 40000) ** 0.5  # within 4 standard errors
    assert freq[0] == 0 and freq[-1] == 1  # certain cells stay certain


def test_marginal_draws_categorical_cells_one_hot_with_their_probability():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [-0.2, 0.5, 0.5]])  # estimates may stray below 0
    mean = probs.expand(30000, 3, 3)  # [B, N nodes, 3 states]
    g = torch.Generator().manual_seed(1)
    x = draw_marginal(mean, "categorical", -1, (0.0, 1.0), g)
    assert torch.equal(x.sum(-1), torch.ones(30000, 3))  # every node in exactly one state
    freq = x.mean(0)
    target = probs.clamp_min(0) / probs.clamp_min(0).sum(-1, keepdim=True)
    assert (freq - target).abs().max() < 0.012
    grid = draw_marginal(probs.T.reshape(3, 1, 3).expand(8, 3, 1, 3), "categorical", -3, (0.0, 1.0), g)  # [B, C, H, W]
    assert torch.equal(grid.sum(-3), torch.ones(8, 1, 3))


def test_one_hot_argmax_and_marginal_refuses_real_values():
    x = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.0, 0.1]])
    assert torch.equal(one_hot_argmax(x, -1), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="binary or categorical"):
        draw_marginal(x, "real", -1)
