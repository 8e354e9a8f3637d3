"""Lorenz-96: the equations, the attractor's climate, branching, the stochastic variant."""

import numpy as np
import pytest

from diffworld.worlds import BranchableWorld, make_world
from diffworld.worlds.lorenz96 import Lorenz96, ring_edges, rk4_step, tendency


def test_tendency_matches_the_equation_written_out():
    rng = np.random.default_rng(0)
    x = rng.normal(size=7)
    k = len(x)
    expected = [(x[(i + 1) % k] - x[i - 2]) * x[i - 1] - x[i] + 8.0 for i in range(k)]
    np.testing.assert_allclose(tendency(x, 8.0), expected)


def test_rest_state_is_a_fixed_point_and_rk4_is_fourth_order():
    x = np.full(40, 8.0)
    np.testing.assert_allclose(rk4_step(x, 8.0, 0.01), x)
    # Halving the step cuts a short trajectory's error ~16-fold against a fine reference.
    x0 = 8.0 + np.random.default_rng(1).normal(size=40)

    def run(h, n):
        x = x0
        for _ in range(n):
            x = rk4_step(x, 8.0, h)
        return x

    ref = run(0.05 / 64, 64)
    e1, e2 = np.abs(run(0.05 / 4, 4) - ref).max(), np.abs(run(0.05 / 8, 8) - ref).max()
    assert 10 < e1 / e2 < 24


def test_frames_lie_on_the_standard_attractor():
    w = Lorenz96()
    frames = np.array([w.reset(5)] + [w.step()[0] for _ in range(1500)])[..., 0]
    assert w.spec.frame_shape == (40, 1) and w.spec.layout == "graph"
    # Climate of K = 40, F = 8: mean ≈ 2.35, standard deviation ≈ 3.6.
    assert 2.0 < frames.mean() < 2.7 and 3.3 < frames.std() < 3.9


def test_nearby_starts_diverge_like_chaos():
    w = Lorenz96()
    w.reset(3)
    state = w.get_state()
    a = np.array([w.step()[0] for _ in range(40)])
    w.set_state(state)
    w.perturb(1e-4)
    b = np.array([w.step()[0] for _ in range(40)])
    d0, d1 = np.abs(a[0] - b[0]).max(), np.abs(a[-1] - b[-1]).max()
    assert d1 / d0 > 10  # errors grow ~e^{1.7 t}: about 30-fold over 2 time units


def test_branching_replays_exactly_and_reseeding_changes_the_noisy_future():
    w = make_world("lorenz96", noise=0.5)
    assert isinstance(w, BranchableWorld) and not w.deterministic
    w.reset(2)
    state = w.get_state()
    a = [w.step()[0] for _ in range(5)]
    w.set_state(state)
    b = [w.step()[0] for _ in range(5)]
    np.testing.assert_array_equal(a, b)
    w.set_state(state)
    w.reseed(99)
    c = [w.step()[0] for _ in range(5)]
    assert not np.allclose(a, c)


def test_deterministic_world_ignores_reseeding():
    w = Lorenz96(k=8, spinup=1.0)
    assert w.deterministic
    w.reset(1)
    state = w.get_state()
    a = w.step()[0]
    w.set_state(state)
    w.reseed(5)
    np.testing.assert_array_equal(w.step()[0], a)


def test_ring_edges_join_neighbours_at_distance_one_and_two():
    edges = ring_edges(6)
    assert len(edges) == 12 and (0, 1) in edges and (0, 2) in edges and (0, 4) in edges and (0, 5) in edges
    assert len(ring_edges(4)) == 6  # distance 2 both ways is one edge on a ring of four


def test_episodes_end_at_max_steps():
    w = Lorenz96(k=8, spinup=0.0, max_steps=3)
    w.reset(0)
    assert [w.step()[2] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"k": 3}, "k >= 4"), ({"dt": 0.0}, "dt > 0"), ({"noise": -1.0}, "noise"), ({"max_steps": 0}, "max_steps")],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lorenz96(**kwargs)


def test_bad_state_and_actions_are_refused():
    w = Lorenz96(k=8, spinup=0.0)
    with pytest.raises(ValueError, match="shape"):
        w.set_state({"x": np.zeros(5), "t": 0, "rng": w.get_state()["rng"]})
    with pytest.raises(ValueError, match="takes no actions"):
        w.step(1)
