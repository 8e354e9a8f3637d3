"""What a dream takes, checked against the model: contexts, actions, the sampler and a guide.

Each check raises a ValueError (or a TypeError) naming what was expected and what was found, at
the boundary where the input enters a rollout or a `Dreamer`.
"""

from __future__ import annotations

import math

import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import WorldModel
from diffworld.spec import WorldSpec


def null_actions(model: WorldModel, batch: int, n: int, device: torch.device) -> torch.Tensor | None:
    """ "No action" for `n` frames: −1 for discrete worlds, NaN for continuous, None without actions."""
    space = model.spec.action
    if space.kind == "discrete":
        return torch.full((batch, n), -1, dtype=torch.long, device=device)
    if space.kind == "continuous":
        return torch.full((batch, n, space.n), float("nan"), device=device)
    return None


def check_actions(
    model: WorldModel, actions: torch.Tensor | None, batch: int, n: int, what: str
) -> torch.Tensor | None:
    """Validate actions [B, n] (discrete) or [B, n, d] (continuous) for `model`; None means "no action"."""
    space = model.spec.action
    if actions is None or space.kind == "none":
        if actions is not None:
            raise ValueError(
                f"{what}: world {model.spec.name!r} takes no actions, got a tensor of shape {list(actions.shape)}"
            )
        return null_actions(model, batch, n, model.device)
    actions = as_tensor(actions, what).to(model.device)
    expected = (batch, n) if space.kind == "discrete" else (batch, n, space.n)
    if tuple(actions.shape) != expected:
        raise ValueError(f"{what}: expected shape {list(expected)}, got {list(actions.shape)}")
    if space.kind == "discrete":
        if actions.is_floating_point() and not (actions == actions.round()).all():
            raise ValueError(
                f"{what}: expected whole action numbers, found {actions[actions != actions.round()][0].item()}"
            )
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
    if (
        context.ndim != len(frame_shape) + 2
        or tuple(context.shape[2:]) != frame_shape
        or (batch is not None and context.shape[0] != batch)
    ):
        rows, frame = "B" if batch is None else batch, ", ".join(map(str, frame_shape))
        raise ValueError(
            f"context: expected shape [{rows}, L, {frame}] for world {model.spec.name!r}, got {list(context.shape)}"
        )
    if context.shape[0] < 1 or context.shape[1] < 1:
        raise ValueError(
            f"context: expected at least one sequence of at least one frame, found shape {list(context.shape)}"
        )
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
        raise TypeError(
            f"{what}: expected a tensor, an array or nested lists of numbers, found {type(values).__name__}"
        ) from None


def check_sampler(spec: WorldSpec, sampler: SamplerConfig, chance: int = 0) -> None:
    """Raise ValueError where `sampler` cannot serve the world of `spec` with a model of `chance`
    chance codes (the marginal sampler and adaptive steps need discrete cells; the chance sampler a
    chance code, without guidance or adaptive steps)."""
    if sampler.method == "chance":
        if not chance:
            raise ValueError(
                "the chance sampler needs a model trained with a chance code (dit chance > 0); this one has none"
            )
        if sampler.guidance != 1.0 or sampler.adaptive_steps:
            raise ValueError(
                "the chance sampler draws without guidance or adaptive steps; "
                f"got guidance {sampler.guidance}, adaptive_steps {sampler.adaptive_steps}"
            )
    discrete = spec.value_kind in ("binary", "categorical")
    if sampler.method == "marginal" and not discrete:
        raise ValueError(
            f"the marginal sampler needs a binary or categorical world; {spec.name!r} is {spec.value_kind}"
        )
    if sampler.adaptive_steps and (sampler.method == "marginal" or not discrete):
        raise ValueError(
            f"adaptive steps need an ODE sampler on a binary or categorical world; got method {sampler.method!r} "
            f"on {spec.name!r} ({spec.value_kind})"
        )


def check_guide(model: WorldModel, guide: WorldModel | None, weight: float) -> None:
    """Raise ValueError where `guide` cannot autoguide `model` with weight `weight` (1: no guide needed)."""
    if not math.isfinite(weight):
        raise ValueError(f"guide_weight must be a finite number, got {weight!r}")
    if guide is None:
        if weight != 1.0:
            raise ValueError(f"guide_weight {weight} needs a guide model (1 is the model alone)")
        return
    found = lambda m: (
        m.spec.name,
        tuple(m.spec.frame_shape),
        m.spec.action.kind,
        m.frames,
        m.config.target,
        m.config.sigma_data,
    )  # noqa: E731
    if found(guide) != found(model):
        raise ValueError(
            "a guide must share the model's world, frame shape, actions, window, target and σ_data: "
            f"expected {found(model)}, got {found(guide)}"
        )
    if guide.device != model.device:
        raise ValueError(f"a guide must sit on the model's device: expected {model.device}, got {guide.device}")
    same_stats = (
        guide.mean.shape == model.mean.shape
        and torch.allclose(guide.mean.cpu(), model.mean.cpu())
        and torch.allclose(guide.std.cpu(), model.std.cpu())
    )
    if not same_stats:
        raise ValueError(
            "a guide must normalise frames as the model does (trained on the same data): their mean and std differ"
        )
    if model.config.target == "change" and not math.isclose(
        guide.config.change_std, model.config.change_std, rel_tol=1e-6
    ):
        raise ValueError(
            "a guide must diffuse the change at the model's scale: "
            f"change_std {model.config.change_std} against {guide.config.change_std}"
        )
