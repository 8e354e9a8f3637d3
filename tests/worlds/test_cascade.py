"""Cascade: graphs, SIR / IC dynamics, threshold, branching, decoder, registry and NDlib cross-checks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from diffworld.worlds import (
    BranchableWorld,
    DecodableWorld,
    cascade,
    list_worlds,
    make_world,
    random_policy,
    run_episode,
    world_options,
)
from diffworld.worlds.cascade import (
    GRAPHS,
    REAL_GRAPHS,
    Cascade,
    beta_for,
    decode,
    epidemic_threshold,
    spread_step,
    transmissibility,
)

_spread_step = spread_step  # the real one, kept while a test swaps the module's


def _codes(frames: np.ndarray) -> np.ndarray:
    """One-hot frames [T, N, 3] -> state codes [T, N] (0 S, 1 I, 2 R)."""
    return frames.argmax(-1)


# --- graphs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "nodes", "edges"), [("karate", 34, 78), ("lesmis", 77, 254), ("florentine", 15, 20)])
def test_real_graphs_have_their_sizes_and_the_spec_lists_their_edges(name: str, nodes: int, edges: int) -> None:
    world = Cascade(name)
    spec = world.spec
    assert world.num_nodes == nodes and spec.frame_shape == (nodes, 3) and spec.layout == "graph"
    assert len(spec.edges) == edges
    assert all(i < j for i, j in spec.edges) and list(spec.edges) == sorted(set(spec.edges))
    original = REAL_GRAPHS[name]()  # the same edges, through the relabelling
    index = {v: i for i, v in enumerate(world.node_names)}
    assert set(spec.edges) == {tuple(sorted((index[u], index[v]))) for u, v in original.edges}
    assert world.node_names == tuple(sorted(original.nodes))
    a = world.adjacency
    assert isinstance(a, sp.csr_array) and (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert a.sum() == 2 * edges and (world.degree == np.array([d for _, d in original.degree(world.node_names)])).all()
    assert not any("weight" in d for _, _, d in world.graph.edges(data=True))


@pytest.mark.parametrize("name", ["ba", "ws", "sbm"])
def test_generated_graphs_have_n_nodes_and_depend_only_on_graph_seed(name: str) -> None:
    a, b, c = Cascade(name, n=120, graph_seed=1), Cascade(name, n=120, graph_seed=1), Cascade(name, n=120, graph_seed=2)
    assert a.num_nodes == 120 and a.spec.frame_shape == (120, 3)
    assert a.spec.edges == b.spec.edges and a.spec.edges != c.spec.edges
    assert Cascade(name).num_nodes == 100  # default size


def test_generated_graph_parameters() -> None:
    assert len(Cascade("ba", n=200).spec.edges) == 2 * (200 - 2)  # m = 2 edges per new node
    ws = Cascade("ws", n=200)
    assert len(ws.spec.edges) == 200 * 4 // 2  # rewiring keeps the k = 4 ring's edge count
    sbm = [Cascade("sbm", n=400, graph_seed=s) for s in range(3)]
    mean_k = np.mean([w.degree.mean() for w in sbm])
    assert 5.6 < mean_k < 6.4  # <k> ≈ 6 by construction
    w = sbm[0]  # 4 blocks of 100 nodes, about 80% of the edges inside a block
    inside = np.mean([i // 100 == j // 100 for i, j in w.spec.edges])
    assert 0.72 < inside < 0.88


# --- threshold and beta -----------------------------------------------------------------------


def test_threshold_and_beta_follow_the_documented_rule() -> None:
    karate = Cascade("karate", gamma=0.2, beta_ratio=2.0)
    k = np.array([d for _, d in nx.karate_club_graph().degree()], dtype=float)
    assert karate.threshold == pytest.approx(k.mean() / ((k**2).mean() - k.mean()))
    assert karate.threshold == pytest.approx(0.147727, abs=1e-6)  # Σk = 156, Σk² = 1212: 156 / (1212 − 156) = 13/88
    assert transmissibility(karate.beta, 0.2) == pytest.approx(2.0 * karate.threshold)
    assert karate.beta == pytest.approx(0.0774, abs=1e-4)
    ic = Cascade("karate", model="ic", beta_ratio=1.5)
    assert ic.gamma == 1.0 and ic.beta == pytest.approx(1.5 * ic.threshold)
    explicit = Cascade("karate", beta=0.3, gamma=0.5)
    assert explicit.beta == 0.3
    assert explicit.beta_ratio == pytest.approx(transmissibility(0.3, 0.5) / explicit.threshold)
    for t, g in [(0.1, 0.2), (0.5, 0.7), (0.9, 0.05), (0.3, 1.0)]:
        assert transmissibility(beta_for(t, g), g) == pytest.approx(t)
    assert epidemic_threshold(np.ones(10)) == float("inf")  # a perfect matching never percolates


def test_transmissibility_is_the_probability_an_infection_crosses_an_edge() -> None:
    edge = sp.csr_array(np.array([[0, 1], [1, 0]], dtype=np.int32))
    beta, gamma, runs = 0.15, 0.3, 40_000
    states = np.tile(np.array([1, 0], dtype=np.int8), (runs, 1))  # node 0 infected, node 1 not
    rng = np.random.default_rng(0)
    crossed = np.zeros(runs, dtype=bool)
    for _ in range(200):
        alive = states[:, 0] == 1  # only node 0's own infection can cross (node 1 has no one left)
        states, new = spread_step(edge, states, beta, gamma, rng)
        crossed |= new[:, 1] & alive
    t = transmissibility(beta, gamma)  # 0.15 / 0.405 = 0.370
    assert abs(crossed.mean() - t) < 4 * np.sqrt(t * (1 - t) / runs)


# --- dynamics ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sir_episodes() -> list:
    world = Cascade("lesmis", beta_ratio=3.0, seeds=2)
    return [run_episode(world, s, random_policy, keep_states=True) for s in range(12)]


def test_sir_frames_are_one_hot_and_states_only_move_forward(sir_episodes: list) -> None:
    lengths = []
    for ep in sir_episodes:
        f = ep.frames
        assert f.dtype == np.float32 and set(np.unique(f)) <= {0.0, 1.0} and (f.sum(-1) == 1).all()
        Cascade("lesmis").spec.check_frames(f)
        codes = _codes(f)
        assert (np.diff(codes, axis=0) >= 0).all()  # per node S -> I -> R, never back
        counts = f.sum(1)  # [T, 3]
        assert (np.diff(counts[:, 0]) <= 0).all() and (np.diff(counts[:, 2]) >= 0).all()
        assert counts[0, 1] == 2  # two patient zeros
        infected = counts[:, 1]
        assert infected[-1] == 0 and (infected[:-1] > 0).all() and ep.dones[-1] and not ep.dones[:-1].any()
        newly = ((codes[1:] == 1) & (codes[:-1] == 0)).sum(1)
        np.testing.assert_array_equal(ep.rewards[1:], newly)
        lengths.append(len(f))
    assert max(lengths) > 10 and sum(ep.frames[-1, :, 2].sum() > 10 for ep in sir_episodes) >= 3  # real outbreaks


def test_infections_only_reach_neighbours_of_the_infected(sir_episodes: list) -> None:
    a = Cascade("lesmis").adjacency.toarray()
    for ep in sir_episodes:
        codes = _codes(ep.frames)
        new = (codes[1:] == 1) & (codes[:-1] == 0)
        exposed = (codes[:-1] == 1).astype(int) @ a > 0
        assert not (new & ~exposed).any()


def test_ic_activates_every_node_at_most_once_for_one_step() -> None:
    world = Cascade("karate", model="ic", beta_ratio=3.0)
    grown = 0
    for s in range(20):
        codes = _codes(run_episode(world, s, random_policy).frames)
        active = codes == 1
        assert (active.sum(0) <= 1).all()  # each node is "just activated" in at most one frame
        assert ((codes[1:] == 2) == ((codes[:-1] == 1) | (codes[:-1] == 2))).all()  # I -> R after one step
        grown += (codes[-1] == 2).sum() > 5
    assert grown >= 5


def test_run_ends_at_max_steps_and_takes_no_action() -> None:
    world = Cascade("lesmis", beta=0.5, gamma=0.01, max_steps=3)
    assert world.reset(0).shape == (77, 3)
    dones = [world.step(None)[2] for _ in range(3)]
    assert dones == [False, False, True]
    world.step(-1)  # NO_ACTION, as stored in episodes, is accepted
    with pytest.raises(ValueError, match="no actions"):
        world.step(1)


def test_patient_zeros_random_fixed_and_seeded() -> None:
    world = Cascade("lesmis", seeds=3)
    first = [np.flatnonzero(world.reset(s)[:, 1]) for s in range(20)]
    assert all(len(z) == 3 for z in first)
    assert len({tuple(z) for z in first}) > 15  # drawn afresh per seed
    np.testing.assert_array_equal(np.flatnonzero(world.reset(7)[:, 1]), first[7])
    world.set_seeds([11, 48])
    np.testing.assert_array_equal(np.flatnonzero(world.reset(0)[:, 1]), [11, 48])
    hubs = Cascade("karate", seed_nodes=[33])
    assert np.flatnonzero(hubs.reset(5)[:, 1]).tolist() == [33]
    hubs.set_seeds(None)
    assert len({int(np.flatnonzero(hubs.reset(s)[:, 1])[0]) for s in range(30)}) > 5


# --- branching --------------------------------------------------------------------------------


def test_world_satisfies_the_protocols() -> None:
    world = Cascade("karate")
    assert isinstance(world, BranchableWorld) and isinstance(world, DecodableWorld)
    assert world.spec.name == "cascade" and world.spec.action.kind == "none"
    assert world.spec.variables == ("S", "I", "R") and world.spec.value_kind == "categorical"


def test_branch_replays_exactly_and_reseed_changes_the_future() -> None:
    world = Cascade("lesmis", beta_ratio=3.0, seeds=3)
    world.reset(4)
    for _ in range(3):
        world.step()
    saved = world.get_state()

    def future(n: int = 15) -> np.ndarray:
        return np.stack([world.step()[0] for _ in range(n)])

    a = future()
    world.set_state(saved)
    np.testing.assert_array_equal(future(), a)
    assert world.t == saved["t"] + 15
    differs = 0
    for seed in range(5):
        world.set_state(saved)
        world.reseed(seed)
        differs += not np.array_equal(future(), a)
    assert differs >= 4
    world.set_state(saved)  # set_state restores the generator even after a reseed
    np.testing.assert_array_equal(future(), a)


# --- decoding ---------------------------------------------------------------------------------


def test_decoder_reads_fractions_and_flags_frames_that_are_not_one_hot(sir_episodes: list) -> None:
    world = Cascade("lesmis")
    frames = np.stack([ep.frames[:5] for ep in sir_episodes if len(ep.frames) >= 5])  # [E, 5, 77, 3]
    fractions, valid = world.decode(frames)
    assert fractions.shape == frames.shape[:2] + (3,) and valid.shape == frames.shape[:2] and valid.all()
    np.testing.assert_allclose(fractions, frames.sum(-2) / 77)
    lo, hi = world.state_bounds.T
    assert ((fractions >= lo) & (fractions <= hi)).all()

    f = frames[0, 0].copy()
    soft = f * 0.7 + 0.1  # 0.8 on the true state, 0.1 elsewhere: still one-hot at 0.5
    assert decode(soft)[1] and np.allclose(decode(soft)[0], decode(f)[0])
    two = f.copy()
    two[3] = [1.0, 1.0, 0.0]
    empty = f.copy()
    empty[5] = 0.2
    _, ok = decode(np.stack([two, empty]))
    assert not ok.any()
    with pytest.raises(ValueError, match=r"\[\.\.\., 77, 3\]"):
        world.decode(np.zeros((2, 34, 3)))


# --- registry and bad input -------------------------------------------------------------------


def test_registry_passes_options_to_cascade() -> None:
    assert "cascade" in list_worlds() and "pong" in list_worlds()
    world = make_world("cascade", graph="karate", model="ic", beta=0.25)
    assert isinstance(world, Cascade) and world.num_nodes == 34 and world.model == "ic" and world.beta == 0.25
    assert make_world("cascade").num_nodes == 77  # lesmis by default
    assert world_options("cascade")[:3] == ("graph", "model", "beta") and "max_steps" not in world_options("cascade")
    assert world_options("pong") == ()
    message = "unknown option.*size for world 'cascade'; valid options: graph, model"
    with pytest.raises(ValueError, match=message) as info:
        make_world("cascade", size=3)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="built-in world 'pong' takes no options, got size"):
        make_world("pong", size=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"graph": "twitter"}, "unknown graph 'twitter'; expected one of: " + ", ".join(GRAPHS)),
        ({"model": "seir"}, "unknown model 'seir'; expected one of: sir, ic"),
        ({"beta": 1.5}, r"beta must be in \[0, 1\], got 1.5"),
        ({"beta": -0.1}, r"beta must be in \[0, 1\], got -0.1"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ({"graph": "florentine", "beta_ratio": 3.0}, "transmissibility 1.28 > 1"),
        ({"graph": "karate", "n": 50}, "fixed size"),
        ({"graph": "sbm", "n": 10}, "needs n >= 24"),
        ({"seeds": 0}, r"seeds must be in \[1, 77\]"),
        ({"seed_nodes": [3, 3]}, "distinct nodes"),
        ({"seed_nodes": [77]}, r"in \[0, 77\)"),
    ],
)
def test_bad_options_raise_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make_world("cascade", **options)
    assert "\n" not in str(info.value)


# --- NDlib cross-check ------------------------------------------------------------------------

STEPS = 20
OURS_RUNS, NDLIB_RUNS = 1500, 1000
Z, FLOOR = 4.0, 1e-3  # |mean difference| <= Z standard errors + FLOOR, at every step and state


def _our_fractions(world: Cascade, runs: int, steps: int = STEPS) -> np.ndarray:
    """[runs, steps + 1, 3] S/I/R fractions of `runs` epidemics of `world` (seeds 0..runs-1)."""
    out = np.zeros((runs, steps + 1, 3))
    for r in range(runs):
        frames = [world.reset(r)] + [world.step()[0] for _ in range(steps)]
        out[r] = np.stack(frames).mean(1, dtype=np.float64)
    return out


def _ndlib_fractions(world: Cascade, runs: int, steps: int = STEPS) -> np.ndarray:
    """The same from NDlib's SIRModel (or IndependentCascadesModel for IC), same graph, β, γ, seeds."""
    mc = pytest.importorskip("ndlib.models.ModelConfig")
    ep = pytest.importorskip("ndlib.models.epidemics")
    config = mc.Configuration()
    if world.model == "sir":
        model = ep.SIRModel(world.graph, seed=0)  # NDlib seeds numpy's global generator
        config.add_model_parameter("beta", world.beta)
        config.add_model_parameter("gamma", world.gamma)
    else:
        model = ep.IndependentCascadesModel(world.graph, seed=0)
        for edge in world.graph.edges:
            config.add_edge_configuration("threshold", edge, world.beta)
    config.add_model_initial_configuration("Infected", list(world.seed_nodes))
    model.set_initial_status(config)
    out = np.zeros((runs, steps + 1, 3))
    for r in range(runs):
        model.reset(infected_nodes=list(world.seed_nodes))
        for t, it in enumerate(model.iteration_bunch(steps + 1, node_status=False)):
            out[r, t] = [it["node_count"][s] for s in (0, 1, 2)]
    return out / world.num_nodes


def _worst_deviation(a: np.ndarray, b: np.ndarray) -> float:
    """max over steps of |mean I, R fraction difference| / (Z·SE + FLOOR); <= 1 means they agree."""
    a, b = a[..., 1:], b[..., 1:]  # I and R (S = 1 − I − R)
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return float((np.abs(a.mean(0) - b.mean(0)) / (Z * se + FLOOR)).max())


@pytest.fixture
def _restore_numpy_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _recover_then_infect(adjacency, states, beta, gamma, rng):  # noqa: ANN001, ANN202
    """The other order of the two sub-steps, for the power check: recoveries first."""
    states = states.copy()
    states[(states == cascade.I) & (rng.random(states.shape) < gamma)] = cascade.R
    return _spread_step(adjacency, states, beta, 0.0, rng)


@pytest.mark.usefixtures("_restore_numpy_global_rng")
def test_sir_matches_ndlib_and_the_check_has_power(monkeypatch: pytest.MonkeyPatch) -> None:
    world = Cascade("karate", model="sir", gamma=0.2, beta_ratio=2.0, seed_nodes=[0])
    ndlib = _ndlib_fractions(world, NDLIB_RUNS)
    ours = _our_fractions(world, OURS_RUNS)
    assert ndlib[:, -1, 2].mean() > 0.2  # a real outbreak, not a trivial agreement on nothing
    assert _worst_deviation(ours, ndlib) <= 1.0  # observed 0.52
    # The same tolerance rejects β off by 25% (observed 3.0) and the other update order (3.3).
    wrong = Cascade("karate", beta=world.beta * 1.25, seed_nodes=[0])
    assert _worst_deviation(_our_fractions(wrong, OURS_RUNS), ndlib) > 1.0
    monkeypatch.setattr(cascade, "spread_step", _recover_then_infect)
    assert _worst_deviation(_our_fractions(world, OURS_RUNS), ndlib) > 1.0


@pytest.mark.usefixtures("_restore_numpy_global_rng")
def test_independent_cascade_matches_ndlib() -> None:
    world = Cascade("karate", model="ic", beta_ratio=2.0, seed_nodes=[0])
    ndlib = _ndlib_fractions(world, NDLIB_RUNS, steps=10)
    ours = _our_fractions(world, OURS_RUNS, steps=10)
    assert ndlib[:, -1, 2].mean() > 0.3
    assert _worst_deviation(ours, ndlib) <= 1.0  # observed 0.53
    wrong = Cascade("karate", model="ic", beta=world.beta * 1.25, seed_nodes=[0])
    assert _worst_deviation(_our_fractions(wrong, OURS_RUNS, steps=10), ndlib) > 1.0


def test_cascade_recommends_the_marginal_sampler_and_ends_when_nobody_is_infected() -> None:
    from diffworld.worlds import sampler_defaults
    from diffworld.worlds.cascade import extinct

    assert sampler_defaults("cascade") == {"method": "marginal"}
    assert sampler_defaults("pong") == {"steps": 1, "sigma_ctx": 0.02}
    assert sampler_defaults("my-imported-data") == {}
    frames = torch.eye(3)[torch.tensor([[0, 2, 2], [0, 1, 2], [2, 2, 2]])]  # [M, N, 3]
    assert extinct(frames).tolist() == [True, False, True]
