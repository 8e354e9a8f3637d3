"""Training recipes: collect and train, train on a store, and read how a checkpoint's data was collected.

Each is one library call; the CLI and the domains' demos call these. What a domain does with a
trained checkpoint (evaluate it, run its demo, draw it) is in `diffworld.domains`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffworld.data.collect import BUILTIN_POLICIES, CollectConfig, resolve_policy
from diffworld.data.episodes import Episode
from diffworld.data.store import EpisodeStore
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import ModelConfig, WorldModel, check_model, read_config, resolve_pretrained
from diffworld.spec import WorldSpec
from diffworld.train import (
    TrainConfig,
    TrainResult,
    build_model,
    check_data,
    check_run_dir,
    check_subgraphs,
    initialize_from,
    train,
)
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
    init: str | Path | None = None,
    fresh: tuple[str, ...] = (),
) -> TrainResult:
    """Collect `episodes` episodes of a built-in world with its default policy (in memory) and train on them.

    `validate` / `validate_every`: early stopping, and `overwrite`: see `diffworld.train.train`.
    `init`: a trained model of the world (checkpoint or shipped name) to start from (`initialize_from`);
    `fresh`: name prefixes of the parts that start fresh instead.
    """
    check_run_dir(out, resume, overwrite)  # before the episodes are collected
    options = dict(world_options or {})
    collect_cfg = CollectConfig(source=world, episodes=episodes, policy="default", world_options=options)
    make = lambda: make_world(world, **options)  # noqa: E731
    # Fail early on an unknown name or option, or a model that cannot be built or trained here.
    check_model(make().spec, model_config, copies=TRAINING_COPIES, device=train_config.device)
    check_subgraphs(make().spec, model_config, train_config)
    t0 = time.perf_counter()
    data = collect_episodes(make, collect_cfg.seeds, default_policy(world), collect_cfg.max_steps)
    frames = sum(len(e) for e in data)
    log(f"collected {len(data)} episodes of {world} ({frames} frames) in {time.perf_counter() - t0:.1f}s")
    model = build_model(make().spec, data, model_config, sampler, seed=train_config.seed)
    if init is not None and not resume:
        start_from(model, init, log, fresh)
    log(model_summary(model))
    seeds = collect_cfg.seeds
    extra = {
        **({"init": str(init)} if init is not None else {}),
        **({"init_fresh": list(fresh)} if fresh else {}),
        "data": {
            "world": world,
            "collect": collect_cfg.identity(),
            "train_seeds": [seeds[0], seeds[-1]],
            "episodes": len(data),
            "frames": frames,
        },
    }
    result = train(
        model, data, train_config, out, resume=resume, progress=progress, extra_config=extra, validate=validate,
        validate_every=validate_every, overwrite=overwrite,
    )  # fmt: skip
    log(f"trained {result.steps} steps in {result.seconds:.0f}s; final loss {result.final_loss:.4f}")
    return result


def start_from(model: WorldModel, init: str | Path, log: Callable[[str], None], fresh: tuple[str, ...] = ()) -> None:
    """Initialise `model` from the trained model `init` (`initialize_from`) and log what starts fresh."""
    new = sorted({k.rsplit(".", 1)[0] for k in initialize_from(model, init, fresh)})
    log(f"initialised from {init}; fresh: {', '.join(new) or 'nothing'}")


def init_config(init: str | Path, dit_overrides: dict[str, Any]) -> ModelConfig:
    """The model config of the trained model `init` (checkpoint or shipped name), with `dit_overrides` on top."""
    return WorldModel.from_pretrained(init).config.with_dit(**dit_overrides)


def model_summary(model: WorldModel) -> str:
    """One log line: the network's size and settings, and what it diffuses when not the frame."""
    target = (
        f"; diffuses the change (std {model.config.change_std:.4f} in model units)"
        if model.config.target == "change"
        else ""
    )
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
    init: str | Path | None = None,
    fresh: tuple[str, ...] = (),
) -> TrainResult:
    """Train on an episode store (see `diffworld collect`); the store is validated before anything is written.

    `fit` adapts the preset's patch size to the store's frames (`fit_patch`); with False a patch
    that does not tile the frames is an error. `overwrite`: see `diffworld.train.train`. `init`,
    `fresh`: as in `train_world`.
    """
    check_run_dir(out, resume, overwrite)
    store = EpisodeStore.open(data)
    if fit:
        model_config = fit_patch(store.spec, model_config, log)
    check_model(store.spec, model_config, copies=TRAINING_COPIES, device=train_config.device)
    check_subgraphs(store.spec, model_config, train_config)
    model = build_model(store.spec, store, model_config, sampler, seed=train_config.seed)
    check_data(model, store)
    if init is not None and not resume:
        start_from(model, init, log, fresh)
    log(f"store {data}: {len(store)} episodes of {store.spec.name} ({store.num_frames} frames)")
    log(model_summary(model))
    known = store.seeds[store.seeds >= 0]
    extra = {
        **({"init": str(init)} if init is not None else {}),
        **({"init_fresh": list(fresh)} if fresh else {}),
        "data": {
            "store": str(data),
            "world": store.spec.name,
            "collect": store.meta.get("collect"),
            "train_seeds": [int(known.min()), int(known.max())] if known.size else None,
            "episodes": len(store),
            "frames": store.num_frames,
        },
    }
    result = train(
        model, store, train_config, out, resume=resume, progress=progress, extra_config=extra, overwrite=overwrite
    )
    log(f"trained {result.steps} steps in {result.seconds:.0f}s; final loss {result.final_loss:.4f}")
    return result


def fit_patch(
    spec: WorldSpec, config: ModelConfig, log: Callable[[str], None] = print, min_tokens: int = 16
) -> ModelConfig:
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
        raise ValueError(
            f"unknown loss setting(s) {sorted(unknown)}; expected some of {sorted(LossConfig.__dataclass_fields__)}"
        )
    return LossConfig(**settings)


def checkpoint_train_seeds(path: str | Path) -> list[int] | None:
    """The training seeds recorded in a checkpoint's config, if any."""
    config = read_config(resolve_pretrained(path))
    seeds = (config.get("data") or {}).get("train_seeds")
    return list(range(seeds[0], seeds[1] + 1)) if seeds else None


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


__all__ = [
    "checkpoint_world",
    "data_source",
    "fit_patch",
    "recommended_loss",
    "train_store",
    "train_world",
    "training_episodes",
]
