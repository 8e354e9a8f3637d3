"""Held-out forecast cases and the ensembles of every forecaster scored on them.

A case is a moment of a held-out episode: the context up to it, the actions that followed, and
what truly happened. Forecasters: the model, persistence (the last context frame), climatology
(frames drawn from training episodes) and the oracle (the true world branched from the same
state with fresh noise — the limit of any forecast of that world).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from diffworld.data.episodes import Episode
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import WorldModel
from diffworld.rollout import rollout
from diffworld.worlds.base import BranchableWorld, Policy, World, collect_episodes


@dataclass
class Cases:
    """S forecast cases from held-out episodes."""

    context: np.ndarray  # [S, L, *frame]
    context_actions: np.ndarray  # [S, L]
    actions: np.ndarray  # [S, H] actions leading into each future frame
    truth: np.ndarray  # [S, H, *frame]
    states: list  # [S] simulator state at the last context frame (None: the world cannot branch)
    seeds: list[int]  # [S] episode seed of each case


def make_cases(
    make_world: Callable[[], World],
    seeds: list[int],
    policy: Policy,
    n_cases: int,
    context: int,
    horizon: int,
    rng: np.random.Generator,
    max_steps: int = 1000,
) -> Cases:
    """`n_cases` start points spread over one episode per seed (all seeds held out from training)."""
    branchable = isinstance(make_world(), BranchableWorld)  # keep states only to branch them later
    episodes = collect_episodes(make_world, seeds, policy, max_steps, keep_states=branchable)
    usable = [e for e in episodes if len(e) >= context + horizon]
    if not usable:
        raise ValueError(f"no held-out episode is long enough for context {context} + horizon {horizon}")
    picks = []
    for i in range(n_cases):
        ep = usable[i % len(usable)]
        t0 = int(rng.integers(context - 1, len(ep) - horizon))  # index of the last context frame
        picks.append((ep, t0))
    return cases_at(picks, context, horizon)


def cases_at(picks: list[tuple[Episode, int]], context: int, horizon: int) -> Cases:
    """Cases at chosen moments: (episode, index of the last context frame) each, `horizon` true frames after it."""
    for ep, t0 in picks:
        if not context - 1 <= t0 <= len(ep) - 1 - horizon:
            raise ValueError(
                f"a case needs {context} context frames up to frame {t0} and {horizon} after it; "
                f"episode {ep.seed} has {len(ep)}"
            )
    return Cases(
        context=np.stack([ep.frames[t0 - context + 1 : t0 + 1] for ep, t0 in picks]),
        context_actions=np.stack([ep.actions[t0 - context + 1 : t0 + 1] for ep, t0 in picks]),
        actions=np.stack([ep.actions[t0 + 1 : t0 + 1 + horizon] for ep, t0 in picks]),
        truth=np.stack([ep.frames[t0 + 1 : t0 + 1 + horizon] for ep, t0 in picks]),
        states=[ep.states[t0] if ep.states else None for ep, t0 in picks],
        seeds=[int(ep.seed) for ep, _ in picks],  # type: ignore[arg-type]
    )


@contextmanager
def counting_evaluations(model: WorldModel) -> Iterator[list[int]]:
    """Count the network evaluations of new frames while the block runs: one per dream and call of
    the denoiser that denoises a new frame (every call but the context's encoding, `write_cache`;
    a classifier-free or adaptive extra call counts). Yields a one-element list holding the count."""
    count = [0]

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if not kwargs.get("write_cache", False):
            count[0] += args[0].shape[0]  # rows: each denoises one new frame

    handle = model.denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def model_forecast(
    model: WorldModel,
    context: np.ndarray,
    actions: np.ndarray,
    members: int,
    context_actions: np.ndarray | None = None,
    sampler: SamplerConfig | None = None,
    seed: int = 0,
    batch: int = 512,
    stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
    guide: WorldModel | None = None,
    guide_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """[S, M, H, *frame] dreamed by `model`, in chunks of at most `batch` rollouts (`stop`, `guide`,
    `guide_weight`: see `rollout`); the draws from `generator` if given, else from `seed`."""
    gen = generator if generator is not None else torch.Generator(device=model.device).manual_seed(seed)
    per_chunk = max(1, batch // members)
    acting = model.spec.action.kind != "none"  # a world without actions stores NO_ACTION; pass none
    out = []
    for i in range(0, len(context), per_chunk):
        sl = slice(i, i + per_chunk)
        ctx_a = None if context_actions is None or not acting else torch.as_tensor(context_actions[sl])
        dream = rollout(
            model,
            torch.as_tensor(context[sl]),
            torch.as_tensor(actions[sl]) if acting else None,
            horizon=actions.shape[1],
            n_samples=members,
            context_actions=ctx_a,
            sampler=sampler,
            generator=gen,
            stop=stop,
            guide=guide,
            guide_weight=guide_weight,
        )
        out.append(dream.float().cpu().numpy())
    return np.concatenate(out)


def persistence_forecast(cases: Cases) -> np.ndarray:
    """[S, 1, H, *frame]: the last context frame, held."""
    h = cases.truth.shape[1]
    return np.repeat(cases.context[:, -1:][:, None], h, axis=2).astype(np.float32)


def climatology_forecast(train_frames: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """[S, M, H, *frame]: independent random frames from the training episodes."""
    s, m, h = shape
    idx = rng.integers(len(train_frames), size=(s, m, h))
    return train_frames[idx].astype(np.float32)


def oracle_forecast(
    make_world: Callable[[], World], cases: Cases, members: int, seed: int = 0, perturb: float = 0.0
) -> np.ndarray:
    """[S, M, H, *frame]: the true world from each case's state, `members` times with fresh noise.

    `perturb` > 0 first adds N(0, perturb²) to each member's start (the world's `perturb`
    method): a twin ensemble, the oracle of a deterministic world.
    """
    world = make_world()
    if not isinstance(world, BranchableWorld):
        raise ValueError(f"world {world.spec.name!r} cannot be branched, so it has no oracle")
    if perturb and not hasattr(world, "perturb"):
        raise ValueError(f"world {world.spec.name!r} has no perturb(scale), so it gives no twin ensemble")
    s, h = cases.actions.shape[:2]
    out = np.zeros((s, members, h) + tuple(world.spec.frame_shape), dtype=np.float32)
    for i in range(s):
        for j in range(members):
            world.set_state(cases.states[i])
            world.reseed(int(np.random.SeedSequence([seed, i, j]).generate_state(1)[0]))
            if perturb:
                world.perturb(perturb)  # type: ignore[attr-defined]
            for k in range(h):
                out[i, j, k] = world.step(cases.actions[i, k])[0]
    return out


def training_frames(
    make_world: Callable[[], World], seeds: list[int], policy: Policy, max_steps: int = 1000
) -> np.ndarray:
    """Frames of training-seed episodes, the pool climatology draws from."""
    episodes: list[Episode] = collect_episodes(make_world, seeds, policy, max_steps)
    return np.concatenate([e.frames for e in episodes])
