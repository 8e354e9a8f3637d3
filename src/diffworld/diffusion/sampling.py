"""Noise schedules, ODE samplers (Karras et al. 2022, Algorithm 1 without churn) and the marginal sampler.

The marginal sampler serves worlds of discrete values whose cells change independently of each
other given the past (an epidemic's nodes, a cellular automaton's cells): one network evaluation
at σ_max estimates E[x | past], which for 0/1 values *is* each cell's probability of being 1 (for
one-hot states, of being in each state), and every cell is then drawn from its own distribution.
For such worlds this is exact, with one network evaluation; where cells move together (a ball
spanning pixels) it scatters them, and the ODE samplers are the ones to use.

The estimate is D(x; σ_max) at a noise draw x: the posterior mean given that observation, which
averages to E[x | past] over draws (for a perfect network; at σ_max = 5 one draw tilts a cell's
odds by up to ~±20%, and the cells' tilts are independent, as exact sampling requires).
Taking it at x = 0 instead (every cell at its training mean) removes the draw's tilt; on the
cascade demo's model it cut spurious probability on impossible cells by a quarter but ranked
hubs worse (Kendall τ 0.78 → 0.72), so the draw stays (docs/research-log.md, "Spurious infections").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

METHODS = ("euler", "heun", "marginal", "chance")


@dataclass(frozen=True)
class SamplerConfig:
    """How a frame is sampled and how finished frames are fed back."""

    #: Denoising steps per frame (network evaluations: steps for Euler, 2·steps − 1 for Heun).
    steps: int = 3
    #: "euler" (1st order ODE), "heun" (2nd order ODE) or "marginal" (one evaluation at σ_max,
    #: then every cell drawn independently; binary and categorical worlds; `steps` is unused) or
    #: "chance" (a model with a chance code: one evaluation at σ_max, and where its prior draws a
    #: chance event, a second one that decodes the drawn code; `steps` is unused).
    method: Literal["euler", "heun", "marginal", "chance"] = "euler"
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    #: Karras schedule curvature.
    rho: float = 7.0
    #: Noise level at which finished frames are fed back as context (fights drift).
    sigma_ctx: float = 0.05
    #: Classifier-free guidance weight on the action; 1 is no guidance.
    guidance: float = 1.0
    #: Stochastic churn (EDM's S_churn, Karras et al. 2022, Algorithm 2): before each ODE step
    #: fresh noise lifts σ_i to σ_i·(1 + γ), γ = min(churn / steps, √2 − 1). 0 is the plain ODE.
    #: A few-step ODE sampler pulls members toward the conditional mean (an under-dispersed
    #: ensemble); churn re-injects the randomness that a trained-but-imperfect denoiser loses.
    churn: float = 0.0
    #: Binary and categorical worlds: a frame whose draw is uncertain — as the average of outcomes
    #: a one-step draw returns is (a serve smeared over its rows) — is drawn again from fresh noise
    #: with this many steps, through the middle noise levels where an outcome is chosen; the frames
    #: the first draw gets cleanly cost nothing more. 0: never.
    adaptive_steps: int = 0
    #: A draw is uncertain when its rounding onto the world's values likely gets at least this many
    #: values wrong (`WorldModel.uncertainty`).
    uncertain: float = 1.0
    #: "chance": the log odds added to the prior's event logit. None: the model's own correction
    #: from its training mix (which over-draws events) to the data's event rate, exact for a
    #: calibrated prior; 0: the training mix's odds, which keep an event the past makes certain
    #: near certain at the cost of over-drawing uncertain ones. Chosen on validation data.
    event_shift: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")
        if self.method not in METHODS:
            raise ValueError(f"sampler method must be one of {', '.join(METHODS)}, got {self.method!r}")
        # Every number finite and in range: a NaN passes every comparison test below unnoticed.
        for name, lowest, above in (
            ("sigma_min", 0.0, True),
            ("sigma_max", self.sigma_min, True),
            ("rho", 0.0, True),
            ("sigma_ctx", 0.0, True),  # a small value such as 0.002 for almost none
            ("guidance", 0.0, False),
            ("churn", 0.0, False),
        ):
            value = getattr(self, name)
            finite = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or value < lowest or (above and value == lowest):
                bound = f"{'>' if above else '>='} {'sigma_min' if name == 'sigma_max' else f'{lowest:g}'}"
                raise ValueError(f"sampler {name}: expected a finite number {bound}, found {value}")
        if isinstance(self.adaptive_steps, bool) or not isinstance(self.adaptive_steps, int) or self.adaptive_steps < 0:
            raise ValueError(f"sampler adaptive_steps: expected an integer >= 0, found {self.adaptive_steps!r}")
        shift = self.event_shift
        if shift is not None and (
            isinstance(shift, bool) or not isinstance(shift, int | float) or not math.isfinite(shift)
        ):
            raise ValueError(f"sampler event_shift: expected a finite number or None, found {shift!r}")
        finite = (
            isinstance(self.uncertain, int | float)
            and not isinstance(self.uncertain, bool)
            and math.isfinite(self.uncertain)
        )
        if not finite or self.uncertain <= 0:
            raise ValueError(f"sampler uncertain: expected a finite number of values > 0, found {self.uncertain!r}")


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """[steps + 1] noise levels σ_0 = σ_max > ... > σ_{n−1} = σ_min, then 0 (EDM eq. 5)."""
    if steps == 1:
        return torch.tensor([sigma_max, 0.0])
    i = torch.arange(steps, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)]).float()


Denoise = Callable[[torch.Tensor, float], torch.Tensor]


def in_target_units(denoise: Denoise, origin: torch.Tensor | float, scale: float) -> Denoise:
    """`denoise` (frames and levels in model units) as the denoiser of the target y the sampler
    integrates, frame = origin + scale·y: for a model that diffuses the change, origin is the frame
    before and scale its `ModelConfig.change_scale`; for one that diffuses the frame, (0, 1)."""

    def target(y: torch.Tensor, sigma: float) -> torch.Tensor:
        return (denoise(origin + y * scale, sigma * scale) - origin) / scale

    return target


def sample(
    denoise: Denoise,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    method: str = "euler",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    churn: float = 0.0,
    draws: Iterator[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from pure noise at sigmas[0] down to sigmas[-1] = 0.

    `denoise(x, sigma)` returns D(x; σ). With `churn` > 0, each step first adds noise that lifts
    σ_i to σ_i·(1 + γ) (see `SamplerConfig.churn`). `draws`, if given, yields the unit normal
    noise of `shape` to use in turn (the start, then each churn) instead of the generator's.
    Returns x_0 of `shape`.
    """

    def randn() -> torch.Tensor:
        if draws is None:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)
        z = next(draws, None)
        if z is None or tuple(z.shape) != tuple(shape):
            raise ValueError(
                f"sample needs one draw of shape {tuple(shape)} for the start and each churn; "
                f"got {None if z is None else tuple(z.shape)}"
            )
        return z

    x = randn() * sigmas[0]
    gamma = min(churn / (len(sigmas) - 1), math.sqrt(2.0) - 1.0)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if gamma > 0 and i > 0:  # the first step already starts from pure noise
            s_hat = s * (1 + gamma)
            x = x + math.sqrt(s_hat**2 - s**2) * randn()
            s = s_hat
        d = (x - denoise(x, s)) / s  # dx/dσ at σ_i
        x_next = x + (s_next - s) * d  # Euler step
        if method == "heun" and s_next > 0:  # 2nd order correction
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
    return x


def one_hot_argmax(frames: torch.Tensor, axis: int, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Each cell's largest channel set to `high`, the others to `low` (along `axis`, the channels)."""
    lo, hi = value_range
    hot = torch.nn.functional.one_hot(frames.argmax(axis), frames.shape[axis]).movedim(-1, axis)
    return (lo + (hi - lo) * hot).to(frames.dtype)


def draw_marginal(
    mean: torch.Tensor,
    kind: str,
    axis: int,
    value_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw every cell independently from its estimated mean E[x | past], in world units.

    binary: the cell is `high` with probability (mean − low) / (high − low), clipped to [0, 1].
    categorical (one-hot along `axis`): the cell takes state c with probability proportional to
    its clipped channel mean (Gumbel-max; a cell whose channels are all ≤ 0 is uniform).
    """
    lo, hi = value_range
    p = ((mean.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
    u = torch.rand(p.shape, generator=generator, device=p.device)
    if kind == "binary":
        return torch.where(u < p, hi, lo).to(mean.dtype)
    if kind == "categorical":
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1.0 - 1e-7)))
        return one_hot_argmax(torch.log(p.clamp_min(1e-12)) + gumbel, axis, value_range).to(mean.dtype)
    raise ValueError(f"the marginal sampler needs a binary or categorical world, got value kind {kind!r}")
