import networkx as nx
import numpy as np
import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.epidemics.frontier import frontier_rollout
from diffworld.rollout import rollout
from diffworld.worlds import make_world
from tests.conftest import tiny_model


def cascade_model(**dit):
    world = make_world("cascade", graph="lesmis")
    model = tiny_model(world.spec, frames=3, graph_attention="sparse", **dit)
    model.sampler = SamplerConfig(method="marginal")
    return world, model


def start(world, infected, recovered=()):
    frame = np.zeros((world.num_nodes, 3), np.float32)
    frame[:, 0] = 1.0
    frame[list(infected)] = [0.0, 1.0, 0.0]
    frame[list(recovered)] = [0.0, 0.0, 1.0]
    return torch.from_numpy(np.stack([frame, frame]))[None]  # [1, 2, N, 3]


def test_only_the_frontier_changes():
    world, model = cascade_model()
    context = start(world, [11])
    dream = frontier_rollout(model, context, horizon=1, n_samples=8, generator=torch.Generator().manual_seed(0))
    assert dream.shape == (1, 8, 1, world.num_nodes, 3)
    a = world.adjacency.toarray() + world.adjacency.toarray().T
    reach = np.zeros(world.num_nodes, bool)
    reach[11] = True
    reach |= a[11] > 0
    second = (a[reach].sum(0) > 0) & ~reach  # the frontier's neighbours: context, never drawn
    far = ~reach
    assert torch.equal(dream[0, :, 0][:, far], context[0, -1][None].expand(8, -1, -1)[:, far])
    assert second.any()
    changed = (dream[0, :, 0] != context[0, -1]).any(-1).any(0).numpy()
    assert changed.any() and not changed[far].any()  # a fresh model changes nodes, but only centres


def test_with_every_node_a_centre_it_draws_as_the_whole_graph_rollout():
    """Where activity covers the graph, the subgraph is the whole graph: each node's state frequencies
    over many members match the ordinary rollout's (one step, the marginal sampler)."""
    world, model = cascade_model()
    # a dominating set infected: every other node has an infected neighbour, so all are centres
    infected = sorted(nx.dominating_set(world.graph))
    assert len(infected) < world.num_nodes / 2  # the typical node stays susceptible
    context = start(world, infected)
    n = 400
    a = frontier_rollout(model, context, 1, n, torch.Generator().manual_seed(0))[0, :, 0]  # [n, N, 3]
    b = rollout(model, context, horizon=1, n_samples=n, generator=torch.Generator().manual_seed(1))[0, :, 0]
    pa, pb = a.mean(0), b.mean(0)  # [N, 3] state frequencies
    assert (pa - pb).abs().max() < 0.12  # 4.5 standard errors of a frequency at n = 400
    assert (pa - pb).abs().mean() < 0.03


def test_frontier_needs_a_graph_model_with_the_marginal_sampler():
    world, model = cascade_model()
    model.sampler = SamplerConfig(steps=2)
    with pytest.raises(ValueError, match="expected a graph model with the marginal sampler, found a graph model"):
        frontier_rollout(model, start(world, [0]), 1)
