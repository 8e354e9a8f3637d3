"""Agents in a game's dream: reward and episode-end heads for a checkpoint, and PPO trained in the dream.

`train_checkpoint_heads` (`diffworld heads`) gives a checkpoint the rewards and episode ends its
frames lack; `dream_agent` (`diffworld agent`) trains a PPO agent only inside the dream, the same
agent on the real game, and scores both and a random policy on held-out real episodes.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.agents.heads import Heads, HeadsConfig, checkpoint_heads, dreamed_transitions, score_heads, train_heads
from diffworld.agents.ppo import PPOConfig, play_episodes, train_ppo
from diffworld.checks import check_device, check_int, check_output_dir
from diffworld.data.episodes import Episode
from diffworld.data.store import EpisodeStore
from diffworld.model.world_model import WorldModel, read_config, resolve_pretrained
from diffworld.recipes import checkpoint_world, data_source, training_episodes
from diffworld.splits import AGENT_SEED_BASE, HEADS_HELD_OUT_SEED_BASE
from diffworld.worlds import Policy, collect_episodes


def heads_data(
    path: str | Path, episodes: int, held_out: int, policy: str | Policy | None = None, world: str | None = None
) -> tuple[list[Episode], list[Episode], dict[str, Any]]:
    """Training and held-out episodes for a checkpoint's heads, and where they came from.

    A checkpoint trained on a store: its episodes, the last `held_out` held out (at least one).
    One trained on a world: `episodes` of its training seeds and `held_out` held-out seeds,
    played as its training data was (world options, policy, step cap; `policy` and `world`: see
    `data_source`).
    """
    config = read_config(resolve_pretrained(path))
    data = config.get("data") or {}
    if data.get("store"):
        store_episodes = EpisodeStore.open(data["store"]).episodes()
        cut = len(store_episodes) - max(1, min(held_out, len(store_episodes) // 2))
        if cut < 1:
            raise ValueError(
                f"store {data['store']}: heads need at least 2 episodes (one to train, one to score), "
                f"found {len(store_episodes)}"
            )
        return (
            store_episodes[:cut],
            store_episodes[cut:],
            {"store": data["store"], "train_episodes": cut, "held_out_episodes": len(store_episodes) - cut},
        )
    make, source = checkpoint_world(path, policy, world)
    held = [HEADS_HELD_OUT_SEED_BASE + i for i in range(held_out)]
    train_eps = training_episodes(path, episodes, make, source)
    held_eps = collect_episodes(make, held, source["policy"], source["max_steps"])
    origin = {
        "world": config["spec"]["name"],
        "train_seeds": [train_eps[0].seed, train_eps[-1].seed],
        "held_out_seeds": [held[0], held[-1]],
    }
    return train_eps, held_eps, origin


def train_checkpoint_heads(
    path: str | Path,
    out: str | Path | None = None,
    config: HeadsConfig = HeadsConfig(),
    episodes: int = 200,
    held_out: int = 100,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    dreamed: bool = True,
    policy: str | Policy | None = None,
    world: str | None = None,
) -> dict[str, Any]:
    """Train reward and episode-end heads for a checkpoint's world, score them on held-out episodes
    beside the majority baseline, and save them (default `<checkpoint>/heads`). Returns the scores:
    on the held-out episodes ("real") and, with `dreamed`, on the checkpoint's one-step dreams of
    them ("dreamed"; every event transition and `config.dreamed_calm` others), which the heads
    then also train on (see `diffworld.agents.heads.train_heads`). `policy` and `world`: see `data_source`."""
    check_int("heads episodes", episodes, 1)
    check_int("heads held_out", held_out, 1)
    model_dir = resolve_pretrained(path)
    out = check_output_dir(Path(out) if out is not None else checkpoint_heads(model_dir), "heads output")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds heads; choose another --out or remove it")
    recorded = read_config(model_dir)
    if not (recorded.get("data") or {}).get("store"):
        data_source(recorded, policy, world, str(model_dir))  # what the episodes need, checked before the model loads
    model = WorldModel.from_pretrained(path, device=device)
    train_eps, held_eps, origin = heads_data(path, episodes, held_out, policy, world)
    log(f"heads: {len(train_eps)} training episodes, {len(held_eps)} held out ({origin})")
    t0 = time.perf_counter()
    heads = train_heads(model.spec, train_eps, config, device, log, model=model if dreamed else None)
    seconds = time.perf_counter() - t0
    scores = {"real": score_heads(heads, held_eps)}
    if dreamed:
        scores["dreamed"] = score_heads(heads, dreamed_transitions(model, held_eps, config.dreamed_calm, seed=1))
    heads.save_pretrained(
        out, {"data": origin, "dreamed": dreamed, "held_out_scores": scores, "train_seconds": round(seconds, 1)}
    )
    for kind, s in scores.items():
        r, e = s["reward"], s["end"]
        log(
            f"held out, {kind} new frames ({s['transitions']} transitions): "
            f"reward accuracy {r['heads']['accuracy']:.4f} macro-F1 {r['heads']['macro_f1']:.3f} "
            f"(majority {r['majority']['accuracy']:.4f} / {r['majority']['macro_f1']:.3f}); "
            f"end accuracy {e['heads']['accuracy']:.4f} F1 {e['heads']['f1']:.3f} "
            f"(majority {e['majority']['accuracy']:.4f} / 0)"
        )
    return scores


@dataclass(frozen=True)
class AgentConfig:
    """How `dream_agent` trains and scores its agents."""

    ppo: PPOConfig = field(default_factory=PPOConfig)
    #: Dreams (and real games) stepped together while training.
    num_envs: int = 16
    #: Newest frames in an observation (2 show the ball's motion).
    frames: int = 2
    #: Dreamed steps after which a dream episode is cut (dreams drift, and the reference pong
    #: model drops the serve after a miss; a cut episode bootstraps from its value).
    dream_steps: int = 50
    #: Held-out real episodes each policy is scored on (the same seeds for every policy).
    eval_episodes: int = 100
    #: Training episodes whose windows start the dreams, one every `start_stride` frames.
    start_episodes: int = 200
    start_stride: int = 16

    def __post_init__(self) -> None:
        for name in ("num_envs", "frames", "dream_steps", "eval_episodes", "start_episodes", "start_stride"):
            check_int(f"agent {name}", getattr(self, name), 1)


def dream_agent(
    checkpoint: str | Path,
    out: str | Path,
    config: AgentConfig | None = None,
    heads: str | Path | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    policy: str | Policy | None = None,
    world: str | None = None,
) -> dict[str, Any]:
    """Train a PPO agent only inside the checkpoint's dreams, the same agent on the real game for as
    many steps, and score both and a random policy on held-out real episodes; write `out/metrics.json`
    and the two agents (`dream_agent.safetensors`, `real_agent.safetensors`). `policy` (which plays
    the training episodes the dreams start from) and `world`: see `data_source`."""
    from safetensors.torch import save_file

    from diffworld.agents.envs import DreamVectorEnv, WorldVectorEnv, starting_windows

    config = config or AgentConfig()
    out = check_output_dir(out, "agent output")
    check_device(device)
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds agent results; choose another --out")
    model_dir = resolve_pretrained(checkpoint)
    make, source = checkpoint_world(checkpoint, policy, world)
    model = WorldModel.from_pretrained(checkpoint, device=device)
    head = Heads.from_pretrained(heads if heads is not None else checkpoint_heads(model_dir), device=device)
    starts = starting_windows(
        training_episodes(checkpoint, config.start_episodes, make, source), model.frames - 1, config.start_stride
    )
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "config": asdict(config)}

    log(
        f"training in the dream: {config.ppo.steps} steps, {config.num_envs} dreams, "
        f"episodes cut at {config.dream_steps} steps"
    )
    dream_envs = DreamVectorEnv(model, head, starts, config.num_envs, config.frames, config.dream_steps)
    t0 = time.perf_counter()
    dream_net, dream_log = train_ppo(dream_envs, config.ppo, log)
    report["dream_training"] = {"seconds": round(time.perf_counter() - t0, 1), "log": dream_log}
    save_file(dream_net.state_dict(), str(out / "dream_agent.safetensors"))

    log(f"training in the real game: {config.ppo.steps} steps")
    real_envs = WorldVectorEnv(make, config.num_envs, config.frames, source["max_steps"])
    t0 = time.perf_counter()
    real_net, real_log = train_ppo(real_envs, config.ppo, log)
    report["real_training"] = {"seconds": round(time.perf_counter() - t0, 1), "log": real_log}
    save_file(real_net.state_dict(), str(out / "real_agent.safetensors"))

    first_seed = AGENT_SEED_BASE  # every policy plays the same held-out seeds, in order
    n_actions = dream_envs.single_action_space.n
    g, rng = torch.Generator().manual_seed(config.ppo.seed), np.random.default_rng(config.ppo.seed)
    policies = {
        "random": lambda obs: rng.integers(n_actions, size=len(obs)),
        "dream_agent": lambda obs: dream_net.act(obs, g),
        "real_agent": lambda obs: real_net.act(obs, g),
    }
    scores = {}
    for name, policy in policies.items():
        envs = WorldVectorEnv(
            make, config.num_envs, config.frames, source["max_steps"], seeds=itertools.count(first_seed)
        )
        returns = play_episodes(envs, policy, config.eval_episodes)
        scores[name] = {
            "mean": float(returns.mean()),
            "sem": float(returns.std(ddof=1) / np.sqrt(len(returns))),
            "episodes": len(returns),
        }
        log(
            f"{name}: return {scores[name]['mean']:.2f} ± {scores[name]['sem']:.2f} "
            f"over {len(returns)} held-out real episodes"
        )
    report["held_out_real_returns"] = scores
    report["held_out_seeds_from"] = first_seed
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


__all__ = ["AgentConfig", "dream_agent", "heads_data", "train_checkpoint_heads"]
