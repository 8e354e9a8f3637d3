"""Does a pong model draw the serve? The frame right after a miss, sampled and denoised.

    python benchmarks/serve_probe.py                                   # the shipped model
    python benchmarks/serve_probe.py --model runs/mine/checkpoint \\
        --samplers '[{"steps": 1}, {"steps": 8}]'

A serve is the one random event of pong: after a miss the ball reappears at column 15 in one
of 15 rows, with nothing in the past to say which. From validation episodes (seeds 1,600,000+:
neither trained on nor the test seeds of `diffworld eval`) the script takes the moments of a
serve and, for each sampler setting, dreams the next frame `--members` times from the true
context under the true action:

- *valid*: the dreamed frame decodes as a game frame; *served*: valid with the ball at the serve
  column; *no ball*: nothing decodes as a ball; *rows*: how the served balls spread over the 15
  rows (the game draws them uniformly); *control*: valid share at ordinary moments (10 frames
  before each serve), so a setting that serves by breaking ordinary frames shows.

Then it asks what a sampler can ask of the network: the true serve frame plus noise σ (context
clean, at the sampler's σ_ctx) goes through the denoiser once, and the table gives D's mean on
the true ball pixels (1 = drawn, 0 = erased) and its largest value elsewhere in the play field.
A network that does not read the ball from its own noisy input at some σ cannot be sampled into
drawing it by any schedule through that σ.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from diffworld import WorldModel
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode
from diffworld.worlds.pong import SERVE_X, SERVE_Y_HIGH, SERVE_Y_LOW, decode

SEED_BASE = 1_600_000
PLAY = (slice(1, 31), slice(2, 30))  # rows and columns a ball can occupy


def serve_moments(context: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` windows (frames [context + 1, 1, 32, 32], actions [context + 1]) whose last frame is a
    serve, each with a control window ending 10 frames earlier: [(serve, control), ...]."""
    found, seed = [], SEED_BASE
    while len(found) < n:
        ep = run_episode(make_world("pong"), seed=seed, policy=default_policy("pong"), max_steps=400)
        seed += 1
        for t in np.flatnonzero(ep.rewards != 0):  # a point ends at t: frame t shows the new serve
            if t >= context + 10 and len(found) < n:
                u = t - 10
                found.append(((ep.frames[t - context : t + 1], ep.actions[t - context : t + 1]), (ep.frames[u - context : u + 1], ep.actions[u - context : u + 1])))
    return found


def sample_next(model: WorldModel, windows: list, members: int, sampler) -> tuple[np.ndarray, np.ndarray]:
    """Decoded (state [S, M, 4], valid [S, M]) of the frame after each window's context."""
    frames = torch.as_tensor(np.stack([w[0][:-1] for w in windows])).float()
    actions = torch.as_tensor(np.stack([w[1] for w in windows]))
    dream = model.rollout(frames, actions[:, -1:], n_samples=members, context_actions=actions[:, :-1], sampler=sampler, generator=torch.Generator().manual_seed(0))
    return decode(dream[:, :, 0].cpu().numpy())


@torch.no_grad()
def denoiser_reading(model: WorldModel, windows: list, sigmas: list[float]) -> list[tuple[float, float, float]]:
    """(σ, D's mean on the true ball pixels, D's largest value elsewhere in the play field) of the true last frame + σ noise."""
    frames = torch.as_tensor(np.stack([w[0] for w in windows])).float().to(model.device)
    actions = torch.as_tensor(np.stack([w[1] for w in windows])).to(model.device)
    x0 = model.normalize(frames)
    ball = frames[:, -1, 0][(slice(None),) + PLAY] > 0.5
    times = torch.arange(frames.shape[1], device=model.device)
    gen = torch.Generator(device=model.device).manual_seed(0)
    rows = []
    for s in sigmas:
        sig = torch.full(frames.shape[:2], model.sampler.sigma_ctx, device=model.device)
        sig[:, -1] = s
        x = x0 + sig[..., None, None, None] * torch.randn(x0.shape, generator=gen, device=model.device)
        d = model.denormalize(model.denoiser(x, sig, actions, times))[:, -1, 0][(slice(None),) + PLAY]
        rows.append((s, float(d[ball].mean()), float(d[~ball].max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pong", help="checkpoint directory or shipped model name")
    parser.add_argument("--moments", type=int, default=48, help="serve moments (each with a control moment)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--samplers", default='[{"steps": 1}, {"steps": 4}, {"steps": 8}]', help="JSON list of SamplerConfig overrides")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0, 2.0, 1.0, 0.5, 0.2])
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model)
    if model.spec.name != "pong":
        raise SystemExit(f"this probe needs a pong model, got one of {model.spec.name!r}")
    windows = serve_moments(model.frames - 1, args.moments)
    serves, controls = [w[0] for w in windows], [w[1] for w in windows]
    print(f"model {args.model}: {len(serves)} serve moments × {args.members} members (seeds {SEED_BASE}+), default sampler {model.sampler}")
    print("| sampler | valid | served | no ball | served rows 8..22 | control valid |\n|---|---|---|---|---|---|")
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        state, valid = sample_next(model, serves, args.members, sampler)
        served = valid & (np.abs(state[..., 0] - SERVE_X) < 0.5)
        span = SERVE_Y_HIGH - SERVE_Y_LOW
        rows = np.bincount(np.clip(np.round(state[..., 1][served]).astype(int) - SERVE_Y_LOW, 0, span), minlength=span + 1)
        _, control_valid = sample_next(model, controls, args.members, sampler)
        print(f"| {json.dumps(overrides)} | {valid.mean():.3f} | {served.mean():.3f} | {np.isnan(state[..., 0]).mean():.3f} | {rows.tolist()} | {control_valid.mean():.3f} |", flush=True)
    print("\n| σ | D on the true ball (serve) | largest elsewhere (serve) | D on the true ball (control) | largest elsewhere (control) |\n|---|---|---|---|---|")
    for (s, on, off), (_, c_on, c_off) in zip(denoiser_reading(model, serves, args.sigmas), denoiser_reading(model, controls, args.sigmas)):
        print(f"| {s:g} | {on:.2f} | {off:.2f} | {c_on:.2f} | {c_off:.2f} |")


if __name__ == "__main__":
    main()
