"""The diffusion transformer backbone: factorised space-time attention with per-frame adaLN-Zero.

A sequence of N frames, each S tokens wide, flows through `depth` blocks. Each block has
  1. spatial attention among the S tokens of one frame (with an optional layout bias),
  2. temporal attention of each token position across frames (RoPE in time, masked so a frame
     never sees its future),
  3. an MLP,
each modulated (shift, scale, gate) by the frame's own conditioning vector: its noise level and
the action that led into it (adaLN-Zero, Peebles & Xie 2023).

The layout decides what spatial attention knows of space: fixed positions added to the tokens
(grid), or raw position features the DiT maps to its width with a learned linear layer plus a
learned bias module evaluated once per forward pass, one [heads, S, S] slice per block (graph:
Laplacian eigenvectors and the heat kernel with a diffusion time per layer and head).

Because attention across frames is causal, a finished frame's temporal keys and values never
change; `KVCache` keeps them so a rollout computes only the new frame's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffworld.layouts import Layout

#################################################################################
#                                  Config                                       #
#################################################################################


@dataclass(frozen=True)
class DiTConfig:
    """Size and shape of the backbone."""

    #: Token width D.
    width: int = 128
    #: Number of blocks.
    depth: int = 4
    #: Attention heads (D must be divisible by heads).
    heads: int = 4
    #: MLP hidden width as a multiple of D.
    mlp_ratio: float = 4.0
    #: Patch size of the grid layout.
    patch: int = 4
    #: Frames in a training window; a rollout keeps at most frames - 1 past frames in context.
    frames: int = 8
    #: Features per value for the layout's refiner head (grid: 3×3 convolutions across patch
    #: borders); 0 maps tokens back to values with a linear unpatchify.
    refine: int = 0


#: Size presets. `tiny` is for tests; the CLI offers these names.
PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(width=32, depth=2, heads=2, patch=8, frames=4),
    "small": DiTConfig(width=128, depth=4, heads=4, patch=8, frames=6),
    "base": DiTConfig(width=128, depth=4, heads=4, patch=8, frames=8),
}


#################################################################################
#                           Embedding and helpers                               #
#################################################################################


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, N, S, D] scaled and shifted per frame by [B, N, D]."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


class NoiseEmbedder(nn.Module):
    """c_noise [B, N] -> [B, N, D]: sinusoidal features then an MLP (DiT's timestep embedder)."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        half = freq_dim // 2
        # Periods from 1 to 10^4 on 1000·c_noise; c_noise = ln(σ)/4 spans a few units.
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = 1000.0 * c_noise[..., None].float() * self.freqs  # [B, N, half]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))  # [B, N, D]


class ActionEmbedder(nn.Module):
    """Previous action -> [B, N, D]; a learned "no action" vector for NO_ACTION / NaN / dropout."""

    def __init__(self, kind: str, n: int, width: int) -> None:
        super().__init__()
        self.kind, self.n = kind, n
        if kind == "discrete":
            self.table = nn.Embedding(n + 1, width)  # index n is "no action"
        elif kind == "continuous":
            self.proj = nn.Linear(n, width)
            self.null = nn.Parameter(torch.zeros(width))

    def forward(self, actions: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor | float:
        if self.kind == "none" or actions is None:
            return 0.0
        if self.kind == "discrete":
            idx = torch.where(actions < 0, self.n, actions)  # [B, N]
            return self.table(idx)  # [B, N, D]
        missing = torch.isnan(actions).any(dim=-1, keepdim=True)  # [B, N, 1]
        emb = self.proj(torch.nan_to_num(actions))  # [B, N, D]
        return torch.where(missing, self.null, emb)


def rope(x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding in time: x [..., N, dh] rotated by angles times[N]·ω."""
    dh = x.shape[-1]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    angles = times.to(torch.float32)[:, None] * freqs[None]  # [N, dh/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # [..., N, dh/2, 2]
    return out.flatten(-2)


#################################################################################
#                                  KV cache                                     #
#################################################################################


class KVCache:
    """Temporal keys and values of finished frames, per block, RoPE already applied.

    Tensors are [B·S, heads, L, dh]. At most `max_frames` frames are kept (a sliding window);
    since keys carry their own rotary positions, dropping the oldest frame changes nothing for
    the rest.
    """

    def __init__(self, depth: int, max_frames: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth
        self.max_frames = max_frames

    def __len__(self) -> int:
        """Number of cached frames."""
        return 0 if self.k[0] is None else self.k[0].shape[-2]

    def get(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Cached (k, v) of one block."""
        return self.k[layer], self.v[layer]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add frames [B·S, heads, n, dh] to one block's cache, keeping the newest max_frames."""
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=-2)
            v = torch.cat([self.v[layer], v], dim=-2)
        self.k[layer], self.v[layer] = k[..., -self.max_frames :, :], v[..., -self.max_frames :, :]

    def repeat_interleave(self, n: int, batch: int) -> KVCache:
        """A cache for a batch of `batch`·n: each of the `batch` entries repeated n times in a row."""
        out = KVCache(len(self.k), self.max_frames)
        for i, (k, v) in enumerate(zip(self.k, self.v)):
            if k is None:
                continue
            bs, h, length, dh = k.shape
            out.k[i] = k.reshape(batch, 1, bs // batch, h, length, dh).expand(-1, n, -1, -1, -1, -1)
            out.k[i] = out.k[i].reshape(batch * n * (bs // batch), h, length, dh)
            out.v[i] = v.reshape(batch, 1, bs // batch, h, length, dh).expand(-1, n, -1, -1, -1, -1)
            out.v[i] = out.v[i].reshape(batch * n * (bs // batch), h, length, dh)
        return out


#################################################################################
#                                   Blocks                                      #
#################################################################################


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [M, L, D] -> q, k, v each [M, heads, L, dh]."""
        m, length, d = x.shape
        q, k, v = self.qkv(x).reshape(m, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def out(self, y: torch.Tensor) -> torch.Tensor:
        """[M, heads, L, dh] -> [M, L, D]."""
        m, h, length, dh = y.shape
        return self.proj(y.transpose(1, 2).reshape(m, length, h * dh))


class Block(nn.Module):
    """Spatial attention, temporal attention and MLP, each under adaLN-Zero."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.spatial = Attention(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.temporal = Attention(d, cfg.heads)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        times: torch.Tensor,
        mask: torch.Tensor | None,
        spatial_bias: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        write_cache: bool,
    ) -> torch.Tensor:
        b, n, s, d = x.shape
        mods = self.ada(c).chunk(9, dim=-1)  # 9 × [B, N, D]

        # Spatial attention: the S tokens of each frame attend to each other.
        h = modulate(self.norm1(x), mods[0], mods[1]).reshape(b * n, s, d)  # [B·N, S, D]
        q, k, v = self.spatial.qkv_heads(h)  # [B·N, H, S, dh]
        if spatial_bias is not None:
            spatial_bias = spatial_bias.to(q.dtype)  # [S, S] or [H, S, S]; SDPA wants the query's dtype
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=spatial_bias)
        x = x + mods[2][:, :, None] * self.spatial.out(y).reshape(b, n, s, d)

        # Temporal attention: each token position attends to itself in earlier frames.
        h = modulate(self.norm2(x), mods[3], mods[4]).transpose(1, 2).reshape(b * s, n, d)  # [B·S, N, D]
        q, k, v = self.temporal.qkv_heads(h)  # [B·S, H, N, dh]
        q, k = rope(q, times), rope(k, times)
        past_k, past_v = cache.get(layer) if cache is not None else (None, None)
        if write_cache:
            cache.append(layer, k, v)  # type: ignore[union-attr]
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)  # [B·S, H, L+N, dh]
            if mask is not None:  # cached frames are all in the past: visible to every new frame
                mask = torch.cat([mask.new_ones(n, past_k.shape[-2]), mask], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B·S, H, N, dh]
        y = self.temporal.out(y).reshape(b, s, n, d).transpose(1, 2)  # [B, N, S, D]
        x = x + mods[5][:, :, None] * y

        # MLP.
        h = modulate(self.norm3(x), mods[6], mods[7])
        return x + mods[8][:, :, None] * self.mlp(h)


class FinalLayer(nn.Module):
    """adaLN then a linear map from the width back to token values."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


#################################################################################
#                                  The model                                    #
#################################################################################


class DiT(nn.Module):
    """F(x; c_noise, actions): frames [B, N, *frame] -> frames, causal across N."""

    def __init__(self, cfg: DiTConfig, layout: Layout, action_kind: str = "none", action_n: int = 0) -> None:
        super().__init__()
        if cfg.width % cfg.heads or (cfg.width // cfg.heads) % 2:
            raise ValueError(f"width {cfg.width} must split into {cfg.heads} heads of even size")
        self.cfg, self.layout = cfg, layout
        self.embed = nn.Linear(layout.token_dim, cfg.width)
        learned_pos = layout.learned_positions
        # Grid: fixed [S, D] sin-cos, rebuilt at load. Graph: [S, k] eigenvectors, saved with the
        # weights since a degenerate eigenspace has no canonical basis to rebuild.
        self.register_buffer("pos", layout.positions(cfg.width), persistent=learned_pos)
        self.register_buffer("spatial_bias", layout.attention_bias(), persistent=False)  # [S, S] or None
        # Grid layouts learn neither, so grid models keep exactly their parameters.
        self.pos_embed = nn.Linear(self.pos.shape[-1], cfg.width) if learned_pos else None  # [k] -> [D]
        self.spatial_bias_module = layout.attention_bias_module(cfg.heads, cfg.depth)
        self.noise_embed = NoiseEmbedder(cfg.width)
        self.action_embed = ActionEmbedder(action_kind, action_n, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg.width, layout.token_dim * max(cfg.refine, 1))
        self.refiner = layout.refiner(cfg.refine) if cfg.refine else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, small embeddings, and zeros where adaLN-Zero needs them."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.noise_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.noise_embed.mlp[2].weight, std=0.02)
        if hasattr(self.action_embed, "table"):
            nn.init.normal_(self.action_embed.table.weight, std=0.02)
        if hasattr(self.action_embed, "proj"):
            nn.init.normal_(self.action_embed.proj.weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts closed
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def diffusion_times(self) -> torch.Tensor | None:
        """[depth, heads] learned heat-kernel diffusion times τ of a graph model; None without one."""
        module = self.spatial_bias_module
        return module.diffusion_times() if module is not None else None

    def spatial_biases(self) -> list[torch.Tensor | None]:
        """Per block, the additive spatial-attention bias: the layout's fixed one plus its learned one."""
        if self.spatial_bias_module is None:
            return [self.spatial_bias] * self.cfg.depth
        learned = self.spatial_bias_module()  # [depth, H, S, S]
        if self.spatial_bias is not None:
            learned = learned + self.spatial_bias
        return list(learned.unbind(0))

    def new_cache(self) -> KVCache:
        """An empty cache that keeps the frames - 1 newest frames."""
        return KVCache(self.cfg.depth, self.cfg.frames - 1)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        actions: torch.Tensor | None,
        times: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        write_cache: bool = False,
    ) -> torch.Tensor:
        """
        x [B, N, *frame]; c_noise [B, N]; actions [B, N] (discrete) or [B, N, d] or None;
        times [N] frame indices for RoPE; mask [N, N] bool (True = may attend), default causal;
        cache: keys/values of earlier frames, all visible; write_cache appends these N frames.
        """
        b, n = x.shape[:2]
        if mask is None and n > 1:
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        tokens = self.layout.to_tokens(x)  # [B, N, S, P]
        pos = self.pos if self.pos_embed is None else self.pos_embed(self.pos)  # [S, D]
        h = self.embed(tokens) + pos  # [B, N, S, D]
        c = self.noise_embed(c_noise) + self.action_embed(actions, (b, n))  # [B, N, D]
        biases = self.spatial_biases()  # depth × ([S, S], [H, S, S] or None)
        for i, block in enumerate(self.blocks):
            h = block(h, c, times, mask, biases[i], cache, i, write_cache)
        out = self.final(h, c)  # [B, N, S, token values (× refine)]
        return self.layout.from_tokens(out) if self.refiner is None else self.refiner(out)  # [B, N, *frame]
