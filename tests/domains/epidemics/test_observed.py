"""Observed cascades scored without a simulator: the fitted independent cascade and its report."""

from __future__ import annotations

from dataclasses import replace

import networkx as nx
import numpy as np
import pytest

from diffworld.domains.epidemics.observed import fit_independent_cascade, observed_report
from diffworld.domains.epidemics.scores import node_states
from diffworld.worlds import make_world, run_episode
from tests.conftest import tiny_model


def weighted_world():
    g = nx.DiGraph()
    for u, v, p in [(0, 1, 0.8), (0, 2, 0.2), (1, 3, 0.5), (2, 3, 0.5), (3, 4, 0.3), (4, 0, 0.6)]:
        g.add_edge(u, v, weight=p)
    return make_world("cascade", graph=g, model="ic"), g


def test_em_recovers_the_edge_probabilities_of_simulated_cascades() -> None:
    world, g = weighted_world()
    cascades = [node_states(run_episode(world, seed=s).frames) for s in range(3000)]
    fitted = fit_independent_cascade(cascades, world.adjacency)
    for u, v, d in g.edges(data=True):
        assert fitted.transmission[v, u] == pytest.approx(d["weight"], abs=0.05), (u, v)
    assert (fitted.trials > 100).all()  # every edge tried often (node 3's two parents share credit)


def test_the_report_scores_the_model_beside_the_fitted_baselines() -> None:
    world, _ = weighted_world()
    episodes = [run_episode(world, seed=s).frames for s in range(200)]
    model = tiny_model(world.spec, frames=2)
    report = observed_report(model, episodes[:150], episodes[150:], world.adjacency, horizon=3, members=2, runs=50)
    brier = report["headline"]["node_brier"]
    assert set(brier) == {"model", "fitted_ic", "fitted_mean_field", "persistence"}
    assert brier["fitted_ic"] < brier["persistence"]  # the fitted model knows the spread goes on
    assert report["cases"]["cascades"] == 50 and np.isfinite(report["headline"]["node_brier_ratio_to_fitted_ic"])
    # the first cases only, dreamed on the frontier: the same baselines on those cascades
    model.sampler = replace(model.sampler, method="marginal")  # frontier dreams draw node by node
    few = observed_report(
        model, episodes[:150], episodes[150:], world.adjacency, horizon=3, members=2, runs=50, cases=7, frontier=True
    )
    assert few["cases"]["cascades"] == 7 and set(few["headline"]["node_brier"]) == set(brier)
    assert few["scores"]["persistence"]["node_brier"] != report["scores"]["persistence"]["node_brier"]
