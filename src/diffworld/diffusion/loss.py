"""Training noise levels and the EDM loss for windows of frames."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch

from diffworld.diffusion.sampling import SamplerConfig, in_target_units, karras_sigmas, sample
from diffworld.distributed import part_rows


@dataclass(frozen=True)
class LossConfig:
    """How a training window is noised."""

    #: "teacher": every frame is a target and sees clean (σ_ctx-level) copies of its past —
    #: the situation it meets in rollout — at twice the tokens. "forcing": diffusion forcing,
    #: one sequence, each frame its own σ (a share of them at context levels), causal.
    context: Literal["teacher", "forcing"] = "teacher"
    #: Target noise levels: ln σ ~ N(p_mean, p_std²) (EDM: −1.2, 1.2; DIAMOND: −0.4, 1.2).
    p_mean: float = -0.4
    p_std: float = 1.2
    #: Context frames get σ ~ U(sigma_min, ctx_sigma_max).
    ctx_sigma_max: float = 0.1
    sigma_min: float = 0.002
    #: In "forcing" mode, the probability that a frame is at a context level.
    ctx_prob: float = 0.5
    #: Probability that a target frame's action is replaced by "no action" (for guidance).
    action_dropout: float = 0.1
    #: Extra loss weight on pixels near what moved between the two previous frames (grid
    #: worlds). The weight is a function of the past only, so the optimum is still the
    #: conditional mean; it focuses learning on the few pixels that change (a pong ball is 4
    #: of 1,024). 0 turns it off.
    motion_weight: float = 20.0
    #: Dilation radius (pixels) of the motion mask.
    motion_radius: int = 2
    #: Extra loss weight on the pixels where the training data shows changes the motion mask
    #: does not foresee (objects that appear: a served ball, a paddle starting to move). The
    #: mask is a fixed map computed once from the training episodes — independent of any
    #: target frame, so it keeps the optimum unbiased. Without it the motion weight makes
    #: rare appearances relatively 20× less important, and the model learns to never draw them.
    surprise_weight: float = 20.0
    #: A pixel is "surprising" when such unforeseen changes occur in more than this share of frames.
    surprise_threshold: float = 1e-4
    #: Extra weight on whole target frames with a *rare* unforeseen change: one at a pixel where
    #: unforeseen changes happen in at most `event_max_frequency` of the transitions (a serve, the
    #: opponent starting to move — not the player's paddle, which the action explains). Rare events
    #: otherwise drown in common ones: without it a pong model never learns to serve. Unlike the
    #: two weights above this one looks at the target, so it tilts the model toward such events
    #: wherever their *occurrence* is random given the past; it is exact where occurrence is
    #: determined by the past and the action and only *where/how* is random (pong: a miss is
    #: decided by ball and paddle, only the serve's row is random). Off by default; a world
    #: recommends it (`diffworld.worlds.training_defaults`).
    event_weight: float = 0.0
    event_max_frequency: float = 5e-3
    #: Only frames with at least this many earlier frames in the window are targets. Rollouts
    #: always start from a few context frames, so the first frames of a window (no past, or no
    #: velocity) would cost tokens for a situation that never arises.
    min_context: int = 2
    #: Probability that a window's context continues from the model's *own* one-step predictions
    #: (teacher mode; the pushforward trick of Brandstetter et al. 2022). A first pass without
    #: gradients draws every frame after the first `min_context` from the true frames before it
    #: (`self_context_steps` Euler steps down from `self_context_sigma`, with `self_context_churn`;
    #: one step is the posterior mean); those draws replace the true context frames — for a model
    #: that diffuses the change, they are also the frames the targets' changes start from, as in a
    #: rollout — and the targets stay the true frames: the model is to learn to pull its own errors
    #: back toward the data instead of amplifying them. Costs `self_context_steps` extra forward
    #: passes on the chosen windows. Measured on Lorenz-96 (docs/research-log.md) one step made free runs
    #: *worse*: it forecasts far worse than the sampler the rollouts use, so the model learned to
    #: distrust recent context; on pong (one Euler step is its sampler; predictions binarised by
    #: `window_loss`'s `project`, as a rollout feeds them back) it slowed learning badly. Off by default.
    self_context: float = 0.0
    #: Where the first pass starts: σ in the target's units (for a model that diffuses the
    #: change, in units of its `change_scale`, as the sampler's levels are).
    self_context_sigma: float = 5.0
    self_context_steps: int = 1
    self_context_churn: float = 0.0
    #: Shift every window by a random offset along its periodic axes — the node axis of graph or
    #: series frames [N, F], both axes of grid frames [C, H, W] — wrapping around. An exact symmetry
    #: of worlds whose physics is the same at every place of a periodic domain (Lorenz-96's ring),
    #: which the layouts' learned position features otherwise leave the model to learn from the
    #: data alone, place by place. Wrong for any other world (a pong court, a social network).
    #: Measured on Lorenz-96 it made free runs worse (docs/research-log.md): the graph layout's sense of
    #: direction is its node positions, which shifting makes uninformative. Off by default.
    random_shift: bool = False
    #: Weight of the chance code's loss (`diffworld.diffusion.chance`), for a model with a chance
    #: code (`DiTConfig.chance`); it trains on windows of its own, drawn beside the window loss's.
    chance_weight: float = 1.0
    #: Share of the chance loss's windows that end at a frame where something appears by chance
    #: (`train.event_frames`: a serve, a spawn), where the code has an outcome to name;
    #: the others are drawn uniformly. Grid worlds; elsewhere all are uniform.
    chance_events: float = 0.5
    #: Weight of the chance loss's posterior mean (the frame a dream keeps where it draws no event)
    #: beside the decoder's error: the decoder's larger errors otherwise pull the shared trunk off
    #: exact ordinary frames (pong's recipe: 5; docs/research-log.md).
    chance_mean_weight: float = 1.0
    #: Whether the chance code's prior (which code, given an event) reads the backbone's features
    #: without moving them: its cross-entropy stays large for long and otherwise pulls the backbone
    #: off exact ordinary frames. The event logit still trains the features either way.
    chance_prior_detached: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"loss setting {f.name} must be a finite number, got {value!r}")
        if self.context not in ("teacher", "forcing"):
            raise ValueError(f"loss context must be 'teacher' or 'forcing', got {self.context!r}")
        if self.p_std <= 0 or not 0 < self.sigma_min < self.ctx_sigma_max:
            raise ValueError(
                "need p_std > 0 and 0 < sigma_min < ctx_sigma_max, "
                f"got {self.p_std}, {self.sigma_min}, {self.ctx_sigma_max}"
            )
        if not 0.0 <= self.chance_events <= 1.0:
            raise ValueError(f"chance_events is a share in [0, 1], got {self.chance_events}")
        if self.chance_weight < 0:
            raise ValueError(f"chance_weight must be >= 0, got {self.chance_weight}")
        if self.chance_mean_weight < 0:
            raise ValueError(f"chance_mean_weight must be >= 0, got {self.chance_mean_weight}")
        if not 0.0 <= self.self_context <= 1.0:
            raise ValueError(f"self_context is a probability in [0, 1], got {self.self_context}")
        if self.self_context and self.context != "teacher":
            raise ValueError(f"self_context needs context='teacher', got context={self.context!r}")
        if self.self_context_sigma <= 0:
            raise ValueError(f"self_context_sigma must be > 0, got {self.self_context_sigma}")
        if not isinstance(self.self_context_steps, int) or self.self_context_steps < 1:
            raise ValueError(f"self_context_steps must be an integer >= 1, got {self.self_context_steps!r}")
        if self.self_context_churn < 0:
            raise ValueError(f"self_context_churn must be >= 0, got {self.self_context_churn}")


def sample_target_sigmas(
    shape: tuple[int, ...], cfg: LossConfig, generator: torch.Generator, device="cpu"
) -> torch.Tensor:
    """ln σ ~ N(p_mean, p_std²)."""
    z = torch.randn(shape, generator=generator, device=device)
    return (cfg.p_mean + cfg.p_std * z).exp()


def sample_context_sigmas(
    shape: tuple[int, ...], cfg: LossConfig, generator: torch.Generator, device="cpu"
) -> torch.Tensor:
    """σ ~ U(sigma_min, ctx_sigma_max): the low levels finished frames are fed back at."""
    u = torch.rand(shape, generator=generator, device=device)
    return cfg.sigma_min + (cfg.ctx_sigma_max - cfg.sigma_min) * u


def teacher_mask(t: int, first_target: int = 0, device="cpu") -> torch.Tensor:
    """[T + T', T + T'] temporal mask for [T context frames, targets first_target..T−1].

    Context frame i sees context frames j ≤ i; target frame i sees context frames j < i and
    itself — never its own clean copy.
    """
    i = torch.arange(t, device=device)
    k = torch.arange(first_target, t, device=device)
    causal = i[None, :] <= i[:, None]  # [T, T]
    top = torch.cat([causal, torch.zeros(t, len(k), dtype=torch.bool, device=device)], dim=1)
    strictly_past = i[None, :] < k[:, None]  # [T', T]
    eye = torch.eye(len(k), dtype=torch.bool, device=device)
    return torch.cat([top, torch.cat([strictly_past, eye], dim=1)], dim=0)


def drop_actions(actions: torch.Tensor | None, p: float, generator: torch.Generator) -> torch.Tensor | None:
    """Replace each frame's action by "no action" with probability p (−1, or NaN for continuous)."""
    if actions is None or p <= 0:
        return actions
    return without_actions(actions, _rand(actions.shape[:2], generator, actions.device) < p)


def without_actions(actions: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor | None:
    """Actions [B, T(, A)] with "no action" (−1, or NaN for continuous) where `drop` [B, T] is true."""
    if actions is None or drop is None:
        return actions
    if actions.is_floating_point():
        return torch.where(drop[..., None], torch.full_like(actions, float("nan")), actions)
    return torch.where(drop, torch.full_like(actions, -1), actions)


def _randn(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device)


def _rand(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def motion_weights(frames: torch.Tensor, weight: float, radius: int) -> torch.Tensor:
    """[B, T, C, H, W] clean frames -> [B, T, 1, H, W] loss weights 1 + weight·mask.

    mask_t marks pixels within `radius` of any change between frames t−2 and t−1 (any channel);
    the first two frames of a window have no such past and get weight 1.
    """
    if frames.ndim != 5:
        raise ValueError(f"motion weights need grid frames [B, T, C, H, W], got {list(frames.shape)}")
    b, t = frames.shape[:2]
    w = torch.ones((b, t, 1) + frames.shape[-2:], device=frames.device)
    if t < 3 or weight == 0:
        return w
    change = (frames[:, 1:-1] - frames[:, :-2]).abs().amax(dim=2, keepdim=True)  # [B, T-2, 1, H, W]
    k = 2 * radius + 1
    near = torch.nn.functional.max_pool2d(change.flatten(0, 1), k, stride=1, padding=radius)
    mask = (near > 1e-3 * change.flatten(0, 1).amax().clamp_min(1e-12)).float().view_as(change)
    w[:, 2:] = 1 + weight * mask
    return w


def unforeseen_frequency(trajectories: Iterable[torch.Tensor], radius: int) -> torch.Tensor:
    """Trajectories [N, C, H, W] of consecutive frames -> [H, W] share of transitions t−1 → t in
    which a pixel changes outside the motion mask of (t−2, t−1)."""
    counts, transitions, shape = 0.0, 0, None
    for frames in trajectories:
        shape = frames.shape[-2:]
        if frames.shape[0] < 3:
            continue
        counts = counts + unforeseen_pixels(frames.float()[None], radius)[0].sum(0)
        transitions += frames.shape[0] - 2
    if shape is None:
        raise ValueError("unforeseen_frequency needs at least one trajectory")
    return torch.zeros(shape) if transitions == 0 else counts.float() / transitions


def unforeseen_pixels(frames: torch.Tensor, radius: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T−2, H, W] bool: pixels of frames 2.. that change outside the motion mask."""
    foreseen = motion_weights(frames, 1.0, radius)[:, 2:, 0] > 1
    delta = (frames[:, 2:] - frames[:, 1:-1]).abs().amax(dim=2)
    return (delta > 1e-3 * delta.amax().clamp_min(1e-12)) & ~foreseen


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²) / (σ·σ_d)² (EDM eq. 8): unit effective weight on the network output."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def loss_weights(
    frames: torch.Tensor, cfg: LossConfig, surprise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel weights [B, T, 1, H, W] (1 + the larger of the motion and surprise weights) and
    frame weights [B, T] (1 + event_weight on frames with a rare unforeseen change)."""
    moved = motion_weights(frames, 1.0, cfg.motion_radius) > 1  # [B, T, 1, H, W], one mask for both
    pixel = 1 + cfg.motion_weight * moved.float()
    if surprise is not None and cfg.surprise_weight:
        pixel = torch.maximum(pixel, 1 + cfg.surprise_weight * (surprise > cfg.surprise_threshold).float())
    frame = torch.ones(frames.shape[:2], device=frames.device)
    if surprise is not None and cfg.event_weight and frames.shape[1] > 2:
        rare = (surprise > 0) & (surprise <= cfg.event_max_frequency)
        delta = (frames[:, 2:] - frames[:, 1:-1]).abs().amax(dim=2)  # [B, T-2, H, W]
        unforeseen = (delta > 1e-3 * delta.amax().clamp_min(1e-12)) & ~moved[:, 2:, 0] & rare
        frame[:, 2:] += cfg.event_weight * unforeseen.flatten(2).any(-1).float()
    return pixel, frame


def shift_windows(frames: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Roll each window of frames [B, T, *frame] along its periodic axes by ⌊u·size⌋, u [B, 2] in [0, 1).

    Graph or series frames [B, T, N, F] roll their node axis by u[:, 0]; grid frames [B, T, C, H, W]
    roll rows by u[:, 0] and columns by u[:, 1].
    """
    axes = (3, 4) if frames.ndim == 5 else (2,)
    for j, axis in enumerate(axes):
        size = frames.shape[axis]
        offset = (u[:, j] * size).long().clamp_max(size - 1)  # [B]
        index = (torch.arange(size, device=frames.device)[None] + offset[:, None]) % size  # [B, size]
        shape = [frames.shape[0]] + [1] * (frames.ndim - 1)
        shape[axis] = size
        frames = frames.gather(axis, index.view(shape).expand(frames.shape))
    return frames


@torch.no_grad()
def own_predictions(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    context: torch.Tensor,
    start: torch.Tensor,
    sigma: float,
    ctx_sigmas: torch.Tensor,
    actions: torch.Tensor | None,
    times: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 1,
    churn: float = 0.0,
    churn_noise: Sequence[torch.Tensor] = (),
    base: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The sampler's draw for the targets of teacher windows, each from the frames before it.

    `context` [B, T, *frame] are the noised context frames (σ = `ctx_sigmas` [B, T]), `start`
    [B, T', *frame] the unit noise the targets' draws start from at σ = `sigma`; `actions`,
    `times` and `mask` are the teacher pass's (`teacher_loss`). `steps` Euler steps on the Karras
    schedule down to 0 (one step: the denoiser's estimate of E[frame | past]), by
    `diffusion.sampling.sample`; with `churn` > 0 each step after the first lifts σ_i as
    `SamplerConfig.churn` does, by `churn_noise[i − 1]` (unit noise [B, T', *frame]). For a
    model that diffuses the change, `base` [B, T', *frame] holds the clean frame before each
    target and levels count in the change's units (`scale` = change_std / σ_data). Returns
    [B, T', *frame] in model units.
    """
    module = getattr(denoiser, "module", denoiser)  # the bare network: no DDP hooks for a pass without gradients
    t, n = context.shape[1], start.shape[1]
    origin = 0.0 if base is None else base
    extra = {} if base is None else {"base": base}

    def denoise(x: torch.Tensor, s: float) -> torch.Tensor:  # the targets' frames and level in model units
        levels = torch.cat([ctx_sigmas, ctx_sigmas.new_full((start.shape[0], n), s)], dim=1)
        return module(torch.cat([context, x], dim=1), levels, actions, times, mask, **extra)[:, t:]

    sigmas = karras_sigmas(steps, SamplerConfig.sigma_min, sigma)
    target = in_target_units(denoise, origin, scale)
    y = sample(
        target,
        tuple(start.shape),
        sigmas,
        churn=churn,
        draws=iter([start, *churn_noise]),
        device=start.device,
        dtype=start.dtype,
    )
    return origin + y * scale


# ---------------------------------------------------------------------- draws


@dataclass(frozen=True)
class Subgraph:
    """Windows that hold only some nodes of a graph (`TrainConfig.subgraph_nodes`): the nodes [S'], and
    each one's weight [S'] in the loss (0: context only, a node some of whose neighbours are missing)."""

    nodes: torch.Tensor
    weight: torch.Tensor


@dataclass(frozen=True)
class LossNoise:
    """Every random draw of one step's window loss, for a batch of B windows of T frames.

    Drawn by `draw_loss_noise`. A process of a multi-process run draws for the global batch, with
    the seed every process shares, and keeps its rows with `part`: n processes then draw exactly
    what one would. A field its mode or settings leave unused is None.
    """

    #: [B, 2] offsets in [0, 1) along the periodic axes (`random_shift`).
    shift: torch.Tensor | None
    #: [B, T] levels: of the context copies (teacher), or of every frame (forcing).
    sigma: torch.Tensor
    #: [B, T'] the teacher targets' levels, in the target's units.
    target_sigma: torch.Tensor | None
    #: Unit noise: [B, T + T', *frame] for the context copies and targets (teacher), [B, T, *frame] (forcing).
    noise: torch.Tensor
    #: [B, T'] (teacher) or [B, T] (forcing) bool: the targets' actions replaced by "no action".
    drop: torch.Tensor | None
    #: [B] bool: the teacher windows whose context is the model's own predictions (`self_context`).
    own: torch.Tensor | None
    #: [B, T', *frame] unit noise the own predictions start from.
    start: torch.Tensor | None
    #: `self_context_steps` − 1 × [B, T', *frame] unit noise of the own predictions' churn.
    churn: tuple[torch.Tensor, ...] = ()

    def part(self, part: tuple[int, int]) -> LossNoise:
        """The draws of the `part = (i, n)` slice of the batch: the i-th of n equal parts of its rows."""
        rows = part_rows(self.sigma.shape[0], part)
        tensors = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "churn"}
        return LossNoise(
            **{name: None if x is None else x[rows] for name, x in tensors.items()},
            churn=tuple(z[rows] for z in self.churn),
        )


def first_target(cfg: LossConfig, frames: int) -> int:
    """Index of a window's first target frame: `min_context`, leaving at least one target."""
    return min(cfg.min_context, frames - 1)


def draw_loss_noise(
    cfg: LossConfig, shape: Sequence[int], actions: bool, generator: torch.Generator, device="cpu"
) -> LossNoise:
    """All the draws of the window loss for windows of clean frames of `shape` [B, T, *frame], with or
    without `actions`: the random shift's offsets first, then the draws of the mode."""
    shift = _rand((shape[0], 2), generator, device) if cfg.random_shift else None
    if cfg.context == "teacher":
        return draw_teacher_noise(cfg, shape, actions, generator, device, shift)
    if cfg.context == "forcing":
        return draw_forcing_noise(cfg, shape, actions, generator, device, shift)
    raise ValueError(f"loss context must be 'teacher' or 'forcing', got {cfg.context!r}")


def draw_teacher_noise(
    cfg: LossConfig,
    shape: Sequence[int],
    actions: bool,
    generator: torch.Generator,
    device="cpu",
    shift: torch.Tensor | None = None,
) -> LossNoise:
    """The teacher mode's draws: context levels, target levels, noise, dropped actions, self-context."""
    b, t, frame = shape[0], shape[1], tuple(shape[2:])
    n = t - first_target(cfg, t)  # targets
    sigma = sample_context_sigmas((b, t), cfg, generator, device)  # [B, T]
    target_sigma = sample_target_sigmas((b, n), cfg, generator, device)  # [B, T']
    noise = _randn((b, t + n) + frame, generator, device)  # [B, T + T', *frame]
    drop = _rand((b, n), generator, device) < cfg.action_dropout if actions and cfg.action_dropout > 0 else None
    own, start, churn = None, None, ()
    if cfg.self_context > 0:  # drawn whatever the outcome, so every part of a batch draws alike
        own = _rand((b,), generator, device) < cfg.self_context  # [B]
        start = _randn((b, n) + frame, generator, device)  # [B, T', *frame]
        if cfg.self_context_churn:
            churn = tuple(_randn((b, n) + frame, generator, device) for _ in range(cfg.self_context_steps - 1))
    return LossNoise(shift, sigma, target_sigma, noise, drop, own, start, churn)


def draw_forcing_noise(
    cfg: LossConfig,
    shape: Sequence[int],
    actions: bool,
    generator: torch.Generator,
    device="cpu",
    shift: torch.Tensor | None = None,
) -> LossNoise:
    """The forcing mode's draws: which frames sit at context levels, every frame's level, noise, dropped actions."""
    b, t = shape[0], shape[1]
    is_ctx = _rand((b, t), generator, device) < cfg.ctx_prob  # [B, T]
    ctx_sigma = sample_context_sigmas((b, t), cfg, generator, device)  # [B, T]
    sigma = torch.where(is_ctx, ctx_sigma, sample_target_sigmas((b, t), cfg, generator, device))  # [B, T]
    noise = _randn(tuple(shape), generator, device)  # [B, T, *frame]
    drop = _rand((b, t), generator, device) < cfg.action_dropout if actions and cfg.action_dropout > 0 else None
    return LossNoise(shift, sigma, None, noise, drop, None, None)


# ---------------------------------------------------------------------- the loss per mode


def noised_loss(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    noise: LossNoise,
    surprise: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    subgraph: Subgraph | None = None,
) -> torch.Tensor:
    """The window loss of clean frames [B, T, *frame] under the draws `noise` of `draw_loss_noise`.

    Args as in `window_loss`; `noise` holds B windows' draws (a process's `part` of the global batch's);
    `subgraph`: graph frames [B, T, S', F] of these nodes only, scored with these weights.
    """
    if cfg.random_shift:
        if surprise is not None:
            raise ValueError(
                "random_shift would move the frames under the fixed surprise map; "
                "set surprise_weight and event_weight to 0"
            )
        frames = shift_windows(frames, noise.shift)
    if cfg.context == "teacher":
        return teacher_loss(denoiser, frames, actions, cfg, noise, surprise, project, subgraph)
    if cfg.context == "forcing":
        return forcing_loss(denoiser, frames, actions, cfg, noise, surprise, subgraph)
    raise ValueError(f"loss context must be 'teacher' or 'forcing', got {cfg.context!r}")


def change_scale(module: torch.nn.Module, cfg: LossConfig, k: int) -> float:
    """Frame units per unit of a target's drawn level: change_std / σ_data for a model that diffuses the
    change (`ModelConfig.target`), whose levels and error count in the change's units; 1 otherwise."""
    change = getattr(module, "change_std", None)
    if change is None:
        return 1.0
    if cfg.context != "teacher" or k < 1:
        raise ValueError(
            f"a model that diffuses the change trains with context='teacher' and min_context >= 1; "
            f"got context={cfg.context!r}, min_context={cfg.min_context}"
        )
    return change / module.sigma_data


def teacher_loss(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    noise: LossNoise,
    surprise: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    subgraph: Subgraph | None = None,
) -> torch.Tensor:
    """Teacher forcing: each target (frames k..T−1) sees σ_ctx-level copies of the frames before it.

    One pass over [T context copies, T' targets] under `teacher_mask`. For a model that diffuses
    the change, each target is the change from the clean context frame before it.
    """
    t, dev = frames.shape[1], frames.device
    k = first_target(cfg, t)
    module = getattr(denoiser, "module", denoiser)  # through a DDP wrapper too
    scale = change_scale(module, cfg, k)
    expand = (...,) + (None,) * (frames.ndim - 2)
    acts = None if actions is None else torch.cat([actions, without_actions(actions[:, k:], noise.drop)], dim=1)
    times = torch.cat([torch.arange(t, device=dev), torch.arange(k, t, device=dev)])  # [T + T']
    mask = teacher_mask(t, k, dev)
    context = frames
    if noise.own is not None and noise.own.any():
        if subgraph is not None:
            raise ValueError("self_context draws frames of the whole graph; train on subgraphs without it")
        context = pushforward_context(denoiser, frames, actions, cfg, noise, times, mask, scale, project)
    clean = torch.cat([context, frames[:, k:]], dim=1)  # [B, T + T', *frame]
    sigma = torch.cat([noise.sigma, scale * noise.target_sigma], dim=1)  # [B, T + T']
    noisy = clean + sigma[expand] * noise.noise
    extra = {} if getattr(module, "change_std", None) is None else {"base": context[:, k - 1 : t - 1]}
    if subgraph is not None:
        extra["nodes"] = subgraph.nodes
    denoised = denoiser(noisy, sigma, acts, times, mask, **extra)  # [B, T + T', *frame]
    err = (denoised[:, t:] - frames[:, k:]).square() / scale**2  # [B, T', *frame], targets only
    if subgraph is not None:  # [B, T', S', F]: each node's error by its weight
        err = err * subgraph.weight[:, None]
    return weighted_error(err, edm_weight(noise.target_sigma, module.sigma_data), frames, k, cfg, surprise)


def pushforward_context(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    noise: LossNoise,
    times: torch.Tensor,
    mask: torch.Tensor,
    scale: float = 1.0,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Teacher context frames [B, T, *frame] where the windows `noise.own` picks hold the model's own
    draws (`own_predictions`, then `project`) from frame k on: the pushforward trick of `self_context`."""
    own, t = noise.own, frames.shape[1]
    k = first_target(cfg, t)
    expand = (...,) + (None,) * (frames.ndim - 2)
    noised = frames[own] + noise.sigma[own][expand] * noise.noise[own, :t]  # the teacher pass's context copies
    true_acts = None if actions is None else torch.cat([actions, actions[:, k:]], dim=1)[own]
    change = getattr(getattr(denoiser, "module", denoiser), "change_std", None)
    base = None if change is None else frames[own, k - 1 : t - 1]  # a change model's draws start from these
    predicted = own_predictions(
        denoiser, noised, noise.start[own], cfg.self_context_sigma, noise.sigma[own], true_acts, times, mask,
        cfg.self_context_steps, cfg.self_context_churn, [z[own] for z in noise.churn], base, scale,
    )  # fmt: skip
    context = frames.clone()
    context[own, k:] = predicted if project is None else project(predicted)
    return context


def forcing_loss(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    noise: LossNoise,
    surprise: torch.Tensor | None = None,
    subgraph: Subgraph | None = None,
) -> torch.Tensor:
    """Diffusion forcing: one causal pass, every frame at its own level; frames k..T−1 are scored."""
    t = frames.shape[1]
    k = first_target(cfg, t)
    module = getattr(denoiser, "module", denoiser)
    change_scale(module, cfg, k)  # refuses a model that diffuses the change
    expand = (...,) + (None,) * (frames.ndim - 2)
    times = torch.arange(t, device=frames.device)
    acts = without_actions(actions, noise.drop)
    extra = {} if subgraph is None else {"nodes": subgraph.nodes}
    denoised = denoiser(frames + noise.sigma[expand] * noise.noise, noise.sigma, acts, times, **extra)
    err = (denoised - frames).square()[:, k:]  # [B, T', *frame]
    if subgraph is not None:
        err = err * subgraph.weight[:, None]
    return weighted_error(err, edm_weight(noise.sigma[:, k:], module.sigma_data), frames, k, cfg, surprise)


def weighted_error(
    err: torch.Tensor,
    weight: torch.Tensor,
    frames: torch.Tensor,
    k: int,
    cfg: LossConfig,
    surprise: torch.Tensor | None,
) -> torch.Tensor:
    """Mean of the targets' squared errors [B, T', *frame], each frame's mean weighted by `weight` [B, T']
    (λ(σ)) and, for grid frames, by `loss_weights` (pixels, frames)."""
    if frames.ndim == 5:
        pixel, frame = loss_weights(frames, cfg, surprise)
        err, weight = err * pixel[:, k:], weight * frame[:, k:]
    per_frame = err.flatten(2).mean(-1)  # [B, T']
    return (weight * per_frame).mean()


# ---------------------------------------------------------------------- one call


def window_loss(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    generator: torch.Generator,
    surprise: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean weighted denoising error over every target frame of a window of clean frames [B, T, *frame].

    `surprise` is the [H, W] map of `unforeseen_frequency` over the training data, for grid
    worlds (None: no surprise or event weight). `project` (model units to model units) maps the
    model's own predictions (`self_context`) onto the world's values, as a rollout does before it
    feeds a frame back; None keeps them as they are. The draws are made for these B windows; a
    process that holds a part of a larger batch draws for the whole and keeps its part (`LossNoise.part`).
    """
    noise = draw_loss_noise(cfg, frames.shape, actions is not None, generator, frames.device)
    return noised_loss(denoiser, frames, actions, cfg, noise, surprise, project)
