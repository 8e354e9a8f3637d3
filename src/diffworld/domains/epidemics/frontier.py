"""Dreams of a spread computed where it can move: the frontier of each step, not the whole graph.

On a large graph one epidemic touches a small part of it, and in an epidemic or a cascade a node
changes only where it or a neighbour is not in the graph's typical state (a susceptible node with
no infected neighbour stays susceptible; a recovered one stays recovered). A dream step then
needs the network only at those nodes, the *centres*: each step takes the subgraph of the
centres with all their neighbours — what a model trained on subgraphs
(`TrainConfig.subgraph_nodes`) was trained on — runs one marginal-sampler evaluation on it, draws
the centres' new states and copies every other node's. Cost and memory grow with the frontier
instead of the graph, so hub rankings and forecasts on graphs of many thousands of nodes fit a
CPU. The window is recomputed at every step (no cache): the subgraph changes from step to step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from diffworld.model.world_model import WorldModel
from diffworld.train import active_nodes


def frontier_rollout(
    model: WorldModel,
    context: torch.Tensor,
    horizon: int,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Dream `horizon` frames after `context` [B, L, N, F] (world units), `n_samples` per context,
    computing each step on its frontier only; returns [B, n_samples, H, N, F].

    For graph worlds of categorical or binary node states with the marginal sampler (a cascade
    model's default). The centres of a step are the nodes `train.active_nodes` finds in any
    member's newest frame, over the members of one context (each context runs on its own); a step
    with none copies the frame to the horizon. `stop` (frames [M, N, F] -> bool [M], as
    `rollout`'s): a member whose newest frame ends its episode holds it.
    """
    if context.ndim != 4:
        raise ValueError(f"frontier_rollout: expected context [B, L, N, F], found shape {list(context.shape)}")
    # each context on its own: its members share one frontier, and another context's would add nothing
    return torch.stack([_frontier_rollout(model, c[None], horizon, n_samples, generator, stop)[0] for c in context])


def _frontier_rollout(
    model: WorldModel,
    context: torch.Tensor,
    horizon: int,
    n_samples: int,
    generator: torch.Generator | None,
    stop: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    s = model.sampler
    if model.spec.layout != "graph" or s.method != "marginal":
        raise ValueError(
            "frontier_rollout: expected a graph model with the marginal sampler, "
            f"found a {model.spec.layout} model with {s.method!r}"
        )
    model.eval()
    dev = model.device
    adjacency = sp.csr_array(model.layout.adjacency)
    b, length = context.shape[:2]
    keep = min(length, model.frames - 1)
    window = context[:, -keep:].to(dev).repeat_interleave(n_samples, dim=0)  # [M, K, N, F]
    m = window.shape[0]
    out = torch.empty((m, horizon) + tuple(window.shape[2:]), device=dev)
    ended = torch.zeros(m, dtype=torch.bool, device=dev)
    for h in range(horizon):
        last = window[:, -1]  # [M, N, F]
        if stop is not None:
            ended |= stop(last)
        running = (~ended).nonzero()[:, 0]
        centres = np.flatnonzero(active_nodes(adjacency, last[running].cpu())) if len(running) else []
        if len(centres) == 0:  # nothing can change any more
            out[:, h:] = last[:, None]
            break
        around = np.zeros(adjacency.shape[0], bool)
        around[centres] = True
        around[adjacency[centres].indices] = True
        kept = np.flatnonzero(around)
        nodes = torch.from_numpy(kept).to(dev)
        at = torch.from_numpy(np.searchsorted(kept, centres)).to(dev)  # centres within nodes
        k = window.shape[1]
        past = window[running][:, :, nodes]  # [M', K, S', F]
        r = len(running)
        x_past = model.normalize(past) + s.sigma_ctx * torch.randn(past.shape, generator=generator, device=dev)
        x_new = s.sigma_max * torch.randn((r, 1) + past.shape[2:], generator=generator, device=dev)
        sigma = torch.cat([torch.full((r, k), s.sigma_ctx, device=dev), torch.full((r, 1), s.sigma_max, device=dev)], 1)
        with torch.no_grad():
            x = torch.cat([x_past, x_new], 1)
            denoised = model.denoiser(x, sigma, None, torch.arange(k + 1, device=dev), nodes=nodes)[:, -1]
        drawn = model.project(model.draw_marginal(model.denormalize(denoised), generator))  # [M', S', F]
        new = last.clone()
        new[running[:, None], torch.from_numpy(centres).to(dev)[None, :]] = drawn[:, at]
        out[:, h] = new
        window = torch.cat([window, new[:, None]], 1)[:, -(model.frames - 1) :]
    return out.reshape((b, n_samples, horizon) + tuple(out.shape[2:]))


__all__ = ["frontier_rollout"]
