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
change; `KVCache` (`diffworld.model.kv_cache`) keeps them so a rollout computes only the new
frame's tokens. The CPU fast paths the blocks run are in `diffworld.model.kernels` and `diffworld.model.linear`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from diffworld.checks import check_int, check_number
from diffworld.layouts import Layout
from diffworld.layouts.sparse_graph import SparseHeatKernelBias
from diffworld.model.chance import ChanceCode
from diffworld.model.edge_attention import EdgeBias, edge_attention
from diffworld.model.kernels import adaln_vectors, rope, rope_angles, scale_offset
from diffworld.model.kv_cache import KVCache, RingPass
from diffworld.model.linear import Linear, linear

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
    #: Codes of a learned chance code (`diffworld.model.chance`): the new frame's random outcome,
    #: drawn from a prior where an event happens and decoded at σ_max in a second evaluation; 0: none.
    chance: int = 0
    #: Width of a chance code's vectors.
    chance_dim: int = 8
    #: Decode a chance code with a network of its own (the backbone's shape, fine-tuned from its
    #: weights where a model is initialised from one): the pass without a code is then the
    #: backbone's alone, trained as a model without a chance code, and an event's frame recomputes
    #: its past through the decoder. False: the backbone decodes codes too.
    chance_decoder: bool = False
    #: Whose features the chance prior reads to pick a code, given an event: "backbone" (the pass
    #: without a code, whose features its loss then trains too) or "decoder" (the decoder of its own
    #: without a code, a third pass at event frames only: the backbone then learns the frames and
    #: the event logit alone). The event logit always reads the backbone's.
    chance_prior: str = "backbone"
    #: A graph layout's spatial attention: "dense" (every pair of nodes), "sparse" (each node with its
    #: neighbours, cost growing with the edges; `layouts.sparse_graph`) or "auto" (sparse above
    #: `layouts.DENSE_NODES` nodes). Other layouts ignore it.
    graph_attention: str = "auto"

    def __post_init__(self) -> None:
        # Sizes from a context frame and a new one (frames) up to far beyond any model trained here:
        # a config asking for more is a mistake (or a hostile file), refused before anything is built.
        for name, least, most in (
            ("width", 1, 65_536), ("depth", 1, 1024), ("heads", 1, 1024), ("patch", 1, 1024),
            ("frames", 2, 65_536), ("refine", 0, 1024), ("chance", 0, 65_536), ("chance_dim", 1, 4096)
        ):  # fmt: skip
            check_int(f"dit {name}", getattr(self, name), least, most)
        if not isinstance(self.chance_decoder, bool):
            raise ValueError(f"dit chance_decoder: expected true or false, found {self.chance_decoder!r}")
        if self.chance_decoder and not self.chance:
            raise ValueError(
                "dit chance_decoder: a decoder of its own needs a chance code (chance > 0), found chance 0"
            )
        if self.graph_attention not in ("auto", "dense", "sparse"):
            raise ValueError(
                f"dit graph_attention: expected 'auto', 'dense' or 'sparse', found {self.graph_attention!r}"
            )
        if self.chance_prior not in ("backbone", "decoder"):
            raise ValueError(f"dit chance_prior: expected 'backbone' or 'decoder', found {self.chance_prior!r}")
        if self.chance_prior == "decoder" and not self.chance_decoder:
            raise ValueError("dit chance_prior 'decoder': needs a decoder of its own (chance_decoder true), found none")
        check_number("dit mlp_ratio", self.mlp_ratio, above=0.0, most=64.0)
        if int(self.width * self.mlp_ratio) < 1:
            raise ValueError(
                "dit mlp_ratio: expected a hidden width int(width · mlp_ratio) >= 1, "
                f"found {self.width} · {self.mlp_ratio}"
            )
        if self.width % self.heads or (self.width // self.heads) % 2:  # rotary positions turn pairs
            raise ValueError(f"dit width {self.width}: expected it to split into {self.heads} heads of even size")


#: Size presets. `tiny` is for tests; the CLI offers these names.
PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(width=32, depth=2, heads=2, patch=8, frames=4),
    "small": DiTConfig(width=128, depth=4, heads=4, patch=8, frames=6),
    "base": DiTConfig(width=128, depth=4, heads=4, patch=8, frames=8),
}


def subgraph_biases(
    biases: list[torch.Tensor | EdgeBias | None], nodes: torch.Tensor, num_nodes: int
) -> list[torch.Tensor | EdgeBias | None]:
    """The spatial biases among `nodes` [S'] only: dense ones indexed, sparse patterns cut to the pairs
    with both ends among them and renumbered."""
    local = torch.full((num_nodes,), -1, dtype=torch.long, device=nodes.device)
    local[nodes] = torch.arange(len(nodes), device=nodes.device)
    cut = None
    out: list[torch.Tensor | EdgeBias | None] = []
    for bias in biases:
        if isinstance(bias, EdgeBias):
            if cut is None:
                d, s = local[bias.dst], local[bias.src]
                keep = (d >= 0) & (s >= 0)
                cut = (keep, d[keep], s[keep])
            out.append(EdgeBias(cut[1], cut[2], bias.values[..., cut[0]]))
        elif bias is None:
            out.append(None)
        else:
            out.append(bias[..., nodes, :][..., nodes])
    return out


#################################################################################
#                                  Embedders                                    #
#################################################################################


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, N, S, D] scaled and shifted per frame by [B, N, 1, D]; `scale` already holds 1 + scale."""
    return torch.addcmul(shift, x, scale)


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


#################################################################################
#                                   Blocks                                      #
#################################################################################


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = Linear(width, 3 * width)
        self.proj = Linear(width, width)
        # Holders of the query and key norms' weights, applied together in `qk_v_heads`.
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)

    def qk_v_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, L, D] -> (queries and keys [2, M, heads, L, dh], values [M, heads, L, dh]).

        Queries and keys are RMS-normalised together, one kernel for both instead of one each, and
        the weights are cast to the projection's dtype (bf16 under autocast, where queries and keys
        then stay bf16, as the cache expects).
        """
        d = x.shape[-1]
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, d // self.heads))  # [M, L, 3, H, dh]
        norm = self.q_norm
        weight = torch.stack([norm.weight, self.k_norm.weight]).to(qkv.dtype)[:, None]  # [2, 1, dh]
        qk = F.rms_norm(qkv[:, :, :2], norm.normalized_shape, None, norm.eps) * weight  # [M, L, 2, H, dh]
        return qk.permute(2, 0, 3, 1, 4), qkv[:, :, 2].transpose(1, 2)

    def value_out(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, L, D] -> [M, L, D]: the output of attention where each query's only key is its own
        (its value, projected out). The value and output projections fold into one map, W_o·W_v
        and W_o·b_v + b_o, a D×D product per call instead of a second pass over the tokens."""
        d = x.shape[-1]
        w_v, b_v = self.qkv.weight[2 * d :], self.qkv.bias[2 * d :]
        return linear(x, self.proj.weight @ w_v, torch.addmv(self.proj.bias, self.proj.weight, b_v))

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
        # forward applies mlp[0] with its SiLU through `linear` (fused into the product without
        # autograd); the SiLU module stays so the checkpoint keys keep their numbers (mlp.0, mlp.2).
        self.mlp = nn.Sequential(Linear(d, hidden), nn.SiLU(), Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        # Added to the ada bias at use, so the three scales come out as 1 + scale in the same kernel.
        self.register_buffer("ada_offset", scale_offset(d, 9, (1, 4, 7)), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        rotations: torch.Tensor,
        mask: torch.Tensor | None,
        spatial_bias: torch.Tensor | EdgeBias | None,
        cache: KVCache | None,
        layer: int,
        write_cache: bool,
        ring: RingPass | None = None,
    ) -> torch.Tensor:
        """x [B, N, S, D]; c [B, N, D]; rotations: `rope_angles` of the N frames; mask [N, N] (None: causal);
        see `DiT.forward` for the cache and `write_cache`; `ring`: a rollout step's pass booked in
        the cache's ring (`KVCache.ring_pass`), attended in place."""
        b, n, s, d = x.shape
        mods = adaln_vectors(self.ada, c, self.ada_offset)  # 9 × [B, N, 1, D]
        # Without autograd the residual stream and the MLP's hidden layer are updated in place
        # (fresh buffers of a large batch cost page faults on a CPU); the first residual makes the
        # stream this block's own, so the caller's x is never written.
        in_place = not torch.is_grad_enabled()

        # Spatial attention: the S tokens of each frame attend to each other.
        h = modulate(self.norm1(x), mods[0], mods[1]).reshape(b * n, s, d)  # [B·N, S, D]
        (q, k), v = self.spatial.qk_v_heads(h)  # [B·N, H, S, dh]
        if isinstance(spatial_bias, torch.Tensor):  # [S, S] or [H, S, S] -> [1, 1 or H, S, S] in the query's dtype:
            # a 4-D mask is what CPU SDPA's fused kernel takes (a 3-D one falls back to a ~2.5× slower path)
            spatial_bias = spatial_bias.to(q.dtype).reshape((1,) * (4 - spatial_bias.ndim) + spatial_bias.shape)
        if isinstance(spatial_bias, EdgeBias):
            y = edge_attention(q, k, v, spatial_bias)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=spatial_bias)
        x = torch.addcmul(x, mods[2], self.spatial.out(y).reshape(b, n, s, d))

        # Temporal attention: each token position attends to itself in earlier frames.
        h = modulate(self.norm2(x), mods[3], mods[4]).transpose(1, 2).reshape(b * s, n, d)  # [B·S, N, D]
        if ring is not None:  # a rollout step: in the ring, in place
            qk, v = self.temporal.qk_v_heads(h)  # [2, B·S, H, N, dh], [B·S, H, N, dh]
            q, k = rope(qk, rotations)
            y = self.temporal.out(cache.attend(layer, q, k, v, ring))  # type: ignore[union-attr]
        elif n == 1 and not write_cache and (cache is None or cache.held(layer) == 0):  # one frame, no history:
            y = self.temporal.value_out(h)  # its only key is itself
        else:
            qk, v = self.temporal.qk_v_heads(h)  # [2, B·S, H, N, dh], [B·S, H, N, dh]
            q, k = rope(qk, rotations)
            past_k, past_v = cache.get(layer) if cache is not None else (None, None)  # type: ignore[union-attr]
            if past_k is None:  # the default causal mask goes to SDPA as is_causal (its fast kernels)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
            else:  # cached frames are all in the past: visible to every new frame
                keys, values = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)  # [B·S, H, L+N, dh]
                own = mask if mask is not None else torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
                y = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=torch.cat([own.new_ones(n, past_k.shape[-2]), own], dim=-1)
                )
            if write_cache:  # after attending: the ring buffer overwrites its oldest frames in place
                cache.append(layer, k, v)  # type: ignore[union-attr]
            y = self.temporal.out(y)
        y = y.reshape(b, s, n, d).transpose(1, 2)  # [B·S, N, D] -> [B, N, S, D]
        x = x.addcmul_(mods[5], y) if in_place else torch.addcmul(x, mods[5], y)

        # MLP.
        up = self.mlp[0]
        y = self.mlp[2](linear(modulate(self.norm3(x), mods[6], mods[7]), up.weight, up.bias, silu=True))
        return x.addcmul_(mods[8], y) if in_place else torch.addcmul(x, mods[8], y)


class FinalLayer(nn.Module):
    """adaLN then a linear map from the width back to token values."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = Linear(width, out_dim)
        self.register_buffer("ada_offset", scale_offset(width, 2, (1,)), persistent=False)  # see Block

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = adaln_vectors(self.ada, c, self.ada_offset)  # [B, N, 1, D] each, scale as 1 + scale
        return self.linear(modulate(self.norm(x), shift, scale))


#################################################################################
#                                  The model                                    #
#################################################################################


class DiT(nn.Module):
    """F(x; c_noise, actions): frames [B, N, *frame] -> frames, causal across N."""

    def __init__(
        self, cfg: DiTConfig, layout: Layout, action_kind: str = "none", action_n: int = 0, prior: bool = True
    ) -> None:
        """`prior`: build the chance code's encoder and prior (False: a chance decoder's net, which
        only reads codes)."""
        super().__init__()
        if cfg.width % cfg.heads or (cfg.width // cfg.heads) % 2:
            raise ValueError(f"width {cfg.width} must split into {cfg.heads} heads of even size")
        self.cfg, self.layout = cfg, layout
        self.embed = Linear(layout.token_dim, cfg.width)
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
        self.chance: ChanceCode | None = None
        self.decoder: DiT | None = None
        own = cfg.chance and not cfg.chance_decoder
        if cfg.chance and prior:
            tokens = layout.num_tokens
            self.chance = ChanceCode(tokens * layout.token_dim, cfg.width, cfg.chance, cfg.chance_dim)
        if own:  # the code joins the new frame's conditioning and each of its tokens
            self.chance_embed = nn.Linear(cfg.chance_dim, cfg.width, bias=False)
            self.chance_tokens = nn.Linear(cfg.chance_dim, layout.num_tokens * cfg.width, bias=False)
        self.initialize_weights()
        if cfg.chance_decoder and prior:
            decoder_cfg = replace(cfg, chance_decoder=False, chance_prior="backbone")
            self.decoder = DiT(decoder_cfg, layout, action_kind, action_n, prior=False)
            self.decoder.load_state_dict(self.state_dict(), strict=False)  # starts as the backbone

    def initialize_weights(self) -> None:
        """Xavier linears, small embeddings, and zeros where adaLN-Zero needs them."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
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
        if self.chance is not None:  # the prior's global event term starts at zero (`ChanceCode`)
            nn.init.zeros_(self.chance.event_global[-1].weight)
            nn.init.zeros_(self.chance.event_global[-1].bias)

    def diffusion_times(self) -> torch.Tensor | None:
        """[depth, heads] learned heat-kernel diffusion times τ of a graph model; None without one."""
        module = self.spatial_bias_module
        return module.diffusion_times() if module is not None else None

    def spatial_biases(self) -> list[torch.Tensor | EdgeBias | None]:
        """Per block, the additive spatial-attention bias: the layout's fixed one plus its learned one
        (a sparse graph's: the pattern and its bias on the pattern's pairs)."""
        if self.spatial_bias_module is None:
            return [self.spatial_bias] * self.cfg.depth
        learned = self.spatial_bias_module()  # [depth, H, S, S] or [depth, H, E]
        if isinstance(self.spatial_bias_module, SparseHeatKernelBias):
            module = self.spatial_bias_module
            return [EdgeBias(module.dst, module.src, values) for values in learned.unbind(0)]
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
        commit: int = 0,
        code: torch.Tensor | None = None,
        features: bool = False,
        nodes: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """
        x [B, N, *frame]; c_noise [B, N]; actions [B, N] (discrete) or [B, N, d] or None;
        times [N] frame indices for RoPE; mask [N, N] bool (True = may attend), default causal;
        cache: keys/values of earlier frames, all visible; write_cache appends these N frames.
        commit: the first `commit` frames are finished ones that join the cache; each sees the
        cache and itself, and the frames after them see the cache as a write pass of them would
        have left it (a full ring without its oldest frame): a rollout feeds back the frame it
        dreamed last in the same pass as the first denoising step of the next, exactly as a write
        pass followed by that step, in one pass; the output then holds only the N − commit frames
        after them. code [B, chance_dim]: the chance code of the last frame (the new one; the others
        get none). features: also return the last frame's final tokens [B, S, D] (a chance prior's input).
        nodes [S'] (graph layouts): x holds only these nodes of the graph, a subgraph to train on:
        their positions, and attention among them alone with the whole graph's bias.
        """
        if code is not None and self.decoder is not None:
            if cache is not None:
                raise ValueError("a chance decoder of its own reads the frames in view, not the backbone's cache")
            return self.decoder(x, c_noise, actions, times, mask, code=code, features=features)
        b, n = x.shape[:2]
        if commit and (cache is None or mask is not None or not 0 < commit < n or n > KVCache.spare):
            raise ValueError(
                f"commit needs a cache, the default mask and 0 < commit < N <= {KVCache.spare}, "
                f"got commit={commit}, N = {n}"
            )
        # A pass of at most `spare` frames against a cache (a rollout step) is attended in the ring, in place.
        in_ring = cache is not None and mask is None and n <= KVCache.spare
        ring = cache.ring_pass(n, n if write_cache else commit, x.device) if in_ring else None  # type: ignore[union-attr]
        tokens = self.layout.to_tokens(x)  # [B, N, S, P]
        pos = self.pos if nodes is None else self.pos[nodes]
        pos = pos if self.pos_embed is None else self.pos_embed(pos)  # [S, D]
        h = self.embed(tokens) + pos  # [B, N, S, D]
        c = self.noise_embed(c_noise) + self.action_embed(actions, (b, n))  # [B, N, D]
        if code is not None:
            h, c = self.with_code(h, c, code)
        biases = self.spatial_biases()  # depth × ([S, S], [H, S, S], an EdgeBias or None)
        if nodes is not None:
            if self.layout.name != "graph" or code is not None or self.chance is not None:
                raise ValueError("nodes: a subgraph needs a graph layout and a model without a chance code")
            biases = subgraph_biases(biases, nodes, self.layout.num_tokens)
        rotations = rope_angles(times, self.cfg.width // self.cfg.heads)
        for i, block in enumerate(self.blocks):
            h = block(h, c, rotations, mask, biases[i], cache, i, write_cache, ring)
        if commit:  # the finished frames' outputs are never read: only their keys and values
            h, c = h[:, commit:], c[:, commit:]
        out = self.final(h, c)  # [B, N − commit, S, token values (× refine)]
        frames = self.layout.from_tokens(out) if self.refiner is None else self.refiner(out)  # [B, N, *frame]
        return (frames, h[:, -1]) if features else frames

    def no_code(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """[n, chance_dim] zeros: given as the code, the decoder's pass without one (the code's
        embeddings have no bias, so a zero code adds nothing; `DiTConfig.chance_prior`)."""
        return torch.zeros(n, self.cfg.chance_dim, device=device)

    def with_code(self, h: torch.Tensor, c: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens h [B, N, S, D] and conditioning c [B, N, D] with the chance code [B, chance_dim] of the last frame."""
        if not hasattr(self, "chance_embed"):
            raise ValueError("a chance code was given to a model without one (dit chance = 0)")
        b, n, s, d = h.shape
        if tuple(code.shape) != (b, self.cfg.chance_dim):
            raise ValueError(f"chance code: expected shape [{b}, {self.cfg.chance_dim}], got {list(code.shape)}")
        code = code.to(h.dtype)
        last = torch.zeros(n, device=h.device, dtype=h.dtype)
        last[-1] = 1.0
        c = c + last[None, :, None] * self.chance_embed(code)[:, None]
        h = h + last[None, :, None, None] * self.chance_tokens(code).view(b, 1, s, d)
        return h, c
