"""The world registry: every simulator diffworld ships, by name."""

from __future__ import annotations

import sys
from collections.abc import Callable

from diffworld.worlds.base import (
    BranchableWorld,
    DecodableWorld,
    Policy,
    World,
    collect_episodes,
    epsilon_greedy,
    random_policy,
    run_episode,
)
from diffworld.worlds.pong import Pong

#: Registry name -> zero-argument factory of a fresh world.
WORLDS: dict[str, Callable[[], World]] = {
    "pong": Pong,
}


def list_worlds() -> list[str]:
    """Names of all registered worlds, sorted."""
    return sorted(WORLDS)


def _factory(name: str) -> Callable[[], World]:
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; expected one of: {', '.join(list_worlds())}") from None


def make_world(name: str) -> World:
    """A fresh instance of the world registered as `name`."""
    return _factory(name)()


def training_defaults(name: str) -> dict:
    """Loss settings the world's module recommends (its TRAINING_DEFAULTS; empty if none)."""
    module = sys.modules.get(getattr(_factory(name), "__module__", ""))
    return dict(getattr(module, "TRAINING_DEFAULTS", {}))


def default_policy(name: str) -> Policy:
    """The data-collection policy the world's module recommends (random_policy if it has none)."""
    module = sys.modules.get(getattr(_factory(name), "__module__", ""))
    policy = getattr(module, "default_policy", None)
    return policy if callable(policy) else random_policy


__all__ = [
    "WORLDS",
    "BranchableWorld",
    "DecodableWorld",
    "Policy",
    "World",
    "collect_episodes",
    "default_policy",
    "epsilon_greedy",
    "list_worlds",
    "make_world",
    "random_policy",
    "run_episode",
    "training_defaults",
]
