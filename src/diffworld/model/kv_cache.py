"""The KV cache of a rollout: temporal keys and values of finished frames, kept in a ring buffer.

Attention across frames is causal, so a finished frame's temporal keys and values never change:
a rollout computes them once, when the frame is fed back, and every later frame attends to them.
`KVCache` holds them per block; `DiT.forward` reads and writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class RingPass(NamedTuple):
    """One rollout pass's place in a `KVCache` ring (`KVCache.ring_pass`)."""

    #: [m] the slots the pass's frames are written to.
    slots: torch.Tensor
    #: [1, m, slots] additive attention mask (0 or −inf) of each frame over the ring.
    mask: torch.Tensor


class KVCache:
    """Temporal keys and values of finished frames, per block, RoPE already applied.

    Per block a ring buffer [B·S, heads, slots, dh] of `max_frames` + `spare` slots: a new frame
    overwrites the oldest slot in place (a sliding window of at most `max_frames` frames). The
    buffer's frame order is therefore a rotation of time order, which attention never sees: keys
    carry their own rotary positions. A rollout step writes its frames (the frame dreamed last,
    fed back, and the new one) into the spare slots and attends to the whole buffer at once, a
    mask keeping each frame to the `max_frames` frames before it and itself (`attend`); nothing
    is copied, and a new frame costs the same whatever the history. The pass's slots and mask are
    booked once for all blocks (`ring_pass`), outside a compiled pass: the counters stay Python.
    """

    #: Slots beyond the window: frames a pass may write before attending (`attend`).
    spare = 2

    def __init__(self, depth: int, max_frames: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth
        self.max_frames = max_frames
        self.slots = max_frames + self.spare
        self.written = [0] * depth  # frames ever kept per block: the next frame's number and slot
        self.origin = [0] * depth  # the number of the first frame written (a cache may start at any)
        self._masks: dict[tuple, RingPass] = {}  # per ring position and pass size (`ring_pass`)

    def __len__(self) -> int:
        """Number of cached frames."""
        return self.held(0)

    def held(self, layer: int) -> int:
        """Frames one block's cache holds (at most max_frames)."""
        return 0 if self.k[layer] is None else min(self.written[layer] - self.origin[layer], self.max_frames)

    def get(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Cached (k, v) of one block, oldest first, [B·S, heads, L, dh] with L = frames held (None if empty)."""
        k, v, n = self.k[layer], self.v[layer], self.held(layer)
        if k is None or n == 0:
            return None, None
        span = self._span(self.written[layer] - n, n, k.device)
        if isinstance(span, slice):
            return k[..., span, :], v[..., span, :]
        return k.index_select(-2, span), v.index_select(-2, span)  # across the ring's end: a copy

    def _span(self, first: int, n: int, device: torch.device) -> slice | torch.Tensor:
        """The slots of frames first … first + n − 1: a slice where they run contiguously, else
        their indices (across the ring's end)."""
        start = first % self.slots
        if start + n <= self.slots:
            return slice(start, start + n)
        return (start + torch.arange(n, device=device)) % self.slots

    def _write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Put frames [B·S, heads, n, dh] into the slots of frames written, written + 1, …"""
        if self.k[layer] is None:  # zeros: a slot never written is masked, and must not hold NaN
            shape = k.shape[:-2] + (self.slots, k.shape[-1])
            self.k[layer], self.v[layer] = k.new_zeros(shape), v.new_zeros(shape)
            self.origin[layer] = self.written[layer]
        span = self._span(self.written[layer], k.shape[-2], k.device)
        if isinstance(span, slice):
            self.k[layer][..., span, :] = k
            self.v[layer][..., span, :] = v
        else:
            self.k[layer].index_copy_(-2, span, k.to(self.k[layer].dtype))
            self.v[layer].index_copy_(-2, span, v.to(self.v[layer].dtype))

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add frames [B·S, heads, n, dh] to one block's cache, keeping the newest max_frames."""
        k, v = k[..., -self.max_frames :, :], v[..., -self.max_frames :, :]
        self._write(layer, k, v)
        self.written[layer] += k.shape[-2]

    @torch.compiler.disable
    def ring_pass(self, m: int, keep: int, device: torch.device) -> RingPass:
        """Book a pass of m ≤ `spare` frames that follow the cached ones, of which the first `keep`
        join the cache (the rest are overwritten by the next pass): their slots and mask for
        `attend`, the same for every block. Run eagerly under `torch.compile`, so the compiled pass
        holds tensors only and the ring's counters never become guards (a recompile per frame)."""
        first = self.written[0]
        if any(w != first for w in self.written):
            raise RuntimeError(
                f"KVCache: a rollout pass needs every block's cache in step, found frames written {self.written}"
            )
        if self.k[0] is None:  # the first write sets every block's origin (`_write`)
            self.origin = [first] * len(self.k)
        key = (first % self.slots, min(first - self.origin[0], self.slots), m, device)
        if key not in self._masks:
            last = first + m - 1
            slot = torch.arange(self.slots, device=device)
            frame = last - (last - slot) % self.slots  # the frame each slot will hold
            query = first + torch.arange(m, device=device)[:, None]  # [m, 1]
            seen = (frame >= self.origin[0]) & (frame >= query - self.max_frames) & (frame <= query)  # [m, slots]
            mask = torch.zeros(m, self.slots, device=device).masked_fill(~seen, float("-inf"))[None]  # [1, m, slots]
            self._masks[key] = RingPass((first + torch.arange(m, device=device)) % self.slots, mask)
        self.written = [first + keep] * len(self.k)
        return self._masks[key]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ring: RingPass) -> torch.Tensor:
        """Attention of the m frames booked by `ring_pass`, queries, keys and values [B·S, heads,
        m, dh]: each frame sees the max_frames frames before it (cached or earlier in the pass) and
        itself. The m frames go into their slots first; then one attention call on the buffer in
        place, whatever the ring's rotation, instead of a copy of the cache per call."""
        (r, h, m, dh), slots = q.shape, ring.slots
        if self.k[layer] is None:  # zeros: a slot never written is masked, and must not hold NaN
            shape = k.shape[:-2] + (self.slots, k.shape[-1])
            self.k[layer], self.v[layer] = k.new_zeros(shape), v.new_zeros(shape)
        kb, vb = self.k[layer], self.v[layer]
        kb.index_copy_(-2, slots, k.to(kb.dtype))
        vb.index_copy_(-2, slots, v.to(vb.dtype))
        keys, values = kb.view(r * h, self.slots, dh), vb.view(r * h, self.slots, dh)
        # Written out rather than SDPA: CPU's fused kernel costs 2-4× more for a query of 1-2 frames.
        mask = ring.mask.to(keys.dtype)
        logits = torch.baddbmm(mask, q.reshape(r * h, m, dh).to(keys.dtype), keys.mT, alpha=dh**-0.5)
        weights = logits.softmax(-1, dtype=torch.float32).to(values.dtype)
        return torch.bmm(weights, values).view(r, h, m, dh)

    def _derived(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> KVCache:
        out = KVCache(len(self.k), self.max_frames)
        out.written, out.origin = list(self.written), list(self.origin)
        out.k = [None if k is None else fn(k) for k in self.k]
        out.v = [None if v is None else fn(v) for v in self.v]
        return out

    def select(self, keep: torch.Tensor, batch: int) -> KVCache:
        """A cache for the entries `keep` (bool [batch]) of a batch of `batch`, in their order."""
        return self._derived(lambda t: t.unflatten(0, (batch, -1))[keep].flatten(0, 1))

    def assign(self, rows: torch.Tensor, src: KVCache, batch: int) -> None:
        """Overwrite the entries `rows` (indices into a batch of `batch`) with `src`'s entries, in place.

        `src` must hold as many frames at the same ring positions (frames written at the same
        time positions), so every entry's frames keep lining up slot by slot.
        """
        for layer in range(len(self.k)):
            if src.k[layer] is None or self.k[layer] is None:
                raise ValueError("KVCache.assign: both caches need written frames")
            if (
                src.held(layer) != self.held(layer)
                or src.written[layer] % self.slots != self.written[layer] % self.slots
            ):
                raise ValueError(
                    f"KVCache.assign: the caches are out of step (held {src.held(layer)} vs {self.held(layer)}, "
                    f"written {src.written[layer]} vs {self.written[layer]})"
                )
            for mine, theirs in ((self.k[layer], src.k[layer]), (self.v[layer], src.v[layer])):
                mine.unflatten(0, (batch, -1))[rows] = theirs.unflatten(0, (len(rows), -1)).to(mine.dtype)

    def repeat_interleave(self, n: int, batch: int) -> KVCache:
        """A cache for a batch of `batch`·n: each of the `batch` entries repeated n times in a row."""
        # contiguous(): with one token per frame the flatten is a stride-0 view, which in-place writes refuse.
        return self._derived(
            lambda t: t.unflatten(0, (batch, 1, -1)).expand(-1, n, -1, -1, -1, -1).flatten(0, 2).contiguous()
        )
