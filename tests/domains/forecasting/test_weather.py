"""Weather-centre scores: AR(1) fit and forecast, rank histogram, spectra, saturation, twins."""

import numpy as np
import pytest

from diffworld.domains.forecasting import weather
from diffworld.evaluate.forecasts import make_cases
from diffworld.worlds import make_world, random_policy


def test_ar1_recovers_its_parameters_and_becomes_climatology():
    rng = np.random.default_rng(0)
    phi, mu, s = 0.8, 2.0, 0.5
    x = np.zeros((4000, 3))
    x[0] = mu
    for t in range(1, len(x)):
        x[t] = mu + phi * (x[t - 1] - mu) + s * rng.standard_normal(3)
    fit = weather.AR1.fit([x[:2000], x[2000:]])
    np.testing.assert_allclose(fit.phi, phi, atol=0.03)
    np.testing.assert_allclose(fit.mean, mu, atol=0.1)
    np.testing.assert_allclose(fit.noise_std, s, atol=0.03)
    paths = fit.forecast(np.full((2, 3), 10.0), members=2000, horizon=40, rng=rng)
    assert paths.shape == (2, 2000, 40, 3)
    np.testing.assert_allclose(
        paths[:, :, 0].mean(axis=1), np.broadcast_to(fit.mean + fit.phi * (10.0 - fit.mean), (2, 3)), atol=0.05
    )
    # Far ahead: the stationary distribution, std s / sqrt(1 − φ²).
    np.testing.assert_allclose(paths[:, :, -1].std(axis=1), s / np.sqrt(1 - phi**2), rtol=0.08)


def test_ar1_needs_a_trajectory():
    with pytest.raises(ValueError, match="two or more frames"):
        weather.AR1.fit([np.zeros((1, 3))])


def test_rank_histogram_is_flat_for_a_calibrated_ensemble_and_u_shaped_for_a_narrow_one():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((200, 5, 10))
    good = rng.standard_normal((200, 9, 5, 10))
    narrow = 0.3 * rng.standard_normal((200, 9, 5, 10))
    flat = weather.rank_histogram(good, truth, rng)
    u = weather.rank_histogram(narrow, truth, rng)
    assert flat.shape == (10,) and np.isclose(flat.sum(), 1.0)
    assert np.abs(flat - 0.1).max() < 0.02
    assert u[0] > 0.25 and u[-1] > 0.25 and u[5] < 0.05


def test_spectra_put_the_power_of_a_wave_at_its_wavenumber():
    k = np.arange(40)
    ring = np.sin(2 * np.pi * 3 * k / 40)[None]
    s = weather.ring_spectrum(ring)
    assert s.shape == (20,) and s.argmax() + 1 == 3
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    field = np.cos(2 * np.pi * (3 * xx + 4 * yy) / 32)  # |k| = 5
    r = weather.radial_spectrum(field[None])
    assert r.shape == (16,) and r.argmax() + 1 == 5
    # Blur removes high wavenumbers: a smoothed white-noise field has less power there.
    noise = np.random.default_rng(0).standard_normal((8, 32, 32))
    smooth = (
        noise + np.roll(noise, 1, -1) + np.roll(noise, -1, -1) + np.roll(noise, 1, -2) + np.roll(noise, -1, -2)
    ) / 5
    assert weather.radial_spectrum(smooth)[-1] < 0.2 * weather.radial_spectrum(noise)[-1]


def test_saturation_lead():
    assert weather.saturation_lead(np.array([0.1, 0.5, 0.95, 1.0]), 1.0) == 3
    assert weather.saturation_lead(np.array([0.1, 0.2]), 1.0) == 2


def test_score_ensembles_and_skill():
    rng = np.random.default_rng(2)
    truth = rng.standard_normal((20, 4, 6))
    fc = {
        "model": truth[:, None] + 0.5 * rng.standard_normal((20, 8, 4, 6)),
        "persistence": np.zeros((20, 1, 4, 6)),
        "oracle": truth[:, None] + 0.1 * rng.standard_normal((20, 8, 4, 6)),
    }
    scores = weather.score_ensembles(fc, truth, rng)
    assert scores["persistence"]["spread_skill"] is None and scores["persistence"]["rank_histogram"] is None
    assert len(scores["model"]["crps"]) == 4 and len(scores["model"]["rank_histogram"]) == 9
    skill = weather.skill_against(scores, "model")
    assert all(0 < s < 1 for s in skill)


def test_twin_ensemble_spreads_a_deterministic_world():
    make = lambda: make_world("lorenz96", k=8, spinup=2.0)
    rng = np.random.default_rng(0)
    cases = make_cases(make, [1_000_000, 1_000_001], random_policy, 2, context=2, horizon=30, rng=rng, max_steps=60)
    twins = weather.twin_forecast(make, cases, members=4, scale=0.01)
    assert twins.shape == (2, 4, 30, 8, 1)
    spread = twins.std(axis=1).mean(axis=(0, 2, 3))  # [H]
    assert spread[0] > 0 and spread[-1] > 5 * spread[0]
    with pytest.raises(ValueError, match="perturb"):
        weather.twin_forecast(lambda: make_world("pong"), cases, 2, 0.01)
