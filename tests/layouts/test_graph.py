import numpy as np
import pytest
import scipy.linalg
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.layouts import GraphLayout, HeatKernelBias, make_layout
from diffworld.model.dit import DiT, DiTConfig
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.spec import WorldSpec
from tests.conftest import perturb


def ring(n: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, (i + 1) % n) for i in range(n))


def random_graph(n: int, seed: int) -> tuple[tuple[int, int], ...]:
    """A connected, irregular graph: a random spanning tree plus a few random chords."""
    rng = np.random.default_rng(seed)
    edges = {(int(rng.integers(i)), i) for i in range(1, n)}
    while len(edges) < n + n // 2:
        i, j = sorted(int(v) for v in rng.choice(n, 2, replace=False))
        edges.add((i, j))
    return tuple(sorted(edges))


def bias_module(layout: GraphLayout, taus: list[float]) -> HeatKernelBias:
    """A one-layer bias whose heads have exactly the diffusion times `taus`."""
    module = HeatKernelBias(torch.from_numpy(layout.eigvals), torch.from_numpy(layout.eigvecs), len(taus))
    with torch.no_grad():
        module.log_tau.copy_(torch.tensor(taus).log()[None])
    return module


def graph_dit(edges, n: int, feats: int = 3, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    cfg = DiTConfig(width=32, depth=2, heads=2, frames=4)
    return perturb(DiT(cfg, GraphLayout((n, feats), edges)), seed).eval()


def test_tokens_are_nodes_and_make_layout_builds_it():
    spec = WorldSpec("g", "graph", (6, 3), edges=ring(6))
    layout = make_layout(spec, patch=8)  # the patch size means nothing on a graph
    assert isinstance(layout, GraphLayout)
    assert (layout.num_tokens, layout.token_dim) == (6, 3)
    x = torch.randn(2, 4, 6, 3)
    assert torch.equal(layout.from_tokens(layout.to_tokens(x)), x)


def test_heat_kernel_equals_matrix_exponential():
    """exp(−τL) from the eigendecomposition equals scipy's expm; it is symmetric, non-negative and conserves heat."""
    layout = GraphLayout((9, 2), random_graph(9, seed=3))
    lap = layout.laplacian()
    deg = layout.adjacency.sum(1)
    assert np.allclose(lap, lap.T) and np.allclose(np.diag(lap), 1.0)
    taus = [0.05, 0.7, 4.0]
    module = bias_module(layout, taus)
    kernel = module.kernel()[0].double()  # [heads, N, N]
    bias = module()[0].double()
    for h, tau in enumerate(taus):
        k = kernel[h].detach().numpy()
        assert np.abs(k - scipy.linalg.expm(-tau * lap)).max() < 1e-5
        assert np.abs(k - k.T).max() < 1e-6
        assert k.min() > -1e-6
        # Normalised Laplacian: √deg is the stationary vector, K·√deg = √deg, i.e. the random-walk
        # kernel D^{-1/2} K D^{1/2} has rows summing to 1.
        rw = k / np.sqrt(deg)[:, None] * np.sqrt(deg)[None, :]
        assert np.allclose(rw.sum(1), 1.0, atol=1e-5)
        assert torch.allclose(bias[h], torch.log(1e-4 + kernel[h].clamp_min(0)), atol=1e-6)


def test_small_tau_is_local_large_tau_spreads():
    layout = GraphLayout((12, 1), ring(12))
    kernel = bias_module(layout, [1e-3, 0.3, 3.0, 300.0]).kernel()[0].detach()  # [4, N, N]
    assert torch.allclose(kernel[0], torch.eye(12), atol=2e-3)  # τ → 0: heat stays put
    stay = kernel.diagonal(dim1=-2, dim2=-1).mean(-1)  # heat left on its own node, per τ
    assert (stay.diff() < 0).all()
    assert torch.allclose(kernel[3], torch.full((12, 12), 1 / 12), atol=1e-5)  # τ → ∞: uniform on a regular graph
    # At a moderate τ, neighbours get more than nodes three hops away.
    assert (kernel[1, 0, 1] > 10 * kernel[1, 0, 3]).item()


def test_heat_never_crosses_components():
    layout = GraphLayout((7, 1), [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5)])  # a triangle, a path, an isolated node
    kernel = bias_module(layout, [5.0]).kernel()[0, 0].detach()
    assert kernel[:3, 3:].abs().max() < 1e-6 and kernel[3:6, 6].abs().max() < 1e-6
    assert abs(kernel[6, 6].item() - 1.0) < 1e-6  # an isolated node keeps its heat
    assert torch.isfinite(GraphLayout((7, 1), [(0, 1)]).positions(32)).all()


def test_positions_are_scaled_signed_eigenvectors():
    layout = GraphLayout((30, 2), random_graph(30, seed=1))
    pos = layout.positions(8)
    assert pos.shape == (30, 8)
    assert GraphLayout((5, 2), ring(5)).positions(32).shape == (5, 4)  # at most N − 1
    assert layout.positions(64).shape == (30, 16)  # at most MAX_EIGVECS
    assert torch.allclose(pos.T @ pos, 30 * torch.eye(8), atol=1e-4)  # orthogonal, entries O(1)
    top = pos.abs().argmax(0)
    assert (pos[top, torch.arange(8)] > 0).all()  # the sign rule


def test_positions_tell_the_nodes_of_a_ring_apart():
    """A ring looks the same from every node, so only the positions can make equal nodes differ."""
    net = graph_dit(ring(8), 8)
    x = torch.randn(1, 2, 1, 3, generator=torch.Generator().manual_seed(0)).expand(1, 2, 8, 3)
    with torch.no_grad():
        out = net(x, torch.zeros(1, 2), None, torch.arange(2))
        net.pos.zero_()
        blind = net(x, torch.zeros(1, 2), None, torch.arange(2))
    assert out.std(dim=2).mean() > 1e-2
    assert blind.std(dim=2).max() < 1e-5


@pytest.mark.parametrize("graph", ["irregular", "ring"])
def test_permutation_equivariance(graph):
    """Relabelling the nodes relabels the output.

    The heat-kernel bias is a function of L, so it is equivariant whatever the eigenbasis. The
    positions are too only where each eigenvalue is simple and the sign rule's largest entry is
    unique: on the irregular graph (checked) the permuted model computes its own layout and its
    positions must come out permuted. On the ring every eigenvalue but the extremes is double,
    the eigenbasis is arbitrary, so the permuted model is given the original's permuted positions
    (what a saved model does anyway: its positions travel with its weights).
    """
    n = 12
    edges = random_graph(n, seed=7) if graph == "irregular" else ring(n)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(n))  # new node a is old node perm[a]
    inv = torch.argsort(perm)
    edges_p = tuple((int(inv[i]), int(inv[j])) for i, j in edges)
    net, net_p = graph_dit(edges, n), graph_dit(edges_p, n, seed=1)
    state = net.state_dict()
    if graph == "irregular":
        assert np.diff(net.layout.eigvals).min() > 1e-3  # a simple spectrum
        del state["pos"]
        net_p.load_state_dict(state, strict=False)
        assert torch.allclose(net_p.pos, net.pos[perm], atol=1e-5)
    else:
        state["pos"] = state["pos"][perm]
        net_p.load_state_dict(state)
    g = torch.Generator().manual_seed(0)
    x, c, t = torch.randn(2, 3, n, 3, generator=g), torch.randn(2, 3, generator=g), torch.arange(3)
    with torch.no_grad():
        out, out_p = net(x, c, None, t), net_p(x[:, :, perm], c, None, t)
    assert out.abs().mean() > 0.1  # a non-trivial output
    assert torch.allclose(out_p, out[:, :, perm], atol=1e-4)
    assert not torch.allclose(out_p, out, atol=1e-2)


def test_diffusion_times_are_learnable_and_positive():
    net = graph_dit(ring(10), 10).train()
    times = net.diffusion_times()
    assert times.shape == (2, 2) and (times > 0).all()
    x = torch.randn(2, 3, 10, 3, generator=torch.Generator().manual_seed(0))
    net(x, torch.zeros(2, 3), None, torch.arange(3)).square().mean().backward()
    grad = net.spatial_bias_module.log_tau.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad.abs() > 0).all()
    with torch.no_grad():  # an SGD step that, taken on τ itself, would overshoot below zero
        net.spatial_bias_module.log_tau -= 1e4 * grad
    assert (net.diffusion_times() > 0).all()
    assert torch.isfinite(net(x, torch.zeros(2, 3), None, torch.arange(3))).all()


def test_bias_memo_follows_tau():
    """Without gradients the bias is kept between calls, but never past a change of τ."""
    module = bias_module(GraphLayout((8, 1), ring(8)), [0.5, 2.0])
    with torch.no_grad():
        first = module()
        assert module() is first
        module.log_tau.add_(1.0)
        second = module()
    assert not torch.allclose(first, second, atol=1e-3)
    fresh = module()  # with gradients: computed afresh
    assert fresh.requires_grad and torch.allclose(fresh, second)


def test_bad_graphs_are_rejected():
    with pytest.raises(ValueError, match="outside 0..3"):
        GraphLayout((4, 1), [(0, 4)])
    with pytest.raises(ValueError, match="self-loop"):
        GraphLayout((4, 1), [(2, 2)])
    with pytest.raises(ValueError, match="N >= 2"):
        GraphLayout((1, 3), [])
    with pytest.raises(ValueError, match="refine=0"):
        DiT(DiTConfig(width=32, depth=1, heads=2, refine=2), GraphLayout((4, 1), ring(4)))


def test_graph_world_model_rolls_out_and_round_trips(tmp_path):
    spec = WorldSpec("ring", "graph", (10, 3), "bounded", value_range=(0.0, 1.0), edges=ring(10))
    torch.manual_seed(0)
    model = perturb(WorldModel(spec, ModelConfig.preset("tiny", frames=4), np.full(3, 0.3), np.full(3, 0.4))).eval()
    model.sampler = SamplerConfig(steps=2)
    model.denoiser.net.pos[:, 0] *= -1  # as valid a basis: the saved one must win over the recomputed one
    g = torch.Generator().manual_seed(0)
    context = torch.rand(2, 2, 10, 3, generator=g)
    with torch.no_grad():
        d = model.denoiser(context, torch.full((2, 2), 0.5), None, torch.arange(2))
    assert d.shape == (2, 2, 10, 3)
    dream = rollout(model, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1))
    assert dream.shape == (2, 2, 2, 10, 3)
    assert dream.min() >= 0 and dream.max() <= 1
    # 2 context + 2 new frames fit the window of 4, so the cache must equal full recompute.
    full = rollout(model, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.allclose(dream, full, atol=1e-4)  # float round-off only; a cache bug shows at 1e-2

    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.spec == spec and loaded.spec.edges == ring(10)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(loaded.denoiser.net.diffusion_times(), model.denoiser.net.diffusion_times())
    again = rollout(loaded, context, horizon=2, n_samples=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, dream)
