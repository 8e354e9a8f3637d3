"""The past a batch of dreams attends to: its finished frames, kept in a KV cache or recomputed.

With the cache (`CachedPast`) a finished frame's temporal keys and values are computed once — in
the first denoising pass of the next step, beside the new frame, not in a pass of its own — so a
new frame costs the same however long the history is. Without it (`RecomputedPast`) every
denoising pass runs the frames in view again: the reference the cache is tested against.

Both hold one denoiser's past; an autoguided dream keeps one for the model and one for the guide.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffworld.inputs import null_actions
from diffworld.model.kv_cache import KVCache
from diffworld.model.world_model import WorldModel


class CachedPast:
    """The finished frames of a batch of dreams as one denoiser's temporal keys and values (`KVCache`).

    A frame fed back waits (`pending`) for the next denoising pass, which writes it to the cache
    on the way (`DiT.forward`'s `commit`): as a write pass of its own followed by that pass would,
    for the cost of one. `denoiser` runs the steps (the model's, or its compiled form); contexts
    are encoded by the model's own, eagerly.
    """

    def __init__(self, model: WorldModel, denoiser: Callable[..., torch.Tensor]) -> None:
        self.model, self.denoiser = model, denoiser
        self.cache: KVCache | None = None
        #: The frame dreamed last, until the next pass writes it: (x at σ_ctx, σ, actions or None, time).
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def _encode(
        self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor
    ) -> KVCache:
        """A cache of frames x [R, L, *frame] at levels sigma [R, L] and positions times [L]."""
        cache = self.model.denoiser.net.new_cache()
        cache.written = [int(times[0])] * len(cache.written)  # ring slots line up with a cache written up to there
        self.model.denoiser(x, sigma, actions, times, cache=cache, write_cache=True)
        return cache

    def start(
        self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor, repeat: int = 1
    ) -> None:
        """Hold context frames x [R, L, *frame] (model units, noised) at positions times [L], each
        row `repeat` times."""
        self.pending = None
        cache = self._encode(x, sigma, actions, times)
        self.cache = cache.repeat_interleave(repeat, len(x)) if repeat > 1 else cache

    def restart(
        self,
        rows: torch.Tensor,
        x: torch.Tensor,
        sigma: torch.Tensor,
        actions: torch.Tensor | None,
        times: torch.Tensor,
        batch: int,
    ) -> None:
        """Replace the past of `rows` (of `batch` dreams) by frames x [len(rows), L, *frame] at the
        positions times [L] the others' frames hold."""
        if self.pending is not None:  # the others' newest frame joins the cache, in a pass of its own
            fx, fsigma, fa, ft = self.pending
            self.model.denoiser(fx, fsigma, fa, ft, cache=self.cache, write_cache=True)
            self.pending = None
        self.cache.assign(rows, self._encode(x, sigma, actions, times), batch)  # type: ignore[union-attr]

    def feed(self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, t: torch.Tensor) -> None:
        """A finished frame x [R, 1, *frame] at level sigma [R, 1], position t [1] joins the past (in the next pass)."""
        self.pending = (x, sigma, actions, t)

    def denoise(
        self,
        x: torch.Tensor,
        sigma: float,
        actions: torch.Tensor | None,
        t: torch.Tensor,
        base: torch.Tensor | None,
        **chance: object,
    ) -> torch.Tensor:
        """D(x; σ) of new frames x [R, 1, *frame] at position t [1] against the past (`chance`: the
        denoiser's `code` and `features`)."""
        sig = torch.full((x.shape[0], 1), sigma, device=x.device)
        fed, self.pending = self.pending, None
        if fed is None:
            return self.denoiser(x, sig, actions, t, cache=self.cache, base=base, **chance)
        fx, fsigma, fa, ft = fed
        if fa is not None or actions is not None:
            fa = null_actions(self.model, len(x), 1, x.device) if fa is None else fa
            actions = torch.cat(
                [fa, null_actions(self.model, len(x), 1, x.device) if actions is None else actions], dim=1
            )
        x, sig, times = torch.cat([fx, x], dim=1), torch.cat([fsigma, sig], dim=1), torch.cat([ft, t])
        return self.denoiser(x, sig, actions, times, cache=self.cache, commit=1, base=base, **chance)

    def select(self, keep: torch.Tensor) -> None:
        """Keep the dreams `keep` (bool [R]) alone, in their order."""
        self.cache = self.cache.select(keep, len(keep))  # type: ignore[union-attr]
        if self.pending is not None:
            x, sigma, actions, t = self.pending
            self.pending = (x[keep], sigma[keep], None if actions is None else actions[keep], t)

    def rows(self, index: torch.Tensor, batch: int) -> CachedPast:
        """The past of the dreams `index` (of `batch`) alone, for another draw of their new frame (after a pass)."""
        picked = torch.zeros(batch, dtype=torch.bool, device=index.device)
        picked[index] = True
        part = CachedPast(self.model, self.denoiser)
        part.cache = self.cache.select(picked, batch)  # type: ignore[union-attr]  # the frame fed back included
        return part


class RecomputedPast:
    """The finished frames in view of a batch of dreams, run through the denoiser again at every pass:
    the reference `CachedPast` is tested against."""

    def __init__(self, model: WorldModel, denoiser: Callable[..., torch.Tensor]) -> None:
        self.model, self.denoiser = model, denoiser
        self.keep = model.frames - 1  # finished frames in view

    def _hold(self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor) -> None:
        self.x, self.sigma = x[:, -self.keep :], sigma[:, -self.keep :]  # [R, L, *frame], [R, L]
        self.actions = None if actions is None else actions[:, -self.keep :]  # [R, L(, d)]
        self.times = times[-self.keep :]  # [L]

    def start(
        self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor, repeat: int = 1
    ) -> None:
        """Hold context frames x [R, L, *frame] (model units, noised) at positions times [L], each
        row `repeat` times."""
        rep = lambda t: None if t is None else t.repeat_interleave(repeat, dim=0)  # noqa: E731
        self._hold(rep(x), rep(sigma), rep(actions), times)

    def restart(
        self,
        rows: torch.Tensor,
        x: torch.Tensor,
        sigma: torch.Tensor,
        actions: torch.Tensor | None,
        times: torch.Tensor,
        batch: int,
    ) -> None:
        """Replace the frames of `rows` by x [len(rows), L, *frame]; `times` are the positions held already."""
        self.x, self.sigma = self.x.clone(), self.sigma.clone()
        self.x[rows], self.sigma[rows] = x, sigma
        if self.actions is not None:
            self.actions = self.actions.clone()
            self.actions[rows] = actions

    def feed(self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor | None, t: torch.Tensor) -> None:
        """A finished frame x [R, 1, *frame] at level sigma [R, 1], position t [1] joins the frames in view."""
        cat = lambda a, b: None if a is None else torch.cat([a, b], dim=-1 if a.ndim == 1 else 1)  # noqa: E731
        self._hold(cat(self.x, x), cat(self.sigma, sigma), cat(self.actions, actions), cat(self.times, t))

    def denoise(
        self,
        x: torch.Tensor,
        sigma: float,
        actions: torch.Tensor | None,
        t: torch.Tensor,
        base: torch.Tensor | None,
        **chance: object,
    ) -> torch.Tensor:
        """D(x; σ) of new frames x [R, 1, *frame] at position t [1], the frames in view recomputed
        (`chance`: the denoiser's `code` and `features`)."""
        sig = torch.full((x.shape[0], 1), sigma, device=x.device)
        seq = torch.cat([self.x, x], dim=1)  # [R, L + 1, *frame]
        seq_sigma = torch.cat([self.sigma, sig], dim=1)
        seq_a = None if actions is None else torch.cat([self.actions, actions], dim=1)
        out = self.denoiser(seq, seq_sigma, seq_a, torch.cat([self.times, t]), base=base, **chance)
        return (out[0][:, -1:], out[1]) if chance.get("features") else out[:, -1:]

    def select(self, keep: torch.Tensor) -> None:
        """Keep the dreams `keep` (bool [R]) alone, in their order."""
        self._hold(self.x[keep], self.sigma[keep], None if self.actions is None else self.actions[keep], self.times)

    def rows(self, index: torch.Tensor, batch: int) -> RecomputedPast:
        """The frames of the dreams `index` (of `batch`) alone, for another draw of their new frame."""
        part = RecomputedPast(self.model, self.denoiser)
        part._hold(self.x[index], self.sigma[index], None if self.actions is None else self.actions[index], self.times)
        return part


class DecodedPast:
    """The past of a model whose chance code has a decoder of its own (`DiTConfig.chance_decoder`):
    the backbone's in a cache, and the frames in view held beside it, which an event's decoding pass
    runs through the decoder again (the backbone's keys and values are not the decoder's)."""

    def __init__(self, model: WorldModel, denoiser: Callable[..., torch.Tensor]) -> None:
        self.cached = CachedPast(model, denoiser)
        self.frames = RecomputedPast(model, model.denoiser)

    def _both(self) -> tuple[CachedPast, RecomputedPast]:
        return self.cached, self.frames

    def start(self, *args: object, **kwargs: object) -> None:
        """See `CachedPast.start`."""
        for past in self._both():
            past.start(*args, **kwargs)  # type: ignore[arg-type]

    def restart(self, *args: object, **kwargs: object) -> None:
        """See `CachedPast.restart`."""
        for past in self._both():
            past.restart(*args, **kwargs)  # type: ignore[arg-type]

    def feed(self, *args: object) -> None:
        """See `CachedPast.feed`."""
        for past in self._both():
            past.feed(*args)  # type: ignore[arg-type]

    def select(self, keep: torch.Tensor) -> None:
        """See `CachedPast.select`."""
        for past in self._both():
            past.select(keep)

    def denoise(
        self,
        x: torch.Tensor,
        sigma: float,
        actions: torch.Tensor | None,
        t: torch.Tensor,
        base: torch.Tensor | None,
        **chance: object,
    ) -> torch.Tensor:
        """D(x; σ): the backbone's against its cache, or, given a chance `code`, the decoder's over
        the frames in view."""
        if chance.get("code") is not None:
            return self.frames.denoise(x, sigma, actions, t, base, **chance)
        return self.cached.denoise(x, sigma, actions, t, base, **chance)

    def rows(self, index: torch.Tensor, batch: int) -> DecodedPast:
        """The past of the dreams `index` (of `batch`) alone (see `CachedPast.rows`)."""
        part = DecodedPast.__new__(DecodedPast)
        part.cached, part.frames = self.cached.rows(index, batch), self.frames.rows(index, batch)
        return part


Past = CachedPast | RecomputedPast | DecodedPast
