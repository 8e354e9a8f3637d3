"""Cascade evaluation: the vectorised oracle is the world's process, mean-field, scores, hub ranking, report."""

from __future__ import annotations

import json
import types

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from diffworld.domains.epidemics import scores as cascade_eval
from diffworld.domains.epidemics.scores import (
    CascadeForecast,
    cascade_report,
    centrality_baselines,
    curve_crps,
    curve_quantiles,
    curves,
    expected_final_reach_frontier,
    expected_final_reach_mc,
    expected_final_reach_model,
    hub_ranking_scores,
    infection_probability,
    mean_field,
    node_brier,
    node_states,
    oracle_trajectories,
    persistence_trajectories,
    reach_brier,
    reach_probability,
    score,
    seed_frames,
    summarize,
    summarize_probabilities,
    top_k,
    top_overlap,
)
from diffworld.evaluate.forecasts import model_forecast
from diffworld.worlds.cascade import Cascade, I, R, S
from tests.conftest import tiny_model


def _world_on(graph: nx.Graph, beta: float, gamma: float = 1.0, max_steps: int = 100) -> types.SimpleNamespace:
    """What the evaluation reads of a world (adjacency, β, γ), on any graph — stars and paths too."""
    adjacency = sp.csr_array(nx.to_scipy_sparse_array(graph, nodelist=range(len(graph)), dtype=np.int32))
    return types.SimpleNamespace(
        graph=graph, adjacency=adjacency, beta=beta, transmission=beta, gamma=gamma, max_steps=max_steps
    )


def _state_after(world: Cascade, seed: int, steps: int) -> dict:
    """The world's full state `steps` steps into the episode of `seed`."""
    world.reset(seed)
    for _ in range(steps):
        world.step()
    return world.get_state()


# --- states and summaries -----------------------------------------------------------------------


def test_node_states_and_summaries_have_the_right_shapes_and_values() -> None:
    frames = np.eye(3, dtype=np.float32)[[[S, I, R], [R, R, S]]]  # [2, 3, 3]
    frames[0, 0] = [0.6, 0.3, 0.1]  # soft rows decode by argmax
    assert node_states(frames).tolist() == [[S, I, R], [R, R, S]]
    traj = np.array([[[[S, I, S], [S, R, I]], [[S, S, S], [S, S, S]]]])  # [S=1, M=2, H=2, N=3]
    last = np.array([[S, S, R]])
    assert infection_probability(traj).tolist() == [[[0, 0.5, 0], [0, 0, 0.5]]]
    assert reach_probability(traj, last).tolist() == [[0, 0.5, 1.0]]  # node 2 was R in the context
    c = curves(traj)
    assert c.shape == (1, 2, 2, 3) and np.allclose(c.sum(-1), 1) and np.allclose(c[0, 0, 1], [1 / 3, 1 / 3, 1 / 3])
    q = curve_quantiles(c, (0.0, 1.0))
    assert q.shape == (2, 1, 2, 3) and np.allclose(q[0, 0, :, S], [2 / 3, 1 / 3]) and np.allclose(q[1, 0, :, S], 1)
    with pytest.raises(ValueError, match="integer codes"):
        infection_probability(np.zeros((1, 1, 1, 3, 3)).astype(np.float32)[..., 0] + 0.5)


# --- oracle -----------------------------------------------------------------------------------


def test_oracle_is_the_worlds_own_step() -> None:
    world = Cascade("karate", model="sir", beta=0.2, gamma=0.3)
    state = _state_after(world, seed=3, steps=2)
    h = 6
    # One run from one state, fed the world's generator stream: the very same trajectory.
    world.reseed(5)
    replay = np.stack([node_states(world.step()[0]) for _ in range(h)])
    single = oracle_trajectories(world, state["states"][None], h, 1, np.random.default_rng(5))
    assert np.array_equal(single[0, 0], replay)
    # Many runs in one batch: the same process in distribution (mean I-curve within 4.5 s.e.).
    oracle = curves(oracle_trajectories(world, state["states"][None], h, 2000, np.random.default_rng(0)))[0, :, :, I]
    steps = []
    for j in range(400):
        world.set_state(state)
        world.reseed(10_000 + j)
        steps.append([node_states(world.step()[0]) for _ in range(h)])
    stepped = curves(np.array(steps))[:, :, I]  # [400, H]
    se = np.sqrt(oracle.var(0) / len(oracle) + stepped.var(0) / len(stepped))
    assert np.all(np.abs(oracle.mean(0) - stepped.mean(0)) < 4.5 * se)
    assert stepped.mean(0)[-1] > 0.05  # the epidemic is alive, so the check has teeth


# --- mean-field -------------------------------------------------------------------------------


def test_mean_field_is_exact_where_independence_holds() -> None:
    beta = 0.35
    star = _world_on(nx.star_graph(6), beta)  # IC from the hub: leaves are reached with probability β
    p = mean_field(star, np.array([[I] + [S] * 6]), 4)
    assert np.allclose(1 - p[0, :, 1:, S], beta) and np.allclose(p[0, :, 0, R], 1)
    assert np.allclose(summarize_probabilities(p).reached[0, 1:], beta)
    tree = _world_on(nx.balanced_tree(2, 3), beta)  # IC from the root: first arrival at depth d is β^d
    depth = nx.single_source_shortest_path_length(tree.graph, 0)
    start = np.array([[I] + [S] * (len(depth) - 1)])
    p = mean_field(tree, start, 3)
    for v, d in depth.items():
        if d >= 1:
            assert p[0, d - 1, v, I] == pytest.approx(beta**d)
    # The oracle agrees on the first arrivals (Monte-Carlo), so both match the analytic value.
    oracle = infection_probability(oracle_trajectories(tree, start, 3, 4000, np.random.default_rng(1)))
    for v, d in depth.items():
        if d >= 1:
            assert oracle[0, d - 1, v] == pytest.approx(beta**d, abs=4 * np.sqrt(beta**d / 4000) + 1e-3)


def test_mean_field_has_the_known_echo_bias_on_a_path() -> None:
    # Path 0-1-2 from node 0 (IC): truly P(1 reached) = β, but at step 3 the independence
    # assumption lets node 2 (infected by 1 at step 2) re-infect node 1: 1 − (1 − β)(1 − β³).
    beta = 0.4
    p = mean_field(_world_on(nx.path_graph(3), beta), np.array([[I, S, S]]), 3)
    assert 1 - p[0, 1, 1, S] == pytest.approx(beta)
    assert 1 - p[0, 2, 1, S] == pytest.approx(1 - (1 - beta) * (1 - beta**3))


def test_mean_field_probabilities_are_valid_and_track_the_oracle() -> None:
    world = Cascade("karate", model="sir", beta=0.15, gamma=0.3)
    states = np.stack([_state_after(world, seed, 2)["states"] for seed in range(4)])
    p = mean_field(world, states, 5)
    assert p.shape == (4, 5, 34, 3)
    assert p.min() >= 0 and p.max() <= 1 and np.allclose(p.sum(-1), 1)
    # From a realised state the first step is exact: an S node with k infected neighbours is
    # infected with probability 1 − (1 − β)^k, an I node stays I with probability 1 − γ.
    k = (world.adjacency @ (states == I).T.astype(int)).T  # [4, N]
    expected = np.where(states == S, 1 - (1 - world.beta) ** k, 0) + (states == I) * (1 - world.gamma)
    assert np.allclose(p[:, 0, :, I], expected)
    assert (k[states == S] >= 2).any()  # some node has several infected neighbours: the product matters
    assert np.all(np.diff(p[..., S], axis=1) <= 1e-12) and np.all(np.diff(p[..., R], axis=1) >= -1e-12)
    oracle = curves(oracle_trajectories(world, states, 5, 500, np.random.default_rng(0))).mean(1)  # [4, 5, 3]
    # On the first step, independence of the start state is exact (it is a realised state).
    assert np.allclose(p[:, 0].mean(1), oracle[:, 0], atol=0.02)


# --- scores -----------------------------------------------------------------------------------


def test_brier_of_perfect_and_climatological_forecasts() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((20, 4, 30)) < np.array([0.1, 0.3, 0.5, 0.2])[:, None]  # [S, H, N]
    assert np.allclose(node_brier(truth.astype(float), truth), 0)
    base = truth.mean(axis=(0, 2))  # climatological rate per horizon
    clim = np.broadcast_to(base[:, None], truth.shape)
    assert np.allclose(node_brier(clim, truth), base * (1 - base))
    reached = truth[:, -1]
    assert reach_brier(reached.astype(float), reached) == 0
    rate = reached.mean()
    assert reach_brier(np.full(reached.shape, rate), reached) == pytest.approx(rate * (1 - rate))
    with pytest.raises(ValueError, match=r"\[S, H, N\]"):
        node_brier(clim[0], truth[0])


def test_oracle_beats_persistence_on_a_growing_epidemic() -> None:
    world = Cascade("karate", model="sir", beta=0.3, gamma=0.1)
    h, starts = 5, []
    truths = []
    for seed in range(12):
        starts.append(_state_after(world, seed, 1))
        truths.append([node_states(world.step()[0]) for _ in range(h)])
    last, truth = np.stack([s["states"] for s in starts]), np.array(truths)
    oracle = summarize(oracle_trajectories(world, last, h, 300, np.random.default_rng(0)), last)
    persistence = summarize(persistence_trajectories(last, h), last)
    assert curves(truth)[:, -1, I].mean() > curves(last).mean(0)[I] + 0.1  # the epidemic grows
    truth_curve = curves(truth)
    c_oracle, c_pers = curve_crps(oracle.curves, truth_curve), curve_crps(persistence.curves, truth_curve)
    assert c_oracle.shape == (h,) and np.all(c_oracle[1:] < c_pers[1:])
    assert np.all(node_brier(oracle.infected, truth == I)[1:] < node_brier(persistence.infected, truth == I)[1:])
    assert score(oracle, truth, last)["reach_brier"] < score(persistence, truth, last)["reach_brier"]
    # The infected curve's peak within the horizon: the truth itself scores 0, the oracle beats persistence.
    exact = summarize(truth[:, None], last)
    assert score(exact, truth, last)["peak_size_crps"] == 0 and score(exact, truth, last)["peak_step_crps"] == 0
    for key in ("peak_size_crps", "peak_step_crps"):
        assert score(oracle, truth, last)[key] < score(persistence, truth, last)[key], key


# --- hub ranking ------------------------------------------------------------------------------


def test_mc_hub_truth_on_a_star_and_kendall_tau() -> None:
    beta = 0.5
    star = _world_on(nx.star_graph(7), beta)  # IC: hub reaches 1 + 7β, a leaf 1 + β(1 + 6β)
    reach = expected_final_reach_mc(star, 2000, np.random.default_rng(0))
    assert reach.shape == (8,) and np.all(reach[0] > reach[1:])
    assert reach[0] == pytest.approx(1 + 7 * beta, abs=0.15)
    assert reach[1:].mean() == pytest.approx(1 + beta * (1 + 6 * beta), abs=0.1)
    one_step = expected_final_reach_mc(star, 2000, np.random.default_rng(0), horizon=1)
    assert one_step[0] == pytest.approx(1 + 7 * beta, abs=0.15)
    assert one_step[1:].mean() == pytest.approx(1 + beta, abs=0.05)
    assert hub_ranking_scores(reach, reach) == pytest.approx(1.0)
    assert hub_ranking_scores(-reach, reach) == pytest.approx(-1.0)
    cent = centrality_baselines(star.graph)
    assert cent["degree"].argmax() == 0 and cent["eigenvector"].argmax() == 0
    # On the karate club, degree ranks hubs well but not perfectly.
    world = Cascade("karate", model="ic", beta=0.2)
    truth = expected_final_reach_mc(world, 200, np.random.default_rng(1))
    tau = hub_ranking_scores(centrality_baselines(world.graph)["degree"], truth)
    assert 0.3 < tau < 1.0


@pytest.mark.parametrize(
    "options", [{"graph": "lesmis", "model": "sir", "beta": 0.2}, {"graph": "karate", "model": "ic"}]
)
def test_sparse_monte_carlo_draws_the_law_of_the_dense_one(options) -> None:
    """Following infected nodes edge by edge (large graphs) and stepping every node give the same
    expected reach per seed: the sparse estimate is as far from a dense one as a second dense
    estimate is, and on the star it gives the exact values."""
    world = Cascade(**options)
    runs = 800
    dense = expected_final_reach_mc(world, runs, np.random.default_rng(0), horizon=12, sparse=False)
    sparse = expected_final_reach_mc(world, runs, np.random.default_rng(1), horizon=12, sparse=True)
    again = expected_final_reach_mc(world, runs, np.random.default_rng(2), horizon=12, sparse=False)
    assert sparse.shape == dense.shape == (world.num_nodes,)
    rms, rms_null = np.sqrt(np.mean((sparse - dense) ** 2)), np.sqrt(np.mean((again - dense) ** 2))
    assert rms < 1.5 * rms_null  # over 34–77 seeds the two would differ by far less than 1.5× by chance
    star = _world_on(nx.star_graph(7), 0.5)
    one_step = expected_final_reach_mc(star, 4000, np.random.default_rng(0), horizon=1, sparse=True)
    assert one_step[0] == pytest.approx(1 + 7 * 0.5, abs=0.1) and one_step[1:].mean() == pytest.approx(1.5, abs=0.05)
    reach = expected_final_reach_mc(star, 4000, np.random.default_rng(0), sparse=True)
    assert reach[1:].mean() == pytest.approx(1 + 0.5 * (1 + 6 * 0.5), abs=0.1)
    # A broken law (every try succeeds) is caught: the whole connected graph is reached.
    sure = _world_on(nx.path_graph(5), 1.0)
    assert expected_final_reach_mc(sure, 3, np.random.default_rng(0), sparse=True).tolist() == [5.0] * 5


def test_top_overlap_counts_the_shared_top_nodes() -> None:
    truth = np.arange(20.0)  # node 19 spreads most
    assert top_overlap(truth, truth, 5) == 1.0
    assert top_overlap(-truth, truth, 5) == 0.0
    guess = truth.copy()
    guess[[19, 18]] = -1  # two of the top five missed
    assert top_overlap(guess, truth, 5) == pytest.approx(0.6)
    assert top_k(77) == 7 and top_k(10_000) == 100 and top_k(5) == 1
    with pytest.raises(ValueError, match="k <= 20"):
        top_overlap(truth, truth, 21)


def test_eigenvector_centrality_of_a_disconnected_graph() -> None:
    g = nx.disjoint_union(nx.star_graph(5), nx.path_graph(3))
    eig = centrality_baselines(g)["eigenvector"]
    assert eig.shape == (9,) and eig.argmax() == 0 and np.allclose(eig[6:], 0, atol=1e-8)


# --- the model --------------------------------------------------------------------------------


def test_model_reach_counts_the_last_dreamed_frame_of_each_seed_context(monkeypatch) -> None:
    world = _world_on(nx.star_graph(4), 0.5)
    seen = []

    def rollout(model, context, actions, horizon, n_samples, generator=None, stop=None):  # the seed spreads to node 0
        seen.append(context.clone())
        out = context[:, -1:].repeat(1, horizon, 1, 1)[:, None].repeat(1, n_samples, 1, 1, 1)  # [B, M, H, N, 3]
        out[:, : n_samples // 2, -1, 0] = torch.tensor([0.0, 0.0, 1.0])  # half the members reach the hub (R)
        return out

    monkeypatch.setattr(cascade_eval, "rollout", rollout)
    fake = types.SimpleNamespace(frames=4)
    reach = expected_final_reach_model(fake, world, members=4, horizon=2, batch=8)
    assert reach.tolist() == [1.0, 1.5, 1.5, 1.5, 1.5]  # the hub seed is already counted
    ctx = torch.cat(seen)
    assert ctx.shape == (5, 3, 5, 3) and len(seen) == 3  # model.frames − 1 repeats; batch // members seeds per call
    assert np.array_equal(ctx.numpy(), np.repeat(seed_frames(5)[:, None], 3, axis=1))
    assert np.array_equal(node_states(seed_frames(5)), np.diag([I] * 5))
    assert expected_final_reach_model(fake, world, members=4, horizon=2, context_frames=1).shape == (5,)
    assert seen[-1].shape[1] == 1
    # some seeds only: those dreamed from, the others not ranked
    seen.clear()
    some = expected_final_reach_model(fake, world, members=4, horizon=2, nodes=np.array([1, 3]))
    assert np.isnan(some[[0, 2, 4]]).all() and some[[1, 3]].tolist() == [1.5, 1.5]
    assert np.array_equal(torch.cat(seen).numpy()[:, 0], seed_frames(5)[[1, 3]])


def test_frontier_reach_counts_each_seeds_dreams(monkeypatch) -> None:
    """Each seed's frontier dreams start from that seed alone (repeated over the model's context) and
    count the reached nodes of the last dreamed frame."""
    world = _world_on(nx.star_graph(4), 0.5)
    seen = []

    def frontier(model, context, horizon, n_samples, generator=None, stop=None):
        seen.append(node_states(context.numpy()))
        out = context[:, -1:].repeat(1, horizon, 1, 1)[:, None].repeat(1, n_samples, 1, 1, 1)
        out[:, : n_samples // 2, -1, 0] = torch.tensor([0.0, 0.0, 1.0])  # half the members reach the hub
        return out

    monkeypatch.setattr(cascade_eval, "frontier_rollout", frontier)
    reach = expected_final_reach_frontier(types.SimpleNamespace(frames=4), world, members=4, horizon=2, log=None)
    assert reach.tolist() == [1.0, 1.5, 1.5, 1.5, 1.5]
    assert len(seen) == 5 and all(
        np.array_equal(c[0], np.repeat(np.diag([I] * 5)[v][None], 3, 0)) for v, c in enumerate(seen)
    )


def test_tiny_model_runs_through_hub_ranking_and_the_report() -> None:
    world = Cascade("florentine", model="sir", beta=0.3, gamma=0.3)
    n, h, m = world.num_nodes, 3, 2
    model = tiny_model(world.spec, frames=4, patch=1)
    gen = torch.Generator().manual_seed(0)
    reach = expected_final_reach_model(model, world, members=m, horizon=h, generator=gen)
    assert reach.shape == (n,) and np.all((reach >= 0) & (reach <= n))
    truth_reach = expected_final_reach_mc(world, 100, np.random.default_rng(0), horizon=h)

    starts = [_state_after(world, seed, 1) for seed in range(3)]
    truth = []
    for st in starts:
        world.set_state(st)
        truth.append([node_states(world.step()[0]) for _ in range(h)])
    last, truth = np.stack([s["states"] for s in starts]), np.array(truth)
    context = np.eye(3, dtype=np.float32)[np.repeat(last[:, None], 3, axis=1)]  # [S, L=3, N, 3]
    dream = model_forecast(model, context, np.full((3, h), -1), m, seed=0)  # [S, M, H, N, 3]
    forecasts = {
        "model": summarize(node_states(dream), last),
        "oracle": summarize(oracle_trajectories(world, last, h, 50, np.random.default_rng(0)), last),
        "persistence": summarize(persistence_trajectories(last, h), last),
        "mean_field": summarize_probabilities(mean_field(world, last, h)),
    }
    assert isinstance(forecasts["mean_field"], CascadeForecast) and forecasts["mean_field"].curves.shape == (3, 1, h, 3)
    hub = {"truth": truth_reach, "model": reach, **centrality_baselines(world.graph)}
    report = cascade_report(forecasts, truth, last, hub)
    json.dumps(report)  # JSON-ready
    head = report["headline"]
    assert head["node_brier_ratio"] == pytest.approx(head["node_brier_model"] / head["node_brier_oracle"])
    assert len(head["infected_skill_vs_oracle"]) == h and report["horizons"] == [1, 2, 3]
    assert set(head["hub_kendall_tau"]) == {"model", "degree", "eigenvector"}
    assert head["hub_top_k"] == 1 and set(head["hub_top_overlap"]) == {"model", "degree", "eigenvector"}
    assert set(head["reach_crps"]) == set(forecasts)
    # the reached fraction's CRPS: a point forecast scores its absolute error
    reached = 1 - curves(truth)[..., S]  # [S, H]
    mf = 1 - forecasts["mean_field"].curves[:, 0, :, S]
    assert report["scores"]["mean_field"]["reach_crps"] == pytest.approx(np.abs(mf - reached).mean(0).tolist())
    assert set(report["scores"]) == set(forecasts) and len(report["scores"]["mean_field"]["node_brier"]) == h
    with pytest.raises(ValueError, match="missing"):
        cascade_report({"model": forecasts["model"]}, truth, last)
