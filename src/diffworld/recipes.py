"""End-to-end recipes: collect and train, evaluate a checkpoint, dream a GIF, the demo.

Each is one library call; the CLI only parses options into configs and calls these.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from diffworld.agent import PPOConfig, play_episodes, train_ppo
from diffworld.checks import check_device, check_int, check_output_dir, check_output_file
from diffworld.data.collect import BUILTIN_POLICIES, CollectConfig, resolve_policy
from diffworld.data.episodes import Episode
from diffworld.data.store import EpisodeStore
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.evaluate.pictures import plot_horizons, write_gif
from diffworld.evaluate.run import HELD_OUT_SEED_BASE, EvalConfig, evaluate
from diffworld.heads import Heads, HeadsConfig, checkpoint_heads, dreamed_transitions, score_heads, train_heads
from diffworld.model.world_model import ModelConfig, WorldModel, check_model, read_config, resolve_pretrained
from diffworld.rollout import rollout
from diffworld.spec import WorldSpec
from diffworld.train import TrainConfig, TrainResult, build_model, check_data, check_run_dir, train
from diffworld.worlds import (
    Policy,
    World,
    check_recorded_world,
    collect_episodes,
    default_policy,
    epsilon_greedy,
    make_world,
    training_defaults,
)
from diffworld.worlds.base import run_episode


#: Copies of a model's weights training holds: weights, EMA, gradients and Adam's two moments.
TRAINING_COPIES = 5


def train_world(
    world: str,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    episodes: int = 200,
    sampler: SamplerConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    world_options: dict[str, Any] | None = None,
    validate: Callable[[WorldModel], float] | None = None,
    validate_every: int = 250,
    overwrite: bool = False,
) -> TrainResult:
    """Collect `episodes` episodes of a built-in world with its default policy (in memory) and train on them.

    `validate` / `validate_every`: early stopping, and `overwrite`: see `diffworld.train.train`.
    """
    check_run_dir(out, resume, overwrite)  # before the episodes are collected
    options = dict(world_options or {})
    collect_cfg = CollectConfig(source=world, episodes=episodes, policy="default", world_options=options)
    make = lambda: make_world(world, **options)  # noqa: E731
    # Fail early on an unknown name or option, or a model that cannot be built or trained here.
    check_model(make().spec, model_config, copies=TRAINING_COPIES, device=train_config.device)
    t0 = time.perf_counter()
    data = collect_episodes(make, collect_cfg.seeds, default_policy(world), collect_cfg.max_steps)
    frames = sum(len(e) for e in data)
    log(f"collected {len(data)} episodes of {world} ({frames} frames) in {time.perf_counter() - t0:.1f}s")
    model = build_model(make().spec, data, model_config, sampler, seed=train_config.seed)
    log(model_summary(model))
    seeds = collect_cfg.seeds
    extra = {
        "data": {
            "world": world,
            "collect": collect_cfg.identity(),
            "train_seeds": [seeds[0], seeds[-1]],
            "episodes": len(data),
            "frames": frames,
        }
    }
    result = train(
        model, data, train_config, out, resume=resume, progress=progress, extra_config=extra, validate=validate,
        validate_every=validate_every, overwrite=overwrite,
    )  # fmt: skip
    log(f"trained {result.steps} steps in {result.seconds:.0f}s; final loss {result.final_loss:.4f}")
    return result


def model_summary(model: WorldModel) -> str:
    """One log line: the network's size and settings, and what it diffuses when not the frame."""
    target = f"; diffuses the change (std {model.config.change_std:.4f} in model units)" if model.config.target == "change" else ""
    return f"model: {model.num_parameters() / 1e6:.2f}M parameters, {model.config.dit}{target}"


def train_store(
    data: str | Path,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    sampler: SamplerConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fit: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train on an episode store (see `diffworld collect`); the store is validated before anything is written.

    `fit` adapts the preset's patch size to the store's frames (`fit_patch`); with False a patch
    that does not tile the frames is an error. `overwrite`: see `diffworld.train.train`.
    """
    check_run_dir(out, resume, overwrite)
    store = EpisodeStore.open(data)
    if fit:
        model_config = fit_patch(store.spec, model_config, log)
    check_model(store.spec, model_config, copies=TRAINING_COPIES, device=train_config.device)
    model = build_model(store.spec, store, model_config, sampler, seed=train_config.seed)
    check_data(model, store)
    log(f"store {data}: {len(store)} episodes of {store.spec.name} ({store.num_frames} frames)")
    log(model_summary(model))
    known = store.seeds[store.seeds >= 0]
    extra = {
        "data": {
            "store": str(data),
            "world": store.spec.name,
            "collect": store.meta.get("collect"),
            "train_seeds": [int(known.min()), int(known.max())] if known.size else None,
            "episodes": len(store),
            "frames": store.num_frames,
        }
    }
    result = train(
        model, store, train_config, out, resume=resume, progress=progress, extra_config=extra, overwrite=overwrite
    )
    log(f"trained {result.steps} steps in {result.seconds:.0f}s; final loss {result.final_loss:.4f}")
    return result


def fit_patch(spec: WorldSpec, config: ModelConfig, log: Callable[[str], None] = print, min_tokens: int = 16) -> ModelConfig:
    """The config with a patch size that tiles `spec`'s grid frames into at least `min_tokens` tokens.

    A preset's patch (8) suits 32×32 or 64×64 frames; a 10×10 MinAtar grid needs 2. Keeps the
    configured patch when it already fits; otherwise takes the largest divisor of the frame's
    sides that is no larger and gives enough tokens.
    """
    if spec.layout != "grid":
        return config
    _, h, w = spec.frame_shape
    p = config.dit.patch
    if h % p == 0 and w % p == 0 and (h // p) * (w // p) >= min_tokens:
        return config
    side = math.gcd(h, w)
    fits = [q for q in range(1, p + 1) if side % q == 0 and (h // q) * (w // q) >= min_tokens] or [1]
    log(f"patch {p} does not tile {h}x{w} frames into {min_tokens}+ tokens; using patch {max(fits)}")
    return replace(config, dit=replace(config.dit, patch=max(fits)))


def data_source(
    config: dict[str, Any], policy: str | Policy | None = None, world: str | None = None, where: str = "checkpoint"
) -> dict[str, Any]:
    """How a checkpoint's training data was collected: world options, policy, step cap (for held-out episodes).

    The config is read as data: a policy it names as package.module:function is refused (never
    imported) unless `policy` is given, the policy for this run (a name or a function); a world
    whose name imports a module (gym:<module>:<env>) unless `world` is that name.

    Args:
        config: the checkpoint's config.json.
        policy: the policy that plays this run's episodes; None: the config's, if it is built in.
        world: the world name passed for this run (`check_recorded_world`).
        where: the checkpoint, for error messages.
    """
    name = config["spec"]["name"]
    check_recorded_world(name, where, world)
    collect_cfg = (config.get("data") or {}).get("collect") or {}
    recorded, epsilon = collect_cfg.get("policy", "default"), collect_cfg.get("epsilon", 0.0)
    options, max_steps = collect_cfg.get("world_options") or {}, collect_cfg.get("max_steps", 1000)
    if not isinstance(options, dict):
        raise ValueError(f"{where}: expected data.collect.world_options to be a JSON object, found {options!r}")
    if type(epsilon) not in (int, float) or not 0 <= epsilon <= 1:
        raise ValueError(f"{where}: expected data.collect.epsilon in [0, 1], found {epsilon!r}")
    if type(max_steps) is not int or max_steps < 1:
        raise ValueError(f"{where}: expected data.collect.max_steps, an integer >= 1, found {max_steps!r}")
    if policy is None:
        if recorded not in BUILTIN_POLICIES:
            raise ValueError(
                f"{where}: expected a built-in policy ({', '.join(BUILTIN_POLICIES)}) in data.collect.policy, "
                f"found {recorded!r}, code a checkpoint alone never runs; pass --policy {recorded} "
                "(policy= in Python) to run it, or another policy"
            )
        policy = recorded
    if isinstance(policy, str):
        policy = resolve_policy(policy, name, epsilon)
    elif epsilon > 0:
        policy = epsilon_greedy(policy, epsilon)
    return {"world_options": dict(options), "policy": policy, "max_steps": max_steps}


def recommended_loss(world: str, **overrides: Any) -> LossConfig:
    """The world's recommended loss settings, with `overrides` on top."""
    settings = {**training_defaults(world), **overrides}
    unknown = set(settings) - set(LossConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown loss setting(s) {sorted(unknown)}; expected some of {sorted(LossConfig.__dataclass_fields__)}")
    return LossConfig(**settings)


def checkpoint_train_seeds(path: str | Path) -> list[int] | None:
    """The training seeds recorded in a checkpoint's config, if any."""
    config = read_config(resolve_pretrained(path))
    seeds = (config.get("data") or {}).get("train_seeds")
    return list(range(seeds[0], seeds[1] + 1)) if seeds else None


def evaluate_checkpoint(
    path: str | Path,
    out: str | Path,
    eval_config: EvalConfig = EvalConfig(),
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    policy: str | Policy | None = None,
    world: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on held-out episodes; write `metrics.json` and `horizon.png` into `out`.

    `policy` and `world`: what this run may play and build beyond the checkpoint's data (`data_source`).
    """
    out = check_output_dir(out, "evaluation output")  # before any computing
    if (out / "metrics.json").exists():  # e.g. a demo's own directory: its scores would be lost
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    directory = resolve_pretrained(path)
    source = data_source(read_config(directory), policy, world, str(directory))
    model = WorldModel.from_pretrained(path, device=device)
    config = read_config(directory)
    metrics = evaluate(model, model.spec.name, eval_config, sampler, checkpoint_train_seeds(path), log, **source)
    metrics["checkpoint"] = str(path)
    metrics["train_seconds"] = config.get("train_seconds")
    metrics |= extra or {}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_horizons(metrics, out / "horizon.png")
    return metrics


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
            raise ValueError(f"store {data['store']}: heads need at least 2 episodes (one to train, one to score), found {len(store_episodes)}")
        return store_episodes[:cut], store_episodes[cut:], {"store": data["store"], "train_episodes": cut, "held_out_episodes": len(store_episodes) - cut}
    make, source = checkpoint_world(path, policy, world)
    held = [HELD_OUT_SEED_BASE + 500_000 + i for i in range(held_out)]
    train_eps = training_episodes(path, episodes, make, source)
    held_eps = collect_episodes(make, held, source["policy"], source["max_steps"])
    origin = {"world": config["spec"]["name"], "train_seeds": [train_eps[0].seed, train_eps[-1].seed], "held_out_seeds": [held[0], held[-1]]}
    return train_eps, held_eps, origin


def checkpoint_world(
    path: str | Path, policy: str | Policy | None = None, world: str | None = None
) -> tuple[Callable[[], World], dict[str, Any]]:
    """A factory of a checkpoint's world, with the options its training data was collected with,
    and how that data was played (`data_source`: world options, policy, step cap)."""
    directory = resolve_pretrained(path)
    config = read_config(directory)
    source = data_source(config, policy, world, str(directory))
    world = config["spec"]["name"]
    return (lambda: make_world(world, **source["world_options"])), source


def training_episodes(path: str | Path, n: int, make: Callable[[], World], source: dict[str, Any]) -> list[Episode]:
    """The first `n` of a checkpoint's training episodes (seeds 0..n−1 if it records none), replayed
    as its data was collected (`checkpoint_world`)."""
    seeds = (checkpoint_train_seeds(path) or list(range(n)))[:n]
    return collect_episodes(make, seeds, source["policy"], source["max_steps"])


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
    then also train on (see `diffworld.heads.train_heads`). `policy` and `world`: see `data_source`."""
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
    heads.save_pretrained(out, {"data": origin, "dreamed": dreamed, "held_out_scores": scores, "train_seconds": round(seconds, 1)})
    for kind, s in scores.items():
        r, e = s["reward"], s["end"]
        log(
            f"held out, {kind} new frames ({s['transitions']} transitions): reward accuracy {r['heads']['accuracy']:.4f} "
            f"macro-F1 {r['heads']['macro_f1']:.3f} (majority {r['majority']['accuracy']:.4f} / {r['majority']['macro_f1']:.3f}); "
            f"end accuracy {e['heads']['accuracy']:.4f} F1 {e['heads']['f1']:.3f} (majority {e['majority']['accuracy']:.4f} / 0)"
        )
    return scores


#: Most frames of a GIF's free dream: a longer animation is too large to hold or to watch.
MAX_GIF_FRAMES = 10_000


def dream_gif(
    model: WorldModel,
    path: str | Path,
    free_frames: int = 96,
    members: int = 3,
    cases: int = 2,
    horizon: int = 16,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    world_options: dict[str, Any] | None = None,
    policy: Policy | None = None,
    max_steps: int = 1000,
    world: str | None = None,
) -> Path:
    """GIF of held-out episodes: the truth beside dreams under the same actions, then a long free dream.

    `world_options`, `policy` and `max_steps`: how the training data was collected (`data_source`).
    `world`: the model's world name when it imports a module (`check_recorded_world`).
    """
    check_output_file(path, "GIF", suffixes=(".gif",))
    check_int("free_frames", free_frames, 1, MAX_GIF_FRAMES)
    for name, value in (("members", members), ("cases", cases), ("horizon", horizon)):
        check_int(name, value, 1)
    world_name = model.spec.name
    check_recorded_world(world_name, f"model of {world_name!r}", world)
    true_world = make_world(world_name, **(world_options or {}))
    policy = policy or default_policy(world_name)
    ctx_len = model.frames - 1
    panels_truth, panels_dreams, captions = [], [[] for _ in range(members)], []
    gen = torch.Generator(device=model.device).manual_seed(seed)
    seeds = iter(range(HELD_OUT_SEED_BASE + 900_000 + seed * 100, HELD_OUT_SEED_BASE + 900_000 + seed * 100 + 100))
    for c in range(cases):  # short forecasts from held-out episodes long enough for them
        ep = next((e for e in (run_episode(true_world, s, policy, max_steps) for s in seeds) if len(e) > ctx_len + horizon), None)
        if ep is None:
            raise ValueError(f"no held-out episode of {world_name} has the {ctx_len + horizon + 1} frames a GIF case needs")
        t0 = min(len(ep) - horizon - 1, ctx_len - 1 + 40 * (c + 1))
        ctx = ep.frames[t0 - ctx_len + 1 : t0 + 1]
        dream = rollout(
            model,
            torch.as_tensor(ctx[None]),
            torch.as_tensor(ep.actions[None, t0 + 1 : t0 + 1 + horizon]),
            n_samples=members,
            context_actions=torch.as_tensor(ep.actions[None, t0 - ctx_len + 1 : t0 + 1]),
            sampler=sampler,
            generator=gen,
        )[0].cpu().numpy()  # [M, H, *frame]
        panels_truth += [ctx, ep.frames[t0 + 1 : t0 + 1 + horizon]]
        for j in range(members):
            panels_dreams[j] += [ctx, dream[j]]
        captions += [f"case {c + 1}: context"] * ctx_len + [f"case {c + 1}: h={h + 1}, true actions" for h in range(horizon)]
    # A free dream far beyond the trained window, under the actions of a held-out episode.
    cap = min(max_steps, ctx_len + free_frames + 1)
    ep = next((e for e in (run_episode(true_world, s, policy, cap) for s in seeds) if len(e) > ctx_len + 1), None)
    if ep is None:
        raise ValueError(f"no held-out episode of {world_name} is longer than the {ctx_len + 1} frames a free dream needs")
    n_free = min(free_frames, len(ep) - ctx_len)
    dream = rollout(
        model,
        torch.as_tensor(ep.frames[None, :ctx_len]),
        torch.as_tensor(ep.actions[None, ctx_len : ctx_len + n_free]),
        n_samples=members,
        context_actions=torch.as_tensor(ep.actions[None, :ctx_len]),
        sampler=sampler,
        generator=gen,
    )[0].cpu().numpy()
    panels_truth.append(ep.frames[ctx_len : ctx_len + n_free])
    for j in range(members):
        panels_dreams[j].append(dream[j])
    captions += [f"free dream: frame {i + 1}/{n_free}, true game's actions" for i in range(n_free)]
    panels = [("true game", np.concatenate(panels_truth))]
    panels += [(f"dream {j + 1}", np.concatenate(panels_dreams[j])) for j in range(members)]
    value_range = model.spec.value_range or (0.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_gif(panels, path, scale=max(1, 128 // model.spec.frame_shape[-1]), fps=8, captions=captions, value_range=value_range)


@dataclass(frozen=True)
class DemoConfig:
    """The demo: collect, train and evaluate a world model in about ten minutes on two CPU cores."""

    world: str = "pong"
    preset: str = "small"
    episodes: int = 200
    #: 3,400 steps of `small` at batch 8 take about 6.5 minutes on two cores; at equal time,
    #: more small steps beat fewer large ones. In a budget this short the surprise and event
    #: weights (which teach pong's serves over a long run) slow down learning the ball's
    #: ordinary motion, so the demo uses the motion weight alone (both in docs/research-log.md). The rest
    #: is pong's recommended loss, whose target noise levels sit where the one-step sampler looks:
    #: with the generic ln σ ~ N(−0.4, 1.2²) the demo's skill at h = 16 was 0.39, with pong's 0.65.
    train: TrainConfig = TrainConfig(
        steps=3400, batch_size=8, loss=recommended_loss("pong", surprise_weight=0.0, event_weight=0.0)
    )
    eval: EvalConfig = EvalConfig()

    def __post_init__(self) -> None:
        ModelConfig.preset(self.preset)  # an unknown preset fails here, before any work
        check_int("demo episodes", self.episodes, 1)


def run_demo(out: str | Path, cfg: DemoConfig = DemoConfig(), progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Collect, train, evaluate; write checkpoint/, metrics.json, horizon.png and rollout.gif into `out`."""
    out = check_output_dir(out, "demo output")
    if (out / "metrics.json").exists():  # found only after training, it would stop the demo late
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another output directory or remove it")
    t0 = time.perf_counter()
    result = train_world(cfg.world, out, ModelConfig.preset(cfg.preset), cfg.train, cfg.episodes, progress=progress, log=log)
    log("evaluating on held-out episodes")
    metrics = evaluate_checkpoint(out / "checkpoint", out, cfg.eval, log=log, extra={"train_seconds": result.seconds})
    log("writing rollout.gif")
    dream_gif(result.model, out / "rollout.gif")
    metrics["total_seconds"] = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


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

    from diffworld.envs import DreamVectorEnv, WorldVectorEnv, starting_windows

    config = config or AgentConfig()
    out = check_output_dir(out, "agent output")
    check_device(device)
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds agent results; choose another --out")
    model_dir = resolve_pretrained(checkpoint)
    make, source = checkpoint_world(checkpoint, policy, world)
    model = WorldModel.from_pretrained(checkpoint, device=device)
    head = Heads.from_pretrained(heads if heads is not None else checkpoint_heads(model_dir), device=device)
    starts = starting_windows(training_episodes(checkpoint, config.start_episodes, make, source), model.frames - 1, config.start_stride)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "config": asdict(config)}

    log(f"training in the dream: {config.ppo.steps} steps, {config.num_envs} dreams, episodes cut at {config.dream_steps} steps")
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

    first_seed = HELD_OUT_SEED_BASE + 600_000  # every policy plays the same held-out seeds, in order
    n_actions = dream_envs.single_action_space.n
    g, rng = torch.Generator().manual_seed(config.ppo.seed), np.random.default_rng(config.ppo.seed)
    policies = {
        "random": lambda obs: rng.integers(n_actions, size=len(obs)),
        "dream_agent": lambda obs: dream_net.act(obs, g),
        "real_agent": lambda obs: real_net.act(obs, g),
    }
    scores = {}
    for name, policy in policies.items():
        envs = WorldVectorEnv(make, config.num_envs, config.frames, source["max_steps"], seeds=itertools.count(first_seed))
        returns = play_episodes(envs, policy, config.eval_episodes)
        scores[name] = {"mean": float(returns.mean()), "sem": float(returns.std(ddof=1) / np.sqrt(len(returns))), "episodes": len(returns)}
        log(f"{name}: return {scores[name]['mean']:.2f} ± {scores[name]['sem']:.2f} over {len(returns)} held-out real episodes")
    report["held_out_real_returns"] = scores
    report["held_out_seeds_from"] = first_seed
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


__all__ = [
    "AgentConfig",
    "DemoConfig",
    "checkpoint_world",
    "data_source",
    "dream_agent",
    "dream_gif",
    "evaluate_checkpoint",
    "fit_patch",
    "recommended_loss",
    "run_demo",
    "train_checkpoint_heads",
    "train_store",
    "train_world",
    "training_episodes",
]
