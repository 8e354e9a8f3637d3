"""The rollout engine: a batch of dreams of a world model, stepped one frame at a time.

A `Dreamer` holds a batch of dreams and
- `reset(context)` starts every dream (each context `repeat` times in a row: an ensemble), or
  `reset(context, rows=...)` restarts some of them while the others go on. A restarted row's
  context is encoded at the time positions the other rows' newest frames hold: rotary keys depend
  only on time differences, so each row sees exactly its own past.
- `step(actions)` samples the next frame of every dream (one batch) and feeds it back at the
  context noise level σ_ctx; with `stop`, dreams whose new frame ends their episode leave the batch.

`rollout` is a reset and H steps; a play session or an agent's dream environment steps as the
actions come.

The past a new frame attends to is kept in a KV cache (`diffworld.past.CachedPast`: a new frame
costs the same however long the history is) or recomputed at every denoising pass
(`RecomputedPast`, `use_cache=False`: the reference the cache is tested against).

Guidance wraps the denoiser (`diffworld.diffusion.guidance`): autoguidance by a weaker model of the
same world, which keeps a past of its own, and classifier-free guidance on the action.

Time positions grow by one per step; every `REBASE_EVERY` frames the dreams' own newest frames
are re-encoded at small positions, so float32 rotary angles never lose precision in a session
that runs for hours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffworld.diffusion.guidance import Conditioned, autoguidance, classifier_free
from diffworld.diffusion.sampling import Denoise, SamplerConfig, in_target_units, karras_sigmas, sample
from diffworld.inputs import check_actions, check_context, check_guide, check_sampler, null_actions
from diffworld.model.world_model import WorldModel
from diffworld.past import CachedPast, DecodedPast, Past, RecomputedPast

#: Frames after which the past is rebuilt at positions 0..frames − 2 (see the module notes).
REBASE_EVERY = 4096

#################################################################################
#                              Sampling a frame                                 #
#################################################################################


def sample_frame(
    model: WorldModel,
    denoise: Denoise,
    rows: int,
    sampler: SamplerConfig,
    generator: torch.Generator | None = None,
    base: torch.Tensor | None = None,
    redraw: Callable[[torch.Tensor], Denoise] | None = None,
) -> torch.Tensor:
    """One new frame for each of `rows` dreams, [rows, 1, *frame] in world units (on the world's values).

    `denoise(x, sigma)` is D(x; σ) of the new frames x [rows, 1, *frame] (model units), guidance
    included. `base` [rows, 1, *frame] (model units): each dream's newest frame, for a model that
    diffuses the change (None otherwise). `redraw(index)`: `denoise` for the dreams `index` alone,
    after the first draw; needed by `SamplerConfig.adaptive_steps`, which draws the frames whose
    first draw is uncertain again, with more steps.
    """
    s = sampler

    def draw(denoise: Denoise, base: torch.Tensor | None, n: int, steps: int) -> torch.Tensor:
        """n frames [n, 1, *frame] in world units, off the world's values (the sampler's raw output)."""
        shape = (n, 1) + tuple(model.spec.frame_shape)
        if s.method == "marginal":  # E[x | past] at σ_max, then every cell drawn on its own
            if base is not None:
                raise ValueError(
                    "the marginal sampler draws frames, not changes; "
                    "a model that diffuses the change needs an ODE sampler"
                )
            x = s.sigma_max * torch.randn(shape, generator=generator, device=model.device)
            return model.draw_marginal(model.denormalize(denoise(x, s.sigma_max)), generator)
        # The sampler works on the target y in its own units: frame = origin + scale·y (model units).
        origin, scale = (0.0 if base is None else base), model.config.change_scale
        sigmas = karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho)
        y0 = sample(
            in_target_units(denoise, origin, scale), shape, sigmas, generator, s.method, model.device, churn=s.churn
        )
        return model.denormalize(origin + y0 * scale)

    frames = draw(denoise, base, rows, s.steps)  # [rows, 1, *frame]
    if s.adaptive_steps:
        if redraw is None:
            raise ValueError("adaptive_steps needs a way to run the denoiser for some dreams alone (redraw)")
        unsure = model.uncertainty(frames[:, 0]) > s.uncertain  # [rows]
        if unsure.any():  # drawn again, from fresh noise, through the levels where outcomes are chosen
            index = unsure.nonzero()[:, 0]
            frames = frames.clone()
            frames[index] = draw(redraw(index), None if base is None else base[index], len(index), s.adaptive_steps)
    return model.project(frames)


def chance_frame(
    model: WorldModel,
    past: Past,
    actions: torch.Tensor | None,
    t: torch.Tensor,
    rows: int,
    sampler: SamplerConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One new frame for each of `rows` dreams [rows, 1, *frame] (world units, on the world's values)
    from a model with a chance code: a pass at σ_max without a code gives the frame where the prior
    draws no event, and the prior's features; the dreams where it draws one decode their drawn code
    in a second pass at σ_max (those dreams alone), after a pass of the decoder without a code where
    the prior picks codes from its features (`DiTConfig.chance_prior`)."""
    shape = (rows, 1) + tuple(model.spec.frame_shape)
    s, dev, net = sampler.sigma_max, model.device, model.denoiser.net
    start = s * torch.randn(shape, generator=generator, device=dev)
    frame, features = past.denoise(start, s, actions, t, None, features=True)
    acts = net.chance.events(features, generator, sampler.event_shift)  # type: ignore[union-attr]
    if acts.any():
        index = acts.nonzero()[:, 0]
        part = past if len(index) == rows else past.rows(index, rows)
        picked = None if actions is None else actions[index]
        if net.cfg.chance_prior == "decoder":
            none = net.no_code(len(index), dev)
            features = part.denoise(start[index], s, picked, t, None, code=none, features=True)[1]
        else:
            features = features[index]
        code = net.chance.pick(features, generator)  # type: ignore[union-attr]
        noise = s * torch.randn((len(index),) + shape[1:], generator=generator, device=dev)
        frame = frame.clone()
        frame[index] = part.denoise(noise, s, picked, t, None, code=code)
    return model.project(model.denormalize(frame))


#################################################################################
#                                 The engine                                    #
#################################################################################


class Dreamer:
    """A batch of `batch` dreams of `model`, stepped together one frame at a time.

    Args:
        model: a trained WorldModel (put in eval mode here).
        batch: number of dreams.
        sampler: sampler settings (default: the model's own); `dreamer.sampler` may be replaced
            between steps (play's live settings); σ_ctx applies to frames fed back from then on.
        generator: torch.Generator for every random draw, for reproducible dreams.
        compile: step through the model's compiled denoiser (`WorldModel.compiled_denoiser`;
            encoding contexts stays eager): the first steps compile, later ones run fused kernels.
        use_cache: keep finished frames' keys and values (fast) or recompute the frames in view at
            every pass (the reference).
        guide: a weaker model of the same world that autoguides every step (see `rollout`), run
            eager beside the model with a past of its own; None: no autoguidance.
        guide_weight: the autoguidance weight w; 1 is the model alone (the guide is not run).
    """

    def __init__(
        self,
        model: WorldModel,
        batch: int,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
        compile: bool = False,
        use_cache: bool = True,
        guide: WorldModel | None = None,
        guide_weight: float = 1.0,
    ) -> None:
        if batch < 1:
            raise ValueError(f"a Dreamer needs batch >= 1, got {batch}")
        check_guide(model, guide, guide_weight)
        self.model = model.eval()
        self.size = self.batch = batch  # dreams reset, and dreams still going (`step`'s `stop`)
        self.sampler = sampler or model.sampler
        self.generator = generator
        self.guide_weight = guide_weight
        make = CachedPast if use_cache else RecomputedPast
        first = DecodedPast if use_cache and model.denoiser.net.decoder is not None else make
        self.pasts: list[Past] = [first(model, model.compiled_denoiser() if compile else model.denoiser)]
        if guide is not None and guide_weight != 1.0:
            self.pasts.append(make(guide.eval(), guide.denoiser))
        self.keep = model.frames - 1  # finished frames in view
        self.frame_shape = tuple(model.spec.frame_shape)
        self.started = False
        self.t = 0  # time position of the next frame, shared by all rows
        dev = model.device
        #: [batch] the dreams still going, as indices into the batch the Dreamer was reset with.
        self.running = torch.arange(batch, device=dev)
        # The newest `keep` clean frames and the actions into them: the newest frame is a changing
        # model's base, and the frames are re-encoded when the positions are rebased.
        self.history = torch.zeros((batch, 0) + self.frame_shape, device=dev)
        self.history_actions = null_actions(model, batch, 0, dev)

    @property
    def last(self) -> torch.Tensor:
        """[batch, *frame] each dream's newest frame (world units)."""
        if not self.started:
            raise RuntimeError("the Dreamer has not been reset yet")
        return self.history[:, -1]

    def __len__(self) -> int:
        """Frames every dream currently holds in view (at most frames − 1)."""
        return self.history.shape[1]

    def _randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.model.device)

    def _noised(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean frames [R, L, *frame] (world units) as the denoiser takes finished ones: x at σ_ctx,
        and the levels [R, L]."""
        x = self.model.normalize(frames) + self.sampler.sigma_ctx * self._randn(tuple(frames.shape))
        return x, torch.full(frames.shape[:2], self.sampler.sigma_ctx, device=self.model.device)

    @torch.no_grad()
    def reset(
        self,
        context: torch.Tensor,
        context_actions: torch.Tensor | None = None,
        rows: torch.Tensor | list[int] | None = None,
        repeat: int = 1,
    ) -> None:
        """Start dreams from real frames.

        Args:
            context: [R, L, *frame] past frames (world units); only the newest frames − 1 are used.
            context_actions: [R, L] actions that led into them (default: unknown).
            rows: which dreams to restart (R of them); None restarts all (R·repeat = batch).
                Restarting some rows needs contexts as long as the frames the others hold (`len(self)`).
            repeat: dreams per context, in a row (an ensemble; with rows=None only): each context
                is encoded once.
        """
        dev = self.model.device
        if rows is None:
            if repeat < 1 or self.size % repeat:
                raise ValueError(f"repeat: expected a divisor of the batch {self.size}, got {repeat}")
            rows_t = torch.arange(self.size // repeat)
        else:
            if repeat != 1:
                raise ValueError("repeat: restarting some dreams takes one context each (repeat=1)")
            rows_t = torch.as_tensor(rows, dtype=torch.long).flatten()
            if ((rows_t < 0) | (rows_t >= self.batch)).any() or len(set(rows_t.tolist())) != len(rows_t):
                raise ValueError(f"rows: expected distinct indices in [0, {self.batch}), got {rows_t.tolist()}")
        r = len(rows_t)
        if r == 0:
            return
        context = check_context(self.model, context, r)
        actions = check_actions(self.model, context_actions, r, context.shape[1], "context_actions")
        context, actions = context[:, -self.keep :], None if actions is None else actions[:, -self.keep :]
        length = context.shape[1]
        if rows is None:
            x, sigma = self._noised(context)
            for past in self.pasts:
                past.start(x, sigma, actions, torch.arange(length, device=dev), repeat)
            rep = lambda t: None if t is None else t.repeat_interleave(repeat, dim=0)  # noqa: E731
            self.history, self.history_actions = rep(context), rep(actions)
            self.batch, self.t, self.started = self.size, length, True
            self.running = torch.arange(self.size, device=dev)
            return
        if not self.started:
            raise RuntimeError("reset all dreams (rows=None) before restarting some of them")
        if length != len(self):
            raise ValueError(
                f"context: restarting some dreams needs {len(self)} frames (what the others hold), got {length}"
            )
        x, sigma = self._noised(context)
        for past in self.pasts:
            past.restart(
                rows_t.to(dev), x, sigma, actions, torch.arange(self.t - length, self.t, device=dev), self.batch
            )
        self.history = self.history.clone()
        self.history[rows_t] = context
        if self.history_actions is not None:
            self.history_actions = self.history_actions.clone()
            self.history_actions[rows_t] = actions

    def _denoiser(
        self, pasts: list[Past], actions: torch.Tensor | None, t: torch.Tensor, base: torch.Tensor | None
    ) -> Denoise:
        """D(x; σ) of the new frames of the dreams `pasts` hold: the model's, autoguided by the
        guide's with its past, then classifier-free guided on the actions."""

        def conditioned(past: Past) -> Conditioned:
            return lambda x, sigma, a: past.denoise(x, sigma, a, t, base)

        denoise = conditioned(pasts[0])
        if len(pasts) > 1:
            denoise = autoguidance(denoise, conditioned(pasts[1]), self.guide_weight)
        if self.sampler.guidance != 1.0 and actions is not None:
            null = null_actions(self.model, len(actions), 1, actions.device)
            return classifier_free(denoise, actions, null, self.sampler.guidance)  # type: ignore[arg-type]
        return lambda x, sigma: denoise(x, sigma, actions)

    @torch.no_grad()
    def step(
        self, actions: torch.Tensor | None = None, stop: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Dream the next frame of every dream under `actions` [batch] (or [batch, d]); returns [batch, *frame].

        `stop`: the world's end of an episode, frames [batch, *frame] -> bool [batch]; the dreams
        whose new frame ends theirs leave the batch afterwards (`running` says which go on).
        """
        if not self.started:
            raise RuntimeError("reset the Dreamer with real frames before stepping it")
        if self.batch == 0:
            raise RuntimeError("every dream has stopped; reset the Dreamer to dream again")
        model, s, dev = self.model, self.sampler, self.model.device
        check_sampler(model.spec, s, model.config.dit.chance)
        if actions is not None:
            actions = torch.as_tensor(actions, device=dev)[:, None]  # [batch, 1(, d)]
        a = check_actions(model, actions, self.batch, 1, "actions")
        if self.t >= REBASE_EVERY:
            self._rebase()
        t = torch.tensor([self.t], device=dev)
        base = model.normalize(self.history[:, -1:]) if model.config.target == "change" else None  # [batch, 1, *frame]

        def redraw(index: torch.Tensor) -> Denoise:  # the dreams `index` alone (adaptive steps)
            pick = lambda v: None if v is None else v[index]  # noqa: E731
            return self._denoiser([p.rows(index, self.batch) for p in self.pasts], pick(a), t, pick(base))

        if s.method == "chance":
            if len(self.pasts) > 1:
                raise ValueError("the chance sampler runs the model alone; drop the guide (guide_weight 1)")
            drawn = chance_frame(model, self.pasts[0], a, t, self.batch, s, self.generator)
        else:
            drawn = sample_frame(
                model, self._denoiser(self.pasts, a, t, base), self.batch, s, self.generator, base, redraw
            )
        frame = drawn  # [batch, 1, *frame]: the frames fed back, those of the dreams that go on
        if stop is not None:
            goes_on = ~torch.as_tensor(stop(frame[:, 0]), dtype=torch.bool, device=dev)  # [batch]
            if not goes_on.all():
                self._select(goes_on)
                frame, a = frame[goes_on], None if a is None else a[goes_on]
                if self.batch == 0:
                    return drawn[:, 0]
        x_fed = model.normalize(frame) + s.sigma_ctx * self._randn(tuple(frame.shape))  # fed back at σ_ctx
        for past in self.pasts:
            past.feed(x_fed, torch.full((self.batch, 1), s.sigma_ctx, device=dev), a, t)
        self.t += 1
        self.history = torch.cat([self.history, frame], dim=1)[:, -self.keep :]
        if self.history_actions is not None and a is not None:
            self.history_actions = torch.cat([self.history_actions, a], dim=1)[:, -self.keep :]
        return drawn[:, 0]

    def _select(self, keep: torch.Tensor) -> None:
        """Keep the dreams `keep` (bool [batch]) alone, in their order."""
        for past in self.pasts:
            past.select(keep)
        self.running, self.history = self.running[keep], self.history[keep]
        self.history_actions = None if self.history_actions is None else self.history_actions[keep]
        self.batch = len(self.running)

    def _rebase(self) -> None:
        """Re-encode every dream's held frames at positions 0..L−1 (fresh σ_ctx noise)."""
        x, sigma = self._noised(self.history)
        for past in self.pasts:  # a frame fed back is in the history, re-encoded here
            past.start(x, sigma, self.history_actions, torch.arange(len(self), device=self.model.device))
        self.t = len(self)
