"""Collect episodes of any world into an episode store, over several processes, resumably.

A store remembers how it was collected (source, world options, policy, step cap). Running the
same collection again appends only the episode seeds it does not hold yet, so a collection
killed half-way resumes where it stopped; asking for a different collection into the same store
is refused rather than mixed in, and so is a second collection while another is writing to it.
"""

from __future__ import annotations

import importlib
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffworld.checks import check_int, check_number, check_output_dir
from diffworld.data.episodes import Episode
from diffworld.data.store import EpisodeStore
from diffworld.spec import WorldSpec
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.worlds import Policy, default_policy, epsilon_greedy, make_world, random_policy, run_episode

#: Policy names that run no outside code; any other is "package.module:function", code to import.
BUILTIN_POLICIES = ("random", "default")


@dataclass(frozen=True)
class CollectConfig:
    """What to collect: everything that decides the episodes, so a store can be resumed or refused."""

    source: str
    episodes: int
    #: "random", "default" (the world's recommended policy) or "package.module:function", a
    #: function (world, frame, rng) -> action.
    policy: str = "random"
    #: With probability epsilon a random action instead of the policy's.
    epsilon: float = 0.0
    max_steps: int = 1000
    seed_offset: int = 0
    world_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int("collect episodes", self.episodes, 1)
        check_int("collect max_steps", self.max_steps, 1)
        check_int("collect seed_offset", self.seed_offset, 0)
        check_number("collect epsilon", self.epsilon, least=0.0, most=1.0)
        if not isinstance(self.world_options, dict):
            raise ValueError(
                f"collect world_options: expected a dict of the source's options, found {self.world_options!r}"
            )
        if self.seed_offset + self.episodes > HELD_OUT_SEED_BASE:
            raise ValueError(
                f"training seeds must lie in [0, {HELD_OUT_SEED_BASE}) (the rest is held out), "
                f"got {self.seed_offset}..{self.seed_offset + self.episodes - 1}"
            )

    @property
    def seeds(self) -> list[int]:
        """The episode seeds this collection consists of."""
        return list(range(self.seed_offset, self.seed_offset + self.episodes))

    def identity(self) -> dict[str, Any]:
        """The settings a resumed collection must share with the store (all but the count and offset)."""
        return {k: v for k, v in asdict(self).items() if k not in ("episodes", "seed_offset")}


def resolve_policy(name: str, world: str, epsilon: float = 0.0) -> Policy:
    """A policy by name: random, default, or module:function; epsilon-greedy if epsilon > 0."""
    if name == "random":
        policy: Policy = random_policy
    elif name == "default":
        policy = default_policy(world)
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            policy = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"policy {name!r}: cannot import {attr!r} from {module!r} ({e})") from None
        if not callable(policy):
            raise ValueError(f"policy {name!r} is not callable")
    else:
        raise ValueError(f"unknown policy {name!r}; expected random, default or package.module:function")
    return epsilon_greedy(policy, epsilon) if epsilon > 0 else policy


def collect(
    cfg: CollectConfig,
    out: str | Path,
    workers: int = 1,
    on_episode: Callable[[Episode], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> EpisodeStore:
    """Collect `cfg` into the store at `out`, creating it or resuming it; returns the store, closed for writing.

    `on_episode` is called after each episode is committed; `on_resume` once with the number of
    this collection's episodes the store already held; `log` with a note when this collection takes
    over a store from one that was killed. A store another collection is writing is refused.
    """
    check_int("workers", workers, 1)
    world = make_world(cfg.source, **cfg.world_options)  # fails early on a bad source or option
    resolve_policy(cfg.policy, cfg.source, cfg.epsilon)  # and on a bad policy
    meta = {"collect": cfg.identity()}
    out = check_output_dir(out, "episode store")
    try:
        store = EpisodeStore.create(out, world.spec, meta=meta)
    except FileExistsError:  # there already, or made a moment ago by another collection
        store = EpisodeStore.open(out, mode="a")
    with store:
        if store.took_over is not None and log is not None:
            log(f"note: {store.took_over}")
        _check_same_collection(store, meta["collect"], world.spec)
        done = set(int(s) for s in store.seeds)
        todo = [s for s in cfg.seeds if s not in done]
        if on_resume is not None:
            on_resume(len(cfg.seeds) - len(todo))
        for episode in _episodes(cfg, todo, workers):
            store.append(episode)
            if on_episode is not None:
                on_episode(episode)
    return store


def _check_same_collection(store: EpisodeStore, identity: dict[str, Any], spec: WorldSpec) -> None:
    """Refuse a store that holds another collection, or frames of another world than `spec`."""
    out, held = store.path, store.meta.get("collect")
    if held != identity:
        raise ValueError(f"{out} was collected with {held}; this collection is {identity}: choose another --out")
    if store.spec != spec:
        held_spec, new = store.spec.to_dict(), spec.to_dict()
        differ = "; ".join(f"{k} {held_spec.get(k)!r} vs {v!r}" for k, v in new.items() if held_spec.get(k) != v)
        raise ValueError(f"{out} holds frames of another world than this collection's ({differ}): choose another --out")


def _episodes(cfg: CollectConfig, seeds: list[int], workers: int) -> Iterator[Episode]:
    """Episodes in seed order, from this process or a pool of `workers` processes."""
    if workers <= 1 or len(seeds) <= 1:
        _init_worker(cfg)
        yield from map(_run_seed, seeds)
        return
    # spawn: the workers start clean, whatever threads (torch's) this process runs.
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (cfg,)) as pool:
        yield from pool.imap(_run_seed, seeds, chunksize=1)


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: CollectConfig) -> None:
    _WORKER["world"] = make_world(cfg.source, **cfg.world_options)
    _WORKER["policy"] = resolve_policy(cfg.policy, cfg.source, cfg.epsilon)
    _WORKER["max_steps"] = cfg.max_steps


def _run_seed(seed: int) -> Episode:
    return run_episode(_WORKER["world"], seed, _WORKER["policy"], _WORKER["max_steps"])
