"""One player's session: a dream of batch 1 and, beside it, the true game under the same actions.

A `Session` is plain Python and torch: the server owns one per WebSocket and calls `step` and
`reset` on its worker thread, never two at once for one session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.evaluate.pictures import to_image
from diffworld.model.world_model import WorldModel
from diffworld.play.protocol import Frame, PlaySettings, action_names
from diffworld.spec import NO_ACTION
from diffworld.worlds.base import World

#: Builds a session's dreamer: (model, batch, sampler, generator) -> a Dreamer (tests inject fakes).
DreamerFactory = Callable[[WorldModel, int, SamplerConfig, torch.Generator], Dreamer]

#: Fresh episodes tried for a starting context before giving up (an episode may end in its first frames).
START_TRIES = 16


def check_playable(model: WorldModel) -> None:
    """Raise ValueError unless play can show and drive `model`'s world (grid frames; discrete or no actions)."""
    spec = model.spec
    if spec.layout != "grid":
        raise ValueError(f"play shows grid worlds (frames C×H×W); {spec.name!r} is a {spec.layout} world")
    if spec.action.kind == "continuous":
        raise ValueError(
            f"play drives worlds with discrete actions or none; {spec.name!r} has {spec.action.n} continuous actions"
        )


def settings_of(sampler: SamplerConfig, fps: float) -> PlaySettings:
    """The live settings that `sampler` and a target rate `fps` amount to."""
    live = PlaySettings(steps=sampler.steps, sigma_ctx=sampler.sigma_ctx, guidance=sampler.guidance, fps=fps)
    return allowed(live, sampler)


def allowed(settings: PlaySettings, sampler: SamplerConfig) -> PlaySettings:
    """`settings` as `sampler`'s method can use them: the chance sampler draws each frame in one
    pass without guidance, so there steps and guidance stay 1."""
    return replace(settings, steps=1, guidance=1.0) if sampler.method == "chance" else settings


class Session:
    """A dream of `model` driven by one player, with the true `world` stepped beside it.

    Args:
        model: the world model.
        settings: initial live settings (sampler steps, σ_ctx and guidance replace the model's).
        world: the true simulator of the model's world, or None where it cannot run; then
            resets start from a context of blank frames (the model's mean).
        seed: seeds the dream's draws and the starting episodes.
        dreamer_factory: builds the Dreamer (default: `Dreamer`).
    """

    def __init__(
        self,
        model: WorldModel,
        settings: PlaySettings,
        world: World | None = None,
        seed: int | None = None,
        dreamer_factory: DreamerFactory = Dreamer,
    ) -> None:
        check_playable(model)
        self.model = model
        self.world = world
        self.names = (
            action_names(model.spec.action.n, model.spec.action.names) if model.spec.action.kind == "discrete" else ()
        )
        self.rng = np.random.default_rng(seed)
        generator = torch.Generator(device=model.device).manual_seed(int(self.rng.integers(2**62)))
        self.dreamer = dreamer_factory(model, 1, model.sampler, generator)
        self.settings = settings
        self.apply_settings(settings)
        #: The action the next step applies: the latest the player chose (0 until then).
        self.action = 0
        #: Set by the server when the player asks for a reset; the next step's turn performs it.
        self.reset_requested = False
        self.index = 0
        self.value_range = model.spec.value_range or (0.0, 1.0)
        self.reset()

    def apply_settings(self, settings: PlaySettings) -> PlaySettings:
        """Use `settings` from the next frame on (the dreamer's sampler is replaced); returns those in
        force (`allowed`)."""
        settings = self.settings = allowed(settings, self.dreamer.sampler)
        self.dreamer.sampler = replace(
            self.dreamer.sampler, steps=settings.steps, sigma_ctx=settings.sigma_ctx, guidance=settings.guidance
        )
        return settings

    def reset(self) -> int:
        """Restart the dream from a real start: the true game from a fresh seed, stepped frames − 1 times
        with random actions; those frames and actions are the context, and the truth goes on from
        there. Returns the seed of the episode."""
        keep = self.model.frames - 1
        for _ in range(START_TRIES):
            seed = int(self.rng.integers(2**31))
            start = self._start(seed, keep)
            if start is not None:
                break
        else:
            raise RuntimeError(f"{self.model.spec.name}: {START_TRIES} episodes in a row ended within {keep} steps")
        frames, actions = start
        context = torch.as_tensor(np.asarray(frames, dtype=np.float32), device=self.model.device)[
            None
        ]  # (1, L, *frame)
        context_actions = (
            None if actions is None else torch.as_tensor(actions, device=self.model.device)[None]
        )  # (1, L)
        self.dreamer.reset(context, context_actions)
        self.index = 0
        return seed

    def _start(self, seed: int, keep: int) -> tuple[list[np.ndarray], np.ndarray | None] | None:
        """(frames − 1 true frames, the actions into them) from episode `seed`, or None if it ended early."""
        discrete = bool(self.names)
        if self.world is None:  # no simulator: blank frames at the model's per-channel mean
            blank = self.model.mean.expand(self.model.spec.frame_shape).cpu().numpy()
            return [blank] * keep, np.full(keep, NO_ACTION) if discrete else None
        self.world.reset(seed)
        frames, actions = [], []
        for _ in range(keep):
            a = int(self.rng.integers(len(self.names))) if discrete else None
            frame, _, done = self.world.step(a)
            if done:
                return None
            frames.append(np.asarray(frame))
            actions.append(a)
        return frames, np.asarray(actions, dtype=np.int64) if discrete else None

    def step(self) -> Frame:
        """Advance the dream and the truth one frame under the current action."""
        a = self.action if self.names else None
        dream = self.dreamer.step(None if a is None else torch.tensor([a], device=self.model.device))[0]  # (*frame)
        panels = [self._picture(dream.cpu().numpy())]
        reward, restarted = 0.0, False
        if self.world is not None:
            frame, reward, done = self.world.step(a)
            panels.append(self._picture(frame))
            if done:  # the dream goes on; the truth starts a fresh episode
                self.world.reset(int(self.rng.integers(2**31)))
                restarted = True
        self.index += 1
        return Frame(self.index, NO_ACTION if a is None else a, tuple(panels), float(reward), restarted)

    def _picture(self, frame: Any) -> np.ndarray:
        return to_image(np.asarray(frame), 1, self.value_range)  # (H, W, 3) uint8
