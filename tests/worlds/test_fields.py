"""Fields: exact transport (Fick's law and a wind), conservation, sources, noise spectrum, branching."""

import numpy as np
import pytest

from diffworld.domains.forecasting.weather import radial_spectrum
from diffworld.worlds import BranchableWorld, make_world
from diffworld.worlds.fields import EVENT_AGES, Fields

QUIET = {"source_rate": 0.0, "noise": 0.0, "spinup": 0, "switch": 0.0}


def blob(n=32, width=2.0, centre=(10.0, 12.0)):
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.exp(-0.5 * (((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / width**2))


def set_field(w, phi, regime=0):
    state = w.get_state()
    state.update(phi=phi, regime=regime, sources=np.zeros((0, 3 + w.channels)))
    w.set_state(state)


def test_wind_carries_the_field_and_the_total_is_conserved():
    w = Fields(channels=1, diffusivity=(0.0,), damping=(0.0,), wind=1.0, regimes=4, **QUIET)
    phi = blob()[None]
    set_field(w, phi, regime=0)  # regime 0 blows along +x at one cell per step
    out = [w.step()[0] for _ in range(5)]
    np.testing.assert_allclose(out[-1], np.roll(phi, 5, axis=-1), atol=1e-5)
    set_field(w, phi, regime=1)  # regime 1 blows along +y
    np.testing.assert_allclose(w.step()[0], np.roll(phi, 1, axis=-2), atol=1e-5)


def test_ficks_law_spreads_a_blob_at_rate_two_kappa_and_conserves_mass():
    kappa = 0.3
    w = Fields(channels=1, diffusivity=(kappa,), damping=(0.0,), wind=0.0, **QUIET)
    phi = blob(width=2.0, centre=(16.0, 16.0))[None]
    set_field(w, phi)
    for _ in range(10):
        out = w.step()[0][0].astype(np.float64)
    y = np.arange(32)[:, None]
    var_y = (out * (y - 16.0) ** 2).sum() / out.sum()
    assert np.isclose(out.sum(), phi.sum(), rtol=1e-5)
    assert np.isclose(var_y, 2.0**2 + 2 * kappa * 10, rtol=0.02)  # σ² grows by 2κ per unit time


def test_damping_and_sources():
    w = Fields(channels=2, wind=0.0, **{**QUIET, "source_rate": 2.0})
    w.reset(0)
    total = [w.step()[0].sum() for _ in range(20)]
    assert total[-1] > 0 and all(np.isfinite(total))
    assert len(w.sources) > 0 and (w.sources[:, 3:] > 0).all()
    quiet = Fields(channels=1, diffusivity=(0.0,), damping=(0.1,), wind=0.0, **QUIET)
    set_field(quiet, np.ones((1, 32, 32)))
    np.testing.assert_allclose(quiet.step()[0], np.exp(-0.1), rtol=1e-6)


def test_source_amplitude_scales_every_source_and_leaves_the_draws_alone():
    full, half = (Fields(source_amplitude=a, spinup=0) for a in (1.0, 0.5))
    full.reset(2)
    half.reset(2)
    for _ in range(30):
        full.step()
        half.step()
    assert len(full.sources) > 3 and len(full.sources) == len(half.sources)  # the same births, in the same places
    np.testing.assert_allclose(half.sources[:, :3], full.sources[:, :3])
    np.testing.assert_allclose(half.sources[:, 3:], 0.5 * full.sources[:, 3:])


def test_noise_gives_the_predicted_small_scale_spectrum():
    kappa, mu, eta = 0.15, 0.05, 0.02
    w = Fields(channels=1, diffusivity=(kappa,), damping=(mu,), noise=eta, source_rate=0.0, spinup=100)
    w.reset(3)
    frames = np.array([w.step()[0][0] for _ in range(200)])
    k = 12  # a shell well inside the grid (rad per cell: 2πk/32)
    lam = kappa * (2 * np.pi * k / 32) ** 2 + mu
    predicted = eta**2 / (1 - np.exp(-2 * lam))
    assert np.isclose(radial_spectrum(frames)[k - 1], predicted, rtol=0.2)


def test_branching_replays_and_reseeding_changes_the_future():
    w = make_world("fields", size=16)
    assert isinstance(w, BranchableWorld) and w.spec.frame_shape == (2, 16, 16)
    w.reset(4)
    state = w.get_state()
    a = [w.step()[0] for _ in range(6)]
    w.set_state(state)
    np.testing.assert_array_equal([w.step()[0] for _ in range(6)], a)
    w.set_state(state)
    w.reseed(123)
    assert not np.allclose([w.step()[0] for _ in range(6)], a)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 4}, "size >= 8"),
        ({"channels": 3}, "channels"),
        ({"diffusivity": (-1.0, 0.1)}, ">= 0"),
        ({"noise": -0.1}, "noise"),
        ({"switch": 2.0}, "switch"),
        ({"source_amplitude": -1.0}, "source_amplitude"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Fields(**kwargs)


def test_bad_state_is_refused():
    w = Fields(size=8, spinup=0)
    state = w.get_state()
    with pytest.raises(ValueError, match="shape"):
        w.set_state({**state, "phi": np.zeros((2, 4, 4))})


def test_a_64_grid_works():
    w = make_world("fields", size=64, spinup=5)
    frames = np.array([w.reset(0)] + [w.step()[0] for _ in range(5)])
    assert frames.shape == (6, 2, 64, 64) and np.isfinite(frames).all() and frames.std() > 0


def test_read_steps_finds_the_wind_and_leaves_the_emission():
    w = Fields()
    w.reset(3)
    frames, regimes = [w.render()], []
    for _ in range(200):
        frames.append(w.step()[0])
        regimes.append(w.regime)
    f = np.stack(frames)
    regime, residual = w.read_steps(f[:-1], f[1:])
    assert regime.shape == (200,) and residual.shape == f[1:].shape
    assert len(set(regimes)) > 1 and (regime == np.array(regimes)).mean() > 0.98  # turns happened and were read
    quiet = Fields(channels=1, **QUIET)  # a pure transport leaves nothing to explain
    set_field(quiet, blob()[None], regime=2)
    before = quiet.render()
    regime, residual = quiet.read_steps(before, quiet.step()[0])
    assert regime == 2 and np.abs(residual).max() < 1e-5
    with pytest.raises(ValueError, match=r"expected two arrays of frames \[\.\.\., 2, 32, 32\]"):
        w.read_steps(f[:2], f[1:4])


def test_read_events_finds_the_simulators_births_and_their_decay():
    # Evaluations compare a model's events with the simulator's as this reader sees them; it must
    # see the simulator's births (counted from its source list) at about their rate, and their
    # emission decaying over the ages it follows.
    w = Fields()
    w.reset(11)
    context = np.stack([w.render()] + [w.step()[0] for _ in range(5)])
    born, futures, regimes = 0, [], []
    for _ in range(300):
        futures.append(w.step()[0])
        regimes.append(w.regime)
        born += int((w.sources[:, 2] == 1).sum())  # a source is aged 1 right after the step it was born in
    ev = w.read_events(context[None], np.stack(futures)[None, None])
    found = int(ev["births"].sum())
    assert ev["births"].shape == (1, 1, 300) and ev["strength"].shape[1] == EVENT_AGES
    assert born > 50 and 0.9 * born <= found <= 1.6 * born, (born, found)
    curve = ev["strength"].mean(0)
    assert 0.5 < curve[0] < 0.9 and 0.25 < curve[-1] / curve[0] < 0.55, curve  # exp(-8/8) = 0.37 plus background
    assert (ev["regime"][0, 0] == np.array(regimes)).mean() > 0.98
    with pytest.raises(ValueError, match="expected contexts"):
        w.read_events(context[None, -1:], np.stack(futures)[None, None])
