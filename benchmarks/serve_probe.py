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
  column in one of the rows the game serves from; *no ball*: nothing decodes as a ball; *rows*:
  how the served balls spread over the 15 rows, and the chi-square test's p against the uniform
  law the game draws them from (`pong.read_serve`, `evaluate.events.serve_report`: the measure
  `diffworld eval pong` reports on held-out seeds); *control*: valid share at ordinary moments
  (10 frames before each serve), so a setting that serves by breaking ordinary frames shows.

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
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.games.events import serve_report
from diffworld.evaluate.forecasts import Cases, cases_at, model_forecast
from diffworld.splits import SERVE_PROBE_SEED_BASE
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode
from diffworld.worlds.pong import SERVE_ROWS, read_serve, serve_frames

PLAY = (slice(1, 31), slice(2, 30))  # rows and columns a ball can occupy
CONTROL_GAP = 10  # control moments: this many frames before each serve


def serve_moments(context: int, n: int) -> tuple[Cases, Cases]:
    """`n` cases (horizon 1) whose true next frame is a serve, from validation episodes, and a control
    case `CONTROL_GAP` frames before each: (serves, controls)."""
    serves, controls, seed = [], [], SERVE_PROBE_SEED_BASE
    while len(serves) < n:
        ep = run_episode(make_world("pong"), seed=seed, policy=default_policy("pong"), max_steps=400)
        seed += 1
        for t in serve_frames(ep.rewards):
            if t >= context + CONTROL_GAP and len(serves) < n:
                serves.append((ep, int(t) - 1))
                controls.append((ep, int(t) - 1 - CONTROL_GAP))
    return cases_at(serves, context, 1), cases_at(controls, context, 1)


def sample_next(model: WorldModel, cases: Cases, members: int, sampler: SamplerConfig) -> np.ndarray:
    """[S, M, 1, 32, 32]: the frame after each case's context, dreamed `members` times under the true action."""
    return model_forecast(model, cases.context, cases.actions, members, cases.context_actions, sampler, seed=0)


@torch.no_grad()
def denoiser_reading(model: WorldModel, cases: Cases, sigmas: list[float]) -> list[tuple[float, float, float]]:
    """(σ, D's mean on the true ball pixels, D's largest value elsewhere in the play field) of the true
    next frame + σ noise."""
    frames = torch.as_tensor(np.concatenate([cases.context, cases.truth], axis=1)).float().to(model.device)
    actions = torch.as_tensor(np.concatenate([cases.context_actions, cases.actions], axis=1)).to(model.device)
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
    parser.add_argument(
        "--samplers", default='[{"steps": 1}, {"steps": 4}, {"steps": 8}]', help="JSON list of SamplerConfig overrides"
    )
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0, 2.0, 1.0, 0.5, 0.2])
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model)
    if model.spec.name != "pong":
        raise SystemExit(f"this probe needs a pong model, got one of {model.spec.name!r}")
    serves, controls = serve_moments(model.frames - 1, args.moments)
    print(
        f"model {args.model}: {args.moments} serve moments × {args.members} members (seeds {SERVE_PROBE_SEED_BASE}+), "
        f"default sampler {model.sampler}"
    )
    print(
        "| sampler | valid | served | no ball | served rows 8..22 | chi-square p | control valid |\n"
        "|---|---|---|---|---|---|---|"
    )
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        r = serve_report(*read_serve(sample_next(model, serves, args.members, sampler)[:, :, 0]), SERVE_ROWS)
        control_valid = read_serve(sample_next(model, controls, args.members, sampler)[:, :, 0])[0]
        p = "-" if r["p"] is None else f"{r['p']:.3f}"
        print(
            f"| {json.dumps(overrides)} | {r['valid']:.3f} | {r['served']:.3f} | {r['no_ball']:.3f} | {r['counts']} "
            f"| {p} | {control_valid.mean():.3f} |",
            flush=True,
        )
    print(
        "\n| σ | D on the true ball (serve) | largest elsewhere (serve) | D on the true ball (control) "
        "| largest elsewhere (control) |\n|---|---|---|---|---|"
    )
    for (s, on, off), (_, c_on, c_off) in zip(
        denoiser_reading(model, serves, args.sigmas), denoiser_reading(model, controls, args.sigmas)
    ):
        print(f"| {s:g} | {on:.2f} | {off:.2f} | {c_on:.2f} | {c_off:.2f} |")


if __name__ == "__main__":
    main()
