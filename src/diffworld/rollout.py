"""Autoregressive rollout: dream H frames, one at a time, for an ensemble of futures.

Each new frame is sampled by the few-step ODE sampler (or, for worlds of independently changing
discrete cells, the marginal sampler) while attending to the finished frames.
A finished frame is fed back at the small context noise level σ_ctx; with the KV cache its
temporal keys and values are computed once, so a new frame costs the same however long the
history is. Without the cache (`use_cache=False`) every denoising step recomputes the whole
history — the reference the cache is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffworld.checks import check_fits, check_int
from diffworld.diffusion.sampling import SamplerConfig, in_target_units, karras_sigmas, sample
from diffworld.model.kv_cache import KVCache
from diffworld.model.world_model import WorldModel


def null_actions(model: WorldModel, batch: int, n: int, device: torch.device) -> torch.Tensor | None:
    """"No action" for `n` frames: −1 for discrete worlds, NaN for continuous, None without actions."""
    space = model.spec.action
    if space.kind == "discrete":
        return torch.full((batch, n), -1, dtype=torch.long, device=device)
    if space.kind == "continuous":
        return torch.full((batch, n, space.n), float("nan"), device=device)
    return None


def check_actions(model: WorldModel, actions: torch.Tensor | None, batch: int, n: int, what: str) -> torch.Tensor | None:
    """Validate actions [B, n] (discrete) or [B, n, d] (continuous) for `model`; None means "no action"."""
    space = model.spec.action
    if actions is None or space.kind == "none":
        if actions is not None:
            raise ValueError(f"{what}: world {model.spec.name!r} takes no actions, got a tensor of shape {list(actions.shape)}")
        return null_actions(model, batch, n, model.device)
    actions = as_tensor(actions, what).to(model.device)
    expected = (batch, n) if space.kind == "discrete" else (batch, n, space.n)
    if tuple(actions.shape) != expected:
        raise ValueError(f"{what}: expected shape {list(expected)}, got {list(actions.shape)}")
    if space.kind == "discrete":
        if actions.is_floating_point() and not (actions == actions.round()).all():
            raise ValueError(f"{what}: expected whole action numbers, found {actions[actions != actions.round()][0].item()}")
        actions = actions.long()
        bad = (actions < -1) | (actions >= space.n)
        if bad.any():
            raise ValueError(f"{what}: expected actions in [0, {space.n}) or -1, found {int(actions[bad][0])}")
    else:
        actions = actions.float()
    return actions


def check_context(model: WorldModel, context: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Context frames [B, L, *frame] (B = `batch` if given) as float32 on the model's device; a
    wrong shape or a NaN/inf is a ValueError naming what was expected and found."""
    frame_shape = tuple(model.spec.frame_shape)
    try:
        context = torch.as_tensor(context, dtype=torch.float32, device=model.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"context: expected a tensor or an array of frames, found {type(context).__name__}") from None
    if context.ndim != len(frame_shape) + 2 or tuple(context.shape[2:]) != frame_shape or (batch is not None and context.shape[0] != batch):
        raise ValueError(
            f"context: expected shape [{'B' if batch is None else batch}, L, {', '.join(map(str, frame_shape))}] for world "
            f"{model.spec.name!r}, got {list(context.shape)}"
        )
    if context.shape[0] < 1 or context.shape[1] < 1:
        raise ValueError(f"context: expected at least one sequence of at least one frame, found shape {list(context.shape)}")
    if not torch.isfinite(context).all():
        raise ValueError("context: found NaN or inf in the frames")
    return context


def as_tensor(values: object, what: str) -> torch.Tensor | None:
    """`values` (a tensor, an array or nested lists of numbers; None stays None) as a tensor, or a
    TypeError naming `what`, what was expected and what was found."""
    if values is None or isinstance(values, torch.Tensor):
        return values
    try:
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what}: expected a tensor, an array or nested lists of numbers, found {type(values).__name__}") from None


def check_sampler(model: WorldModel, sampler: SamplerConfig) -> None:
    """Raise ValueError where `sampler` cannot serve `model`'s world (the marginal sampler needs discrete cells)."""
    if sampler.method == "marginal" and model.spec.value_kind not in ("binary", "categorical"):
        raise ValueError(f"the marginal sampler needs a binary or categorical world; {model.spec.name!r} is {model.spec.value_kind}")
    if sampler.adaptive_steps and (sampler.method == "marginal" or model.spec.value_kind not in ("binary", "categorical")):
        raise ValueError(
            f"adaptive steps need an ODE sampler on a binary or categorical world; got method {sampler.method!r} "
            f"on {model.spec.name!r} ({model.spec.value_kind})"
        )


#: The autoguidance weight w where a guide is given without one (`WorldModel.guide_with`, `diffworld eval --guide`).
GUIDE_WEIGHT = 2.0


def check_guide(model: WorldModel, guide: WorldModel | None, weight: float) -> None:
    """Raise ValueError where `guide` cannot guide `model` (autoguidance, see `rollout`)."""
    if not math.isfinite(weight):
        raise ValueError(f"guide_weight must be a finite number, got {weight!r}")
    if guide is None:
        if weight != 1.0:
            raise ValueError(f"guide_weight {weight} needs a guide model (1 is the model alone)")
        return
    found = lambda m: (m.spec.name, tuple(m.spec.frame_shape), m.spec.action.kind, m.frames, m.config.target, m.config.sigma_data)  # noqa: E731
    if found(guide) != found(model):
        raise ValueError(
            "a guide must share the model's world, frame shape, actions, window, target and σ_data: "
            f"expected {found(model)}, got {found(guide)}"
        )
    if guide.device != model.device:
        raise ValueError(f"a guide must sit on the model's device: expected {model.device}, got {guide.device}")
    same_stats = guide.mean.shape == model.mean.shape and torch.allclose(guide.mean.cpu(), model.mean.cpu()) and torch.allclose(guide.std.cpu(), model.std.cpu())
    if not same_stats:
        raise ValueError("a guide must normalise frames as the model does (trained on the same data): their mean and std differ")
    if model.config.target == "change" and not math.isclose(guide.config.change_std, model.config.change_std, rel_tol=1e-6):
        raise ValueError(f"a guide must diffuse the change at the model's scale: change_std {model.config.change_std} against {guide.config.change_std}")


#: A finished frame waiting to be written to the KV cache: (x at σ_ctx, σ, action or None, time), each [rows, 1, ...].
Fed = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]


def denoise_new_frame(
    model: WorldModel,
    cache: KVCache,
    x: torch.Tensor,
    sigma: torch.Tensor,
    actions: torch.Tensor | None,
    t: torch.Tensor,
    fed: Fed | None,
    denoiser: Callable[..., torch.Tensor] | None = None,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """D(x; σ) of one new frame x [R, 1, *frame] at time t against the cache; with `fed`, the frame
    dreamed last is written to the cache in the same pass (`commit`), as a write pass of its own
    followed by this one would, for the cost of one pass. `denoiser`: the model's own (default)
    or its compiled form (`WorldModel.compiled_denoiser`). `base` [R, 1, *frame]: the clean
    frame before, for a model that diffuses the change."""
    denoiser = model.denoiser if denoiser is None else denoiser
    if fed is None:
        return denoiser(x, sigma, actions, t, cache=cache, base=base)
    fx, fsigma, fa, ft = fed
    if fa is not None or actions is not None:
        rows = x.shape[0]
        fa = null_actions(model, rows, 1, x.device) if fa is None else fa
        actions = torch.cat([fa, null_actions(model, rows, 1, x.device) if actions is None else actions], dim=1)
    return denoiser(torch.cat([fx, x], dim=1), torch.cat([fsigma, sigma], dim=1), actions, torch.cat([ft, t]), cache=cache, commit=1, base=base)


#: The denoiser at a new frame's position for a batch of dreams: (x, sigma, actions, base) -> D (see `sample_frame`).
Run = Callable[[torch.Tensor, float, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def sample_frame(
    model: WorldModel,
    run: Run,
    actions: torch.Tensor | None,
    rows: int,
    sampler: SamplerConfig,
    generator: torch.Generator | None = None,
    previous: torch.Tensor | None = None,
    restrict: Callable[[torch.Tensor], Run] | None = None,
) -> torch.Tensor:
    """One new frame for each of `rows` dreams, [rows, 1, *frame] in world units (on the world's values).

    `run(x, sigma, actions, base)` is the denoiser at the new frame's position, x [rows, 1, *frame]
    at noise level sigma (model units), `base` the frame before (model units) for a model that
    diffuses the change, else None; with guidance ≠ 1 and actions given, it is also run under
    "no action" and the two are mixed (classifier-free guidance). `previous` [rows, 1, *frame]
    (world units): each dream's newest frame, which a model that diffuses the change needs.
    `restrict(index)`: `run` for the dreams `index` alone, after the first draw (no frame fed back
    again); needed by `SamplerConfig.adaptive_steps`, which draws the frames whose first draw is
    uncertain again, with more steps.
    """
    s, dev = sampler, model.device
    base = None
    if model.config.target == "change":
        if previous is None:
            raise ValueError("a model that diffuses the change needs each dream's previous frame")
        base = model.normalize(previous)

    def draw(run: Run, actions: torch.Tensor | None, base: torch.Tensor | None, n: int, steps: int) -> torch.Tensor:
        """n frames [n, 1, *frame] in world units, off the world's values (the sampler's raw output)."""
        null = null_actions(model, n, 1, dev)

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:  # frames and levels in model units
            d = run(x, sigma, actions, base)
            if s.guidance != 1.0 and actions is not None:  # classifier-free guidance on the action
                d_uncond = run(x, sigma, null, base)
                d = d_uncond + s.guidance * (d - d_uncond)
            return d

        shape = (n, 1) + tuple(model.spec.frame_shape)
        if s.method == "marginal":  # E[x | past] at σ_max, then every cell drawn on its own
            if base is not None:
                raise ValueError("the marginal sampler draws frames, not changes; a model that diffuses the change needs an ODE sampler")
            x = s.sigma_max * torch.randn(shape, generator=generator, device=dev)
            return model.draw_marginal(model.denormalize(denoise(x, s.sigma_max)), generator)
        # The sampler works on the target y in its own units: frame = origin + scale·y (model units).
        origin, scale = (0.0 if base is None else base), model.config.change_scale
        sigmas = karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho)
        y0 = sample(in_target_units(denoise, origin, scale), shape, sigmas, generator, s.method, dev, churn=s.churn)
        return model.denormalize(origin + y0 * scale)

    frames = draw(run, actions, base, rows, s.steps)  # [rows, 1, *frame]
    if s.adaptive_steps:
        if restrict is None:
            raise ValueError("adaptive_steps needs a way to run the denoiser for some dreams alone (restrict)")
        unsure = model.uncertainty(frames[:, 0]) > s.uncertain  # [rows]
        if unsure.any():  # drawn again, from fresh noise, through the levels where outcomes are chosen
            index = unsure.nonzero()[:, 0]
            pick = lambda t: None if t is None else t[index]  # noqa: E731
            frames = frames.clone()
            frames[index] = draw(restrict(index), pick(actions), pick(base), len(index), s.adaptive_steps)
    return model.project(frames)


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
        use_cache: keep finished frames' keys/values (fast) or recompute the history (reference).
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
            every step, with its own KV cache; the sampler then follows D₀ + w·(D₁ − D₀), w =
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
    check_sampler(model, s)
    check_guide(model, guide, guide_weight)
    guided = guide is not None and guide_weight != 1.0
    if guided:
        guide.eval()
    context = check_context(model, context)
    b, length = context.shape[:2]
    if policy is not None and (actions is not None or horizon is None):
        raise ValueError("a rollout with a policy takes a horizon and no action sequence")
    actions = as_tensor(actions, "actions")
    if horizon is None:
        if actions is None:
            raise ValueError("rollout needs a horizon or a sequence of actions")
        if actions.ndim < 2:
            raise ValueError(f"actions: expected a batch of action sequences [B, H{', d' if model.spec.action.kind == 'continuous' else ''}], found shape {list(actions.shape)}")
        horizon = int(actions.shape[1])
    check_int("rollout horizon", horizon, 1)
    check_int("rollout n_samples", n_samples, 1)
    # The dream is one tensor [B·n_samples, H, *frame] of float32: refused here if it cannot fit.
    check_fits(4 * b * n_samples * horizon * math.prod(frame_shape), f"a rollout of {b}×{n_samples} dreams of {horizon} frames", dev)
    actions = check_actions(model, actions, b, horizon, "actions")
    context_actions = check_actions(model, context_actions, b, length, "context_actions")
    keep = model.frames - 1  # the newest frames − 1 finished frames stay in view
    if length > keep:
        context, length = context[:, -keep:], keep
        context_actions = None if context_actions is None else context_actions[:, -keep:]

    denoiser = model.compiled_denoiser() if compile else model.denoiser
    m = b * n_samples

    def mix(d: torch.Tensor, guide_denoised: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The model's D₁, autoguided: D₀ + w·(D₁ − D₀) with the guide's D₀ (run only when guided)."""
        if not guided:
            return d
        d0 = guide_denoised()
        return d0 + guide_weight * (d - d0)

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:  # [B, ...] -> [B·M, ...], members adjacent
        return None if t is None else t.repeat_interleave(n_samples, dim=0)

    def randn(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=dev)

    # Context frames enter at σ_ctx, like every frame fed back later.
    x_ctx = model.normalize(context) + s.sigma_ctx * randn(context.shape)  # [B, L, *frame]
    ctx_sigma = torch.full((b, length), s.sigma_ctx, device=dev)
    times = torch.arange(length, device=dev)
    guide_cache: KVCache | None = None
    if use_cache:
        cache = model.denoiser.net.new_cache()
        model.denoiser(x_ctx, ctx_sigma, context_actions, times, cache=cache, write_cache=True)  # once: eager
        cache = cache.repeat_interleave(n_samples, b)
        if guided:
            guide_cache = guide.denoiser.net.new_cache()
            guide.denoiser(x_ctx, ctx_sigma, context_actions, times, cache=guide_cache, write_cache=True)
            guide_cache = guide_cache.repeat_interleave(n_samples, b)
    else:  # the full history, recomputed at every step
        hist_x, hist_sigma, hist_a, hist_t = rep(x_ctx), rep(ctx_sigma), rep(context_actions), times

    out = torch.empty((m, horizon) + frame_shape, device=dev)
    running = torch.arange(m, device=dev)  # the members whose episode goes on, in batch order
    # With the cache, the frame dreamed last is fed back in the first denoising pass of the next
    # (`commit`), not in a pass of its own; until that pass it waits here.
    pending: list[Fed] = []
    for h in range(horizon):
        if len(running) == 0:
            out[:, h:] = out[:, h - 1 : h]
            break
        if len(running) < m:
            out[:, h] = out[:, h - 1]  # ended members hold their last frame; running ones overwrite it
        t = torch.tensor([length + h], device=dev)
        if policy is not None:
            chosen = check_actions(model, policy(h, out[:, h - 1] if h else None)[:, None], m, 1, f"policy at frame {h}")
            a = None if chosen is None else chosen[running]  # [m', 1]
        else:
            a = rep(actions[:, h : h + 1])[running] if actions is not None else None  # [m', 1]
        mr = len(running)

        def denoise_rows(
            index: torch.Tensor | None, c: KVCache | None, gc: KVCache | None, fed: Fed | None,
            x: torch.Tensor, sigma: float, act: torch.Tensor | None, base: torch.Tensor | None,
        ) -> torch.Tensor:  # fmt: skip
            """D of the new frame x [n, 1, *frame] of the running members, or of the members `index`
            alone, against their caches (c and the guide's gc; with `use_cache`) or their history."""
            sig = torch.full((x.shape[0], 1), sigma, device=dev)
            if use_cache:
                d = denoise_new_frame(model, c, x, sig, act, t, fed, denoiser, base)
                return mix(d, lambda: denoise_new_frame(guide, gc, x, sig, act, t, fed, None, base))
            pick = (lambda h: h) if index is None else (lambda h: None if h is None else h[index])  # noqa: E731
            seq = torch.cat([pick(hist_x)[:, -keep:], x], dim=1)
            seq_sigma = torch.cat([pick(hist_sigma)[:, -keep:], sig], dim=1)
            seq_a = None if act is None else torch.cat([pick(hist_a)[:, -keep:], act], dim=1)
            seq_t = torch.cat([hist_t[-keep:], t])
            d = denoiser(seq, seq_sigma, seq_a, seq_t, base=base)[:, -1:]
            return mix(d, lambda: guide.denoiser(seq, seq_sigma, seq_a, seq_t, base=base)[:, -1:])

        def run(x: torch.Tensor, sigma: float, act: torch.Tensor | None, base: torch.Tensor | None) -> torch.Tensor:
            fed = pending.pop() if use_cache and pending else None  # fed back in the first pass
            return denoise_rows(None, cache if use_cache else None, guide_cache, fed, x, sigma, act, base)

        def restrict(index: torch.Tensor) -> Run:  # `run` for the members `index` alone (adaptive steps)
            sub = guide_sub = None
            if use_cache:  # the frame fed back is in the cache already: the first pass wrote it
                picked = torch.zeros(mr, dtype=torch.bool, device=dev)
                picked[index] = True
                sub = cache.select(picked, mr)
                guide_sub = guide_cache.select(picked, mr) if guided else None
            return lambda x, sigma, act, base: denoise_rows(index, sub, guide_sub, None, x, sigma, act, base)

        previous = None  # each member's newest frame [m', 1, *frame], for a model that diffuses the change
        if model.config.target == "change":
            previous = rep(context[:, -1:])[running] if h == 0 else out[running, h - 1 : h]
        frame = sample_frame(model, run, a, mr, s, generator, previous, restrict)  # [m', 1, *frame]
        out[running, h] = frame[:, 0]
        if stop is not None and h + 1 < horizon:
            goes_on = ~torch.as_tensor(stop(frame[:, 0]), dtype=torch.bool, device=dev)  # [m']
            if not goes_on.all():
                running, frame, a = running[goes_on], frame[goes_on], None if a is None else a[goes_on]
                if use_cache:
                    cache = cache.select(goes_on, mr)
                    if guided:
                        guide_cache = guide_cache.select(goes_on, mr)
                else:
                    hist_x, hist_sigma = hist_x[goes_on], hist_sigma[goes_on]
                    hist_a = None if hist_a is None else hist_a[goes_on]
                mr = len(running)
                if mr == 0:
                    continue
        x_fed = model.normalize(frame) + s.sigma_ctx * randn(frame.shape)  # fed back at σ_ctx
        sig_fed = torch.full((mr, 1), s.sigma_ctx, device=dev)
        if use_cache:
            pending.append((x_fed, sig_fed, a, t))
        else:
            hist_x = torch.cat([hist_x, x_fed], dim=1)
            hist_sigma = torch.cat([hist_sigma, sig_fed], dim=1)
            hist_a = None if a is None else torch.cat([hist_a, a], dim=1)
            hist_t = torch.cat([hist_t, t])
    return out.reshape((b, n_samples, horizon) + frame_shape)
