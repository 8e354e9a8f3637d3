import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.layouts import DENSE_NODES, GraphLayout, make_layout
from diffworld.layouts.sparse_graph import attention_pattern, chebyshev_coefficients, sparse_adjacency
from diffworld.model.dit import DiT, DiTConfig
from diffworld.model.edge_attention import EdgeBias, edge_attention
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.spec import WorldSpec
from tests.conftest import perturb
from tests.layouts.test_graph import random_graph, ring


def complete(n: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, j) for i in range(n) for j in range(i + 1, n))


def test_chebyshev_coefficients_reproduce_the_exponential():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    t = [torch.ones_like(x), x]
    for _ in range(2, 33):
        t.append(2 * x * t[-1] - t[-2])
    basis = torch.stack(t)  # [33, 101]
    for tau in (0.01, 1.0, 10.0, 20.0):
        c = chebyshev_coefficients(torch.tensor(tau))
        assert torch.allclose(c @ basis, torch.exp(-tau * (1 + x)), atol=1e-10)


@pytest.mark.parametrize("hops", [1, 2])
def test_sparse_bias_equals_the_dense_kernel_on_the_pattern(hops):
    edges = random_graph(40, seed=5) + ((3, 39),)
    sparse = GraphLayout((41, 2), edges, attention="sparse", hops=hops)  # node 40 isolated
    dense = GraphLayout((41, 2), edges)
    taus = torch.tensor([[0.05, 0.7, 4.0, 15.0]])
    module = sparse.attention_bias_module(heads=4, layers=1)
    with torch.no_grad():
        module.log_tau.copy_(taus.log())
    dst, src = module.dst.numpy(), module.src.numpy()
    lap = dense.laplacian()
    # the pattern: each node itself and every node within `hops` hops, nothing else
    reach = np.linalg.matrix_power(np.eye(41) + dense.adjacency, hops) > 0
    assert len(dst) == reach.sum() and reach[dst, src].all()
    kernel = module.kernel()[0].double().detach().numpy()  # [heads, E]
    for h, tau in enumerate(taus[0].tolist()):
        assert np.abs(kernel[h] - scipy.linalg.expm(-tau * lap)[dst, src]).max() < 1e-5
    bias = module()
    assert torch.allclose(bias, torch.log(1e-4 + module.kernel().clamp_min(0)), atol=1e-6)


def test_edge_attention_equals_masked_dense_attention():
    g = torch.Generator().manual_seed(0)
    n, heads, dh = 30, 3, 8
    a = sparse_adjacency(n, random_graph(n, seed=2))
    dst, src = (torch.from_numpy(v) for v in attention_pattern(a, 1))
    values = torch.randn(heads, len(dst), generator=g)
    q, k, v = (torch.randn(5, heads, n, dh, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.full((heads, n, n), -torch.inf)
    mask[:, dst, src] = values
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])
    got = edge_attention(q, k, v, EdgeBias(dst, src, values))
    assert torch.allclose(got, want, atol=1e-5)
    grads = torch.autograd.grad(got.square().sum(), (q, k, v))
    wants = torch.autograd.grad(want.square().sum(), (q, k, v))
    for a_, b_ in zip(grads, wants, strict=True):
        assert torch.allclose(a_, b_, atol=1e-4)


def test_edge_attention_in_slices_equals_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a = sparse_adjacency(12, ring(12))
    dst, src = (torch.from_numpy(v) for v in attention_pattern(a, 1))
    q, k, v = (torch.randn(7, 2, 12, 4, generator=g) for _ in range(3))
    bias = EdgeBias(dst, src, torch.randn(2, len(dst), generator=g))
    whole = edge_attention(q, k, v, bias)
    monkeypatch.setattr("diffworld.model.edge_attention.CHUNK_ELEMENTS", 2 * len(dst) * 4 * 2)  # two frames a slice
    assert torch.allclose(edge_attention(q, k, v, bias), whole, atol=1e-6)


def test_sparse_positions_match_the_dense_eigenvectors():
    edges = random_graph(200, seed=1)  # large enough for the sparse eigensolver
    dense, sparse = GraphLayout((200, 1), edges), GraphLayout((200, 1), edges, attention="sparse")
    assert np.diff(dense.eigvals[:18]).min() > 1e-3  # a simple low spectrum: the basis is unique
    assert np.allclose(sparse.eigvals, dense.eigvals[:17], atol=1e-8)
    assert torch.allclose(sparse.positions(32), dense.positions(32), atol=1e-5)


def test_sparse_dit_on_a_complete_graph_equals_the_dense_one():
    """On a complete graph the one-hop pattern is every pair, so the two attentions must agree."""
    n = 9
    torch.manual_seed(0)
    cfg = DiTConfig(width=32, depth=2, heads=2, frames=4)
    dense = perturb(DiT(cfg, GraphLayout((n, 3), complete(n))), 0).eval()
    sparse = DiT(cfg, GraphLayout((n, 3), complete(n), attention="sparse")).eval()
    sparse.load_state_dict(dense.state_dict())  # the positions travel with the weights
    g = torch.Generator().manual_seed(0)
    x, c, t = torch.randn(2, 3, n, 3, generator=g), torch.randn(2, 3, generator=g), torch.arange(3)
    with torch.no_grad():
        want, got = dense(x, c, None, t), sparse(x, c, None, t)
    assert want.abs().mean() > 0.1
    assert torch.allclose(got, want, atol=1e-4)


def test_sparse_dit_trains_and_is_local():
    """Gradients reach τ; with one hop and one block, a node's output reads only its neighbours."""
    n = 16
    cfg = DiTConfig(width=32, depth=1, heads=2, frames=4, graph_attention="sparse")
    torch.manual_seed(0)
    net = perturb(DiT(cfg, make_layout(WorldSpec("r", "graph", (n, 2), edges=ring(n)), 8, "sparse")), 0)
    x = torch.randn(1, 1, n, 2, requires_grad=True)
    out = net(x, torch.zeros(1, 1), None, torch.arange(1))
    out[0, 0, 0].sum().backward()
    reads = x.grad[0, 0].abs().sum(-1) > 0
    assert reads[[15, 0, 1]].all() and not reads[2:15].any()
    assert net.spatial_bias_module.log_tau.grad.abs().sum() > 0


def test_auto_attention_follows_the_graph_size():
    small = make_layout(WorldSpec("r", "graph", (10, 1), edges=ring(10)), 8)
    big = make_layout(WorldSpec("r", "graph", (DENSE_NODES + 1, 1), edges=ring(DENSE_NODES + 1)), 8)
    assert (small.attention, big.attention) == ("dense", "sparse")
    assert make_layout(WorldSpec("r", "graph", (10, 1), edges=ring(10)), 8, "sparse").attention == "sparse"
    with pytest.raises(ValueError, match="graph_attention: expected 'auto', 'dense' or 'sparse', found 'fast'"):
        DiTConfig(graph_attention="fast")
    with pytest.raises(ValueError, match="graph attention: expected one of dense, sparse, found 'x'"):
        GraphLayout((4, 1), ring(4), attention="x")


def test_sparse_layout_rejects_bad_edges():
    with pytest.raises(ValueError, match="outside 0..3"):
        GraphLayout((4, 1), [(0, 4)], attention="sparse")
    with pytest.raises(ValueError, match="self-loop"):
        GraphLayout((4, 1), [(2, 2)], attention="sparse")
    with pytest.raises(ValueError, match="pairs of node indices"):
        GraphLayout((4, 1), [(0, 1, 2)], attention="sparse")


def test_sparse_graph_world_model_rolls_out_and_round_trips(tmp_path):
    spec = WorldSpec("ring", "graph", (10, 3), "bounded", value_range=(0.0, 1.0), edges=ring(10))
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", frames=4, graph_attention="sparse")
    model = perturb(WorldModel(spec, config, np.full(3, 0.3), np.full(3, 0.4))).eval()
    model.sampler = SamplerConfig(steps=2)
    g = torch.Generator().manual_seed(0)
    context = torch.rand(2, 2, 10, 3, generator=g)
    dream = rollout(model, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1))
    full = rollout(model, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert dream.shape == (2, 2, 2, 10, 3) and torch.allclose(dream, full, atol=1e-4)
    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.layout.attention == "sparse"
    again = rollout(loaded, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, dream)


def test_subgraphs_score_only_nodes_whose_neighbours_are_all_present():
    import scipy.sparse as sp

    from diffworld.train import draw_subgraph

    a = sp.csr_array(GraphLayout((200, 1), random_graph(200, seed=1)).adjacency)
    sizes = []
    for seed in range(5):
        sub = draw_subgraph(a, 60, torch.Generator().manual_seed(seed), torch.device("cpu"))
        nodes = sub.nodes.numpy()
        assert (np.diff(nodes) > 0).all() and abs(sub.weight.mean().item() - 1.0) < 1e-5
        inside = np.zeros(200, bool)
        inside[nodes] = True
        for v in nodes[sub.weight.numpy() > 0]:
            assert inside[a.indices[a.indptr[v] : a.indptr[v + 1]]].all()
        sizes.append(len(nodes))
    assert max(sizes) <= 60 and min(sizes) >= 50
    assert (
        len({tuple(draw_subgraph(a, 60, torch.Generator().manual_seed(s), "cpu").nodes.tolist()) for s in range(3)})
        == 3
    )


def test_a_one_block_model_on_a_subgraph_equals_the_whole_graph_at_its_scored_nodes():
    """One block of one-hop attention reads a node's neighbours only: where all of them are in the
    subgraph, the node's output there equals its output on the whole graph."""
    import scipy.sparse as sp

    from diffworld.train import draw_subgraph

    n = 80
    edges = random_graph(n, seed=3)
    torch.manual_seed(0)
    layout = GraphLayout((n, 2), edges, attention="sparse")
    net = perturb(DiT(DiTConfig(width=32, depth=1, heads=2, frames=4), layout), 0).eval()
    sub = draw_subgraph(sp.csr_array(layout.adjacency), 30, torch.Generator().manual_seed(0), "cpu")
    g = torch.Generator().manual_seed(1)
    x, c, t = torch.randn(2, 3, n, 2, generator=g), torch.randn(2, 3, generator=g), torch.arange(3)
    with torch.no_grad():
        whole = net(x, c, None, t)
        part = net(x[:, :, sub.nodes], c, None, t, nodes=sub.nodes)
    scored = sub.weight > 0
    assert torch.allclose(part[:, :, scored], whole[:, :, sub.nodes[scored]], atol=1e-5)
    assert not torch.allclose(
        part[:, :, ~scored], whole[:, :, sub.nodes[~scored]], atol=1e-3
    )  # context nodes miss neighbours
    # a dense model's bias is cut to the subgraph's rows and columns
    dense = perturb(DiT(DiTConfig(width=32, depth=1, heads=2, frames=4), GraphLayout((n, 2), edges)), 0).eval()
    with torch.no_grad():
        out = dense(x[:, :, sub.nodes], c, None, t, nodes=sub.nodes)
    assert out.shape == part.shape and torch.isfinite(out).all()


def test_training_on_subgraphs_runs_and_refuses_other_worlds(tmp_path):
    from diffworld.train import TrainConfig, build_model, train
    from diffworld.worlds import collect_episodes, default_policy, make_world

    spec = make_world("cascade", graph="lesmis").spec
    episodes = collect_episodes(lambda: make_world("cascade", graph="lesmis"), range(6), default_policy("cascade"))
    cfg = TrainConfig(steps=3, batch_size=2, log_every=1, subgraph_nodes=30)
    model = build_model(spec, episodes, ModelConfig.preset("tiny", graph_attention="sparse"))
    result = train(model, episodes, cfg, tmp_path / "run", progress=False)
    assert math.isfinite(result.final_loss) and result.steps == 3
    pong = collect_episodes(lambda: make_world("pong"), range(1), default_policy("pong"), max_steps=20)
    pong_model = build_model(make_world("pong").spec, pong, ModelConfig.preset("tiny"))
    with pytest.raises(ValueError, match="train subgraph_nodes: expected a graph world, found a grid one"):
        train(pong_model, pong, cfg, tmp_path / "p", progress=False)


def test_subgraphs_centre_on_where_the_first_frames_show_activity():
    import scipy.sparse as sp

    from diffworld.train import active_nodes, draw_subgraph

    a = sp.csr_array(GraphLayout((40, 3), ring(40)).adjacency)
    first = torch.zeros(2, 40, 3)
    first[:, :, 0] = 1.0  # every node susceptible ...
    first[1, 17] = torch.tensor([0.0, 1.0, 0.0])  # ... but one infected in the second window
    focus = active_nodes(a, first)
    assert np.flatnonzero(focus).tolist() == [16, 17, 18]
    for seed in range(5):
        sub = draw_subgraph(a, 9, torch.Generator().manual_seed(seed), "cpu", focus)
        scored = set(sub.nodes[sub.weight > 0].tolist())
        assert {16, 17, 18} <= scored  # the three centres fit in 9 nodes: 15..19
