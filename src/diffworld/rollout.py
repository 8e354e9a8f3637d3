"""Autoregressive rollout: dream H frames after a context, for an ensemble of futures.

`rollout` is the stepped engine (`diffworld.dreamer.Dreamer`) reset from the context, each
context repeated `n_samples` times, and stepped H times: each new frame is sampled by the
few-step ODE sampler (or, for worlds of independently changing discrete cells, the marginal
sampler) while attending to the finished frames, which are fed back at the small context noise
level σ_ctx. With the KV cache a new frame costs the same however long the history is; without
it (`use_cache=False`) every denoising pass recomputes the frames in view — the reference the
cache is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffworld.checks import check_fits, check_int
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.inputs import as_tensor, check_actions, check_context, check_guide, check_sampler
from diffworld.model.world_model import WorldModel


@torch.no_grad()
def rollout(
    model: WorldModel,
    context: torch.Tensor,
    actions: torch.Tensor | None = None,
    horizon: int | None = None,
    n_samples: int = 1,
    context_actions: torch.Tensor | None = None,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
    policy: Callable[[int, torch.Tensor | None], torch.Tensor] | None = None,
    compile: bool = False,
    guide: WorldModel | None = None,
    guide_weight: float = 1.0,
) -> torch.Tensor:
    """Dream `horizon` frames after `context`, `n_samples` futures per context.

    Args:
        model: a trained WorldModel (put in eval mode here).
        context: [B, L, *frame] past frames in world units; only the newest frames − 1 are used.
        actions: [B, H] (discrete) or [B, H, d] actions leading into each future frame; None for
            worlds without actions (or to dream without telling the model the actions).
        horizon: frames to generate; defaults to the number of actions.
        n_samples: ensemble members per context, generated together as one batch.
        context_actions: [B, L] actions that led into the context frames (default: unknown).
        sampler: sampler settings (default: the model's own).
        generator: torch.Generator for every random draw, for reproducible dreams.
        use_cache: keep finished frames' keys/values (fast) or recompute the frames in view (reference).
        stop: the world's end of an episode, frames [M, *frame] (world units) -> bool [M]. A member
            whose new frame ends its episode holds that frame to the horizon and is no longer
            computed (the model never saw what follows an episode's end). Later draws then differ
            from a rollout without `stop`, which is why it is opt-in.
        policy: closed-loop actions instead of `actions`: `policy(h, previous)` gets the frame
            index h and the members' previous dreamed frames [B·n_samples, *frame] (None at
            h = 0) and returns the actions leading into frame h, [B·n_samples] (discrete) or
            [B·n_samples, d] (continuous): an agent acting in the dream, or exogenous features
            that follow the dreamed path (a market's volatility). Needs `horizon`.
        compile: run the denoising passes through `torch.compile` (`WorldModel.compiled_denoiser`;
            the context's encoding stays eager): the first dream of each shape pays tens of
            seconds of compiling, later ones run fused kernels. It pays where a pass is many
            small kernels (a one-dream step against the cache); the dreams equal the eager ones
            up to float rounding (docs/research-log.md). Needs a C++ compiler on a CPU.
        guide: autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of
            itself"): a weaker model of the same world — fewer training steps or a smaller
            network, trained on the same data — whose denoiser D₀ is run beside the model's D₁ at
            every step, with its own past (KV cache); the sampler then follows D₀ + w·(D₁ − D₀), w =
            `guide_weight`, which pushes each draw along the direction in which more training
            moved the model. It must share the model's frames, window, normalisation and target;
            it runs eager under `compile` too. Each step then costs two passes.
        guide_weight: the autoguidance weight w; 1 is the model alone (the guide is not run).

    Returns:
        [B, n_samples, H, *frame] dreamed frames in world units.
    """
    model.eval()
    s = sampler or model.sampler
    dev = model.device
    frame_shape = tuple(model.spec.frame_shape)
    check_sampler(model.spec, s, model.config.dit.chance)
    check_guide(model, guide, guide_weight)
    context = check_context(model, context)
    b, length = context.shape[:2]
    if policy is not None and (actions is not None or horizon is None):
        raise ValueError("a rollout with a policy takes a horizon and no action sequence")
    actions = as_tensor(actions, "actions")
    if horizon is None:
        if actions is None:
            raise ValueError("rollout needs a horizon or a sequence of actions")
        if actions.ndim < 2:
            d = ", d" if model.spec.action.kind == "continuous" else ""
            raise ValueError(
                f"actions: expected a batch of action sequences [B, H{d}], found shape {list(actions.shape)}"
            )
        horizon = int(actions.shape[1])
    check_int("rollout horizon", horizon, 1)
    check_int("rollout n_samples", n_samples, 1)
    # The dream is one tensor [B·n_samples, H, *frame] of float32: refused here if it cannot fit.
    check_fits(
        4 * b * n_samples * horizon * math.prod(frame_shape),
        f"a rollout of {b}×{n_samples} dreams of {horizon} frames",
        dev,
    )
    actions = check_actions(model, actions, b, horizon, "actions")
    context_actions = check_actions(model, context_actions, b, length, "context_actions")
    m = b * n_samples
    if actions is not None:
        actions = actions.repeat_interleave(n_samples, dim=0)  # [B·M, H(, d)], members adjacent

    dreamer = Dreamer(model, m, s, generator, compile, use_cache, guide, guide_weight)
    dreamer.reset(context, context_actions, repeat=n_samples)  # each context encoded once
    out = torch.empty((m, horizon) + frame_shape, device=dev)
    for h in range(horizon):
        running = dreamer.running  # the members whose episode goes on, in batch order
        if len(running) == 0:
            out[:, h:] = out[:, h - 1 : h]
            break
        if len(running) < m:
            out[:, h] = out[:, h - 1]  # ended members hold their last frame; running ones overwrite it
        if policy is not None:
            chosen = check_actions(
                model, policy(h, out[:, h - 1] if h else None)[:, None], m, 1, f"policy at frame {h}"
            )
            a = None if chosen is None else chosen[running, 0]  # [m'(, d)]
        else:
            a = None if actions is None else actions[running, h]  # [m'(, d)]
        out[running, h] = dreamer.step(a, stop if h + 1 < horizon else None)
    return out.reshape((b, n_samples, horizon) + frame_shape)
