"""Pictures of a game's evaluation: scores against horizon, and dreams beside the true game (GIF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import check_int, check_output_file
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.evaluate.pictures import COLORS, write_gif
from diffworld.model.world_model import WorldModel
from diffworld.rollout import rollout
from diffworld.splits import GIF_SEED_BASE, GIF_SEEDS
from diffworld.worlds import Policy, check_recorded_world, default_policy, make_world
from diffworld.worlds.base import run_episode


def plot_horizons(metrics: dict[str, Any], path: str | Path) -> Path:
    """CRPS of the decoded state (and of pixels) against horizon for the model and every baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = metrics["horizons"]
    panels = [("state_crps", "state CRPS (pixels of position error)"), ("pixel_crps", "pixel CRPS")]
    panels = [p for p in panels if p[0] in metrics["metrics"]["model"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for name, entry in metrics["metrics"].items():
            ax.plot(h, entry[key], marker="o", ms=3, label=name, color=COLORS.get(name))
        ax.set_xlabel("horizon (frames)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{metrics['world']}: held-out forecasts ({metrics['held_out']['cases']} cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


#: Most frames of a GIF's free dream: a longer animation is too large to hold or to watch.
MAX_GIF_FRAMES = 10_000


def dream_gif(
    model: WorldModel,
    path: str | Path,
    free_frames: int = 96,
    members: int = 3,
    cases: int = 2,
    horizon: int = 16,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    world_options: dict[str, Any] | None = None,
    policy: Policy | None = None,
    max_steps: int = 1000,
    world: str | None = None,
) -> Path:
    """GIF of held-out episodes: the truth beside dreams under the same actions, then a long free dream.

    `world_options`, `policy` and `max_steps`: how the training data was collected (`data_source`).
    `world`: the model's world name when it imports a module (`check_recorded_world`).
    """
    check_output_file(path, "GIF", suffixes=(".gif",))
    check_int("free_frames", free_frames, 1, MAX_GIF_FRAMES)
    for name, value in (("members", members), ("cases", cases), ("horizon", horizon)):
        check_int(name, value, 1)
    world_name = model.spec.name
    check_recorded_world(world_name, f"model of {world_name!r}", world)
    true_world = make_world(world_name, **(world_options or {}))
    policy = policy or default_policy(world_name)
    ctx_len = model.frames - 1
    panels_truth, panels_dreams, captions = [], [[] for _ in range(members)], []
    gen = torch.Generator(device=model.device).manual_seed(seed)
    seeds = iter(range(GIF_SEED_BASE + seed * GIF_SEEDS, GIF_SEED_BASE + (seed + 1) * GIF_SEEDS))
    for c in range(cases):  # short forecasts from held-out episodes long enough for them
        ep = next(
            (e for e in (run_episode(true_world, s, policy, max_steps) for s in seeds) if len(e) > ctx_len + horizon),
            None,
        )
        if ep is None:
            raise ValueError(
                f"no held-out episode of {world_name} has the {ctx_len + horizon + 1} frames a GIF case needs"
            )
        t0 = min(len(ep) - horizon - 1, ctx_len - 1 + 40 * (c + 1))
        ctx = ep.frames[t0 - ctx_len + 1 : t0 + 1]
        dream = (
            rollout(
                model,
                torch.as_tensor(ctx[None]),
                torch.as_tensor(ep.actions[None, t0 + 1 : t0 + 1 + horizon]),
                n_samples=members,
                context_actions=torch.as_tensor(ep.actions[None, t0 - ctx_len + 1 : t0 + 1]),
                sampler=sampler,
                generator=gen,
            )[0]
            .cpu()
            .numpy()
        )  # [M, H, *frame]
        panels_truth += [ctx, ep.frames[t0 + 1 : t0 + 1 + horizon]]
        for j in range(members):
            panels_dreams[j] += [ctx, dream[j]]
        captions += [f"case {c + 1}: context"] * ctx_len + [
            f"case {c + 1}: h={h + 1}, true actions" for h in range(horizon)
        ]
    # A free dream far beyond the trained window, under the actions of a held-out episode.
    cap = min(max_steps, ctx_len + free_frames + 1)
    ep = next((e for e in (run_episode(true_world, s, policy, cap) for s in seeds) if len(e) > ctx_len + 1), None)
    if ep is None:
        raise ValueError(
            f"no held-out episode of {world_name} is longer than the {ctx_len + 1} frames a free dream needs"
        )
    n_free = min(free_frames, len(ep) - ctx_len)
    dream = (
        rollout(
            model,
            torch.as_tensor(ep.frames[None, :ctx_len]),
            torch.as_tensor(ep.actions[None, ctx_len : ctx_len + n_free]),
            n_samples=members,
            context_actions=torch.as_tensor(ep.actions[None, :ctx_len]),
            sampler=sampler,
            generator=gen,
        )[0]
        .cpu()
        .numpy()
    )
    panels_truth.append(ep.frames[ctx_len : ctx_len + n_free])
    for j in range(members):
        panels_dreams[j].append(dream[j])
    captions += [f"free dream: frame {i + 1}/{n_free}, true game's actions" for i in range(n_free)]
    panels = [("true game", np.concatenate(panels_truth))]
    panels += [(f"dream {j + 1}", np.concatenate(panels_dreams[j])) for j in range(members)]
    value_range = model.spec.value_range or (0.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_gif(
        panels, path, scale=max(1, 128 // model.spec.frame_shape[-1]), fps=8, captions=captions, value_range=value_range
    )


__all__ = ["MAX_GIF_FRAMES", "dream_gif", "plot_horizons"]
