"""Where does a pong model's one-step draw go wrong? Ordinary frames, serves and first moves apart.

    python benchmarks/step_errors.py                                    # the shipped model
    python benchmarks/step_errors.py --model runs/mine/checkpoint --sampler '{"method": "chance"}'

From validation episodes of the default policy (seeds 1,500,000+, `splits.GAME_VALIDATION_SEED_BASE`:
neither trained on nor reported) the script takes `--moments` random moments, dreams each next
frame once from the true context under the true action, and compares it with the true frame,
split by what the true step was:

- *ordinary*: neither a serve nor a first move; the game decides the frame, so a good model is
  exact (`exact`: every pixel right; `valid`: the frame decodes as a game frame);
- *serve*: the frame after a miss (its row is chance; `valid` is what matters);
- *first move*: the frame after a serve, which shows the direction the serve drew (chance too).

For ordinary frames it then names what was wrong in the inexact ones: the ball (moved elsewhere,
broken or gone), the player's paddle, the opponent's paddle, or other pixels only (a ghost pixel).
A long dream is only as good as its ordinary frames: at 0.995 exact, a 1,000-frame dream meets
about five wrong frames. For a model with a chance code it also prints the prior's event log odds
(before the model's correction to the data's rate) at each kind of step: a prior that tells them
apart puts ordinary frames far below serves and first moves.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import torch

from diffworld import WorldModel
from diffworld.evaluate.forecasts import cases_at, model_forecast
from diffworld.splits import GAME_VALIDATION_SEED_BASE
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode
from diffworld.worlds.pong import decode

PER_EPISODE = 20  # moments drawn from one episode at most


def moments(context: int, n: int, seed: int = 0) -> tuple[list, np.ndarray]:
    """`n` (episode, last context frame) picks from validation episodes and the kind of each next step:
    0 ordinary, 1 serve, 2 first move."""
    rng, picks, kinds, episode = np.random.default_rng(seed), [], [], GAME_VALIDATION_SEED_BASE
    while len(picks) < n:
        ep = run_episode(make_world("pong"), seed=episode, policy=default_policy("pong"), max_steps=1000)
        episode += 1
        rewards = np.asarray(ep.rewards)
        candidates = np.arange(context, len(ep))  # index of the frame to dream
        for t in rng.choice(candidates, size=min(PER_EPISODE, len(candidates)), replace=False):
            picks.append((ep, int(t) - 1))
            kinds.append(1 if rewards[t] != 0 else 2 if rewards[t - 1] != 0 else 0)
    return picks[:n], np.array(kinds[:n])


@torch.no_grad()
def event_log_odds(
    model: WorldModel, context: np.ndarray, context_actions: np.ndarray, actions: np.ndarray
) -> np.ndarray:
    """[S] the chance prior's event logit for the next frame of each case, as a dream meets it
    (the context at σ_ctx, the new frame pure noise at σ_max)."""
    g, s = torch.Generator().manual_seed(0), model.sampler
    out = []
    for i in range(0, len(context), 256):
        c = torch.as_tensor(context[i : i + 256], dtype=torch.float32)
        b, n = c.shape[:2]
        x = model.normalize(c) + s.sigma_ctx * torch.randn(c.shape, generator=g)
        new = s.sigma_max * torch.randn((b, 1) + tuple(c.shape[2:]), generator=g)
        sigma = torch.cat([torch.full((b, n), s.sigma_ctx), torch.full((b, 1), s.sigma_max)], dim=1)
        a = torch.as_tensor(np.concatenate([context_actions[i : i + 256], actions[i : i + 256, :1]], axis=1))
        _, features = model.denoiser(torch.cat([x, new], dim=1), sigma, a, torch.arange(n + 1), features=True)
        out.append(model.denoiser.net.chance.event_logits(features))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pong", help="checkpoint directory or shipped model name")
    parser.add_argument("--moments", type=int, default=4000)
    parser.add_argument("--sampler", default="{}", help="JSON overrides of the model's sampler")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = WorldModel.from_pretrained(args.model).eval()
    sampler = replace(model.sampler, **json.loads(args.sampler))
    context = model.frames - 1
    picks, kinds = moments(context, args.moments, args.seed)
    at = cases_at(picks, context, 1)
    dreamed = model_forecast(model, at.context, at.actions, 1, at.context_actions, sampler, args.seed)[:, 0, 0]
    truth = at.truth[:, 0]
    exact = (dreamed > 0.5).reshape(len(kinds), -1).__eq__(truth.reshape(len(kinds), -1) > 0.5).all(1)
    got, valid = decode(dreamed)
    want, _ = decode(truth)

    print(f"model {args.model}, sampler {json.dumps({k: v for k, v in vars(sampler).items() if v is not None})}")
    for kind, name in enumerate(("ordinary", "serve", "first move")):
        pick = kinds == kind
        share = lambda v: f"{v[pick].mean():.4f}" if pick.any() else "-"  # noqa: E731
        print(f"  {name:10s} {pick.sum():5d} moments: exact {share(exact)}, valid {share(valid)}")
    wrong = Counter()
    for i in np.flatnonzero((kinds == 0) & ~exact):
        parts = []
        if not (valid[i] and got[i, 0] == want[i, 0] and got[i, 1] == want[i, 1]):
            parts.append("ball")
        parts += [name for j, name in ((2, "player"), (3, "opponent")) if not got[i, j] == want[i, j]]
        wrong[" + ".join(parts) or "other pixels"] += 1
    print("  inexact ordinary frames: " + (", ".join(f"{k} {v}" for k, v in wrong.most_common()) or "none"))
    if model.denoiser.net.chance is not None:
        odds = event_log_odds(model, at.context, at.context_actions, at.actions)
        shift = float(model.denoiser.net.chance.event_shift)
        print(f"  prior's event log odds, median (5th..95th percentile); the model's correction {shift:.2f}:")
        for kind, name in enumerate(("ordinary", "serve", "first move")):
            if (kinds == kind).any():
                q = np.percentile(odds[kinds == kind], [50, 5, 95])
                print(f"  {name:10s} {q[0]:6.2f} ({q[1]:.2f}..{q[2]:.2f})")


if __name__ == "__main__":
    main()
