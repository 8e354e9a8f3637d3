"""Step a batch of dreams one frame at a time: the rollout engine for play and for agents.

`rollout` dreams a whole horizon from one context. An interactive session or an agent's
environment instead needs the next frame as soon as the next action is known, for a batch of
dreams that start (and end) at different moments. A `Dreamer` keeps one KV cache for the whole
batch and:

- `reset(context)` starts every dream, or `reset(context, rows=...)` restarts some of them while
  the others go on. A restarted row's context is encoded at the time positions the other rows'
  newest frames hold, into the same ring-buffer slots: rotary keys depend only on time
  differences, so each row sees exactly its own past.
- `step(actions)` samples the next frame of every dream (one batch) and feeds it back at σ_ctx,
  written to the cache in the first denoising pass of the next step (one pass, not two).

With the same generator, resetting all rows and stepping H times equals `rollout` of the same
context and actions with one sample per context, draw for draw (tested).

Time positions grow by one per step; every `REBASE_EVERY` frames the dreams' own newest frames
are re-encoded at small positions, so float32 rotary angles never lose precision in a session
that runs for hours.
"""

from __future__ import annotations

import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.kv_cache import KVCache
from diffworld.model.world_model import WorldModel
from diffworld.rollout import Fed, Run, check_actions, check_context, check_sampler, denoise_new_frame, null_actions, sample_frame

#: Frames after which the cache is rebuilt at positions 0..frames − 2 (see the module notes).
REBASE_EVERY = 4096


class Dreamer:
    """A batch of `batch` dreams of `model`, stepped together one frame at a time.

    Args:
        model: a trained WorldModel (put in eval mode here).
        batch: number of dreams.
        sampler: sampler settings; `dreamer.sampler` may be replaced between steps (play's
            live settings); σ_ctx applies to frames fed back from then on.
        generator: torch.Generator for every random draw.
        compile: step through the model's compiled denoiser (`WorldModel.compiled_denoiser`;
            encoding contexts stays eager): the first steps compile, later ones run fused kernels.
    """

    def __init__(
        self,
        model: WorldModel,
        batch: int,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
        compile: bool = False,
    ) -> None:
        if batch < 1:
            raise ValueError(f"a Dreamer needs batch >= 1, got {batch}")
        self.model = model.eval()
        self.denoiser = model.compiled_denoiser() if compile else model.denoiser
        self.batch = batch
        self.sampler = sampler or model.sampler
        self.generator = generator
        self.keep = model.frames - 1  # finished frames in view
        self.frame_shape = tuple(model.spec.frame_shape)
        self.cache: KVCache | None = None
        self.t = 0  # time position of the next frame, shared by all rows
        self.fed: Fed | None = None  # the frame dreamed last, until the next step writes it to the cache
        # The newest `keep` clean frames and the actions into them, for rebasing.
        dev = model.device
        self.history = torch.zeros((batch, 0) + self.frame_shape, device=dev)
        self.history_actions = null_actions(model, batch, 0, dev)

    @property
    def started(self) -> bool:
        return self.cache is not None

    @property
    def last(self) -> torch.Tensor:
        """[batch, *frame] each dream's newest frame (world units)."""
        if not self.started:
            raise RuntimeError("the Dreamer has not been reset yet")
        return self.history[:, -1]

    def _randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.model.device)

    @torch.no_grad()
    def _encode(self, context: torch.Tensor, actions: torch.Tensor | None, start: int) -> KVCache:
        """Keys/values of clean frames [R, L, *frame] fed at σ_ctx, at positions start..start+L−1."""
        r, length = context.shape[:2]
        dev = self.model.device
        cache = self.model.denoiser.net.new_cache()
        cache.written = [start] * len(cache.written)  # ring slots line up with the main cache's
        x = self.model.normalize(context) + self.sampler.sigma_ctx * self._randn(tuple(context.shape))
        sigma = torch.full((r, length), self.sampler.sigma_ctx, device=dev)
        self.model.denoiser(x, sigma, actions, torch.arange(start, start + length, device=dev), cache=cache, write_cache=True)
        return cache

    @torch.no_grad()
    def reset(self, context: torch.Tensor, context_actions: torch.Tensor | None = None, rows: torch.Tensor | list[int] | None = None) -> None:
        """Start dreams from real frames.

        Args:
            context: [R, L, *frame] past frames (world units); only the newest frames − 1 are used.
            context_actions: [R, L] actions that led into them (default: unknown).
            rows: which dreams to restart (R of them); None restarts all (R = batch). Restarting
                some rows needs contexts as long as the frames the others hold (`len(self)`).
        """
        restart_all = rows is None
        rows_t = torch.arange(self.batch) if restart_all else torch.as_tensor(rows, dtype=torch.long).flatten()
        r = len(rows_t)
        if r == 0:
            return
        if ((rows_t < 0) | (rows_t >= self.batch)).any() or len(set(rows_t.tolist())) != r:
            raise ValueError(f"rows: expected distinct indices in [0, {self.batch}), got {rows_t.tolist()}")
        context = check_context(self.model, context, r)
        if context.shape[1] < 1:
            raise ValueError("context: needs at least one frame")
        actions = check_actions(self.model, context_actions, r, context.shape[1], "context_actions")
        context, actions = context[:, -self.keep :], None if actions is None else actions[:, -self.keep :]
        length = context.shape[1]
        if restart_all:
            self.fed = None
            self.cache = self._encode(context, actions, 0)
            self.t = length
            self.history, self.history_actions = context.clone(), None if actions is None else actions.clone()
            return
        if not self.started:
            raise RuntimeError("reset all dreams (rows=None) before restarting some of them")
        if length != len(self):
            raise ValueError(f"context: restarting some dreams needs {len(self)} frames (what the others hold), got {length}")
        self._write_fed()  # the other rows' newest frame joins the cache before rows are swapped in
        part = self._encode(context, actions, self.t - length)
        self.cache.assign(rows_t.to(self.model.device), part, self.batch)  # type: ignore[union-attr]
        self.history[rows_t] = context
        if self.history_actions is not None:
            self.history_actions[rows_t] = actions

    def __len__(self) -> int:
        """Frames every dream currently holds in view (at most frames − 1)."""
        return self.history.shape[1]

    @torch.no_grad()
    def step(self, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Dream the next frame of every dream under `actions` [batch] (or [batch, d]); returns [batch, *frame]."""
        if not self.started:
            raise RuntimeError("reset the Dreamer with real frames before stepping it")
        model, s, dev = self.model, self.sampler, self.model.device
        check_sampler(model, s)
        if actions is not None:
            actions = torch.as_tensor(actions, device=dev)[:, None]  # [batch, 1(, d)]
        a = check_actions(model, actions, self.batch, 1, "actions")
        if self.t >= REBASE_EVERY:
            self._rebase()
        b, t = self.batch, torch.tensor([self.t], device=dev)

        def run(x: torch.Tensor, sigma: float, act: torch.Tensor | None, base: torch.Tensor | None) -> torch.Tensor:
            fed, self.fed = self.fed, None
            sig = torch.full((b, 1), sigma, device=dev)
            return denoise_new_frame(model, self.cache, x, sig, act, t, fed, self.denoiser, base)  # type: ignore[arg-type]

        def restrict(index: torch.Tensor) -> Run:  # `run` for the dreams `index` alone (adaptive steps)
            picked = torch.zeros(b, dtype=torch.bool, device=dev)
            picked[index] = True
            sub = self.cache.select(picked, b)  # type: ignore[union-attr]  # holds the frame fed back in the first pass

            def run_some(x: torch.Tensor, sigma: float, act: torch.Tensor | None, base: torch.Tensor | None) -> torch.Tensor:
                sig = torch.full((len(index), 1), sigma, device=dev)
                return denoise_new_frame(model, sub, x, sig, act, t, None, self.denoiser, base)

            return run_some

        frame = sample_frame(model, run, a, b, s, self.generator, self.history[:, -1:], restrict)  # [batch, 1, *frame]
        x_fed = model.normalize(frame) + s.sigma_ctx * self._randn(tuple(frame.shape))
        self.fed = (x_fed, torch.full((b, 1), s.sigma_ctx, device=dev), a, t)
        self.t += 1
        self.history = torch.cat([self.history, frame], dim=1)[:, -self.keep :]
        if self.history_actions is not None and a is not None:
            self.history_actions = torch.cat([self.history_actions, a], dim=1)[:, -self.keep :]
        return frame[:, 0]

    def _write_fed(self) -> None:
        """Write the frame dreamed last to the cache in a pass of its own (before rows are restarted)."""
        if self.fed is not None:
            x, sigma, a, t = self.fed
            self.model.denoiser(x, sigma, a, t, cache=self.cache, write_cache=True)
            self.fed = None

    def _rebase(self) -> None:
        """Re-encode every dream's held frames at positions 0..L−1 (fresh σ_ctx noise)."""
        self.fed = None  # its frame is in the history, re-encoded below
        self.cache = self._encode(self.history, self.history_actions, 0)
        self.t = len(self)
