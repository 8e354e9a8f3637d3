"""The world registry: every simulator diffworld ships, by name, and adapters to outside ones.

Built-in worlds have plain names ("pong", "cascade"); those whose constructor takes keyword
options (cascade: graph, model, beta, ...) get them from `make_world`. Adapters take a prefixed
name: "minatar:breakout", "gym:CartPole-v1", "ale:Pong". The package an adapter wraps (MinAtar, Gymnasium, ale-py) is
imported only when the adapter builds a world, so importing this registry never pulls them in.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

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
from diffworld.worlds.cascade import Cascade
from diffworld.worlds.fields import Fields
from diffworld.worlds.lorenz96 import Lorenz96
from diffworld.worlds.minatar import GAMES as MINATAR_GAMES
from diffworld.worlds.pong import Pong

#: Registry name -> factory of a fresh world; its keyword parameters are the world's options.
WORLDS: dict[str, Callable[..., World]] = {
    "cascade": Cascade,
    "fields": Fields,
    "lorenz96": Lorenz96,
    "pong": Pong,
}

#: Constructor parameters that are not world options: the episode cut belongs to whoever plays
#: the episodes (`run_episode`, the collector), so `make_world` never passes it.
_NOT_OPTIONS = ("max_steps",)

#: Adapter prefix -> (module, class); "<prefix>:<rest>" builds `class(rest, **options)`.
ADAPTERS: dict[str, tuple[str, str]] = {
    "minatar": ("diffworld.worlds.minatar", "MinAtarWorld"),
    "gym": ("diffworld.worlds.gym_env", "GymWorld"),
    "ale": ("diffworld.worlds.ale", "AleWorld"),
}

#: The world names `make_world` accepts, for CLI help.
SOURCES_HELP = (
    f"built-in: {', '.join(sorted(WORLDS))}; "
    f"minatar:<game> with game one of {', '.join(MINATAR_GAMES)} (pip install 'diffworld[minatar]'); "
    "gym:<env id>, any Gymnasium env that renders rgb_array (e.g. gym:CartPole-v1); "
    "ale:<Game>, an Atari game (e.g. ale:Pong; pip install 'diffworld[atari]')"
)


def list_worlds() -> list[str]:
    """Names of all registered worlds, sorted."""
    return sorted(WORLDS)


def _factory(name: str) -> Callable[..., World]:
    """The class or factory behind `name` (an adapter's class for a prefixed name)."""
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix not in ADAPTERS:
            raise ValueError(f"unknown world source {prefix!r} in {name!r}; expected one of: {SOURCES_HELP}")
        if not rest:
            raise ValueError(f"world {name!r} names no {prefix} world; expected one of: {SOURCES_HELP}")
        module, cls = ADAPTERS[prefix]
        return getattr(importlib.import_module(module), cls)  # the adapter module imports no optional package
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; expected one of: {SOURCES_HELP}") from None


def world_options(name: str) -> tuple[str, ...]:
    """The keyword options the built-in world `name` accepts (empty if none)."""
    params = inspect.signature(_factory(name)).parameters.values()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(
        p.name for p in params if p.kind in keyword and p.default is not p.empty and p.name not in _NOT_OPTIONS
    )


def make_world(name: str, **options: Any) -> World:
    """A fresh instance of the world `name`; `options` go to its constructor (e.g. size=64, graph="karate")."""
    factory = _factory(name)
    _, sep, rest = name.partition(":")
    if not sep:
        valid = world_options(name)
        unknown = sorted(set(options) - set(valid))
        if unknown and not valid:
            raise ValueError(f"built-in world {name!r} takes no options, got {', '.join(sorted(options))}")
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for world {name!r}; valid options: {', '.join(valid)}"
            )
        return factory(**options)
    try:
        inspect.signature(factory).bind(rest, **options)
    except TypeError as e:
        raise ValueError(f"bad options for world {name!r}: {e}") from None
    return factory(rest, **options)


def imported_module(name: str) -> str | None:
    """The module that building world `name` imports because the name says so, or None.

    Gymnasium reads an env id "<module>:<env>" as "import <module>, then make <env>", so the world
    "gym:<module>:<env>" runs that module's code; every other name builds a registered world.
    """
    prefix, _, rest = name.partition(":")
    if prefix == "gym" and ":" in rest:
        return rest.partition(":")[0]
    return None


def check_recorded_world(name: str, where: str, given: str | None = None) -> None:
    """Refuse a world name read from a file (`where`: a checkpoint) whose building would import a
    module it names, unless `given`, the world passed for this run (`--world`), is that very name."""
    if given is not None and given != name:
        raise ValueError(f"{where}: expected --world {name} (the checkpoint's world), found --world {given}")
    module = imported_module(name)
    if module is not None and given != name:
        raise ValueError(
            f"{where}: its world {name!r} makes Gymnasium import module {module!r}, which a checkpoint alone never "
            f"does; pass --world {name} (world= in Python) to allow it for this run"
        )


def _recommended(name: str, attribute: str) -> Any:
    """A module-level recommendation of the world's module (None if it makes none, or if `name` is
    no registered world, e.g. the name of a user's imported data)."""
    try:
        factory = _factory(name)
    except ValueError:
        return None
    module = sys.modules.get(getattr(factory, "__module__", ""))
    return getattr(module, attribute, None)


def training_defaults(name: str) -> dict:
    """Loss settings the world's module recommends (its TRAINING_DEFAULTS; empty if none)."""
    return dict(_recommended(name, "TRAINING_DEFAULTS") or {})


def sampler_defaults(name: str) -> dict:
    """Sampler settings the world's module recommends (its SAMPLER_DEFAULTS; empty if none)."""
    return dict(_recommended(name, "SAMPLER_DEFAULTS") or {})


def default_policy(name: str) -> Policy:
    """The data-collection policy the world's module recommends (random_policy if it has none)."""
    _factory(name)  # an unknown name is an error here: collection needs a real world
    policy = _recommended(name, "default_policy")
    return policy if callable(policy) else random_policy


__all__ = [
    "ADAPTERS",
    "SOURCES_HELP",
    "WORLDS",
    "BranchableWorld",
    "DecodableWorld",
    "Policy",
    "World",
    "check_recorded_world",
    "collect_episodes",
    "default_policy",
    "epsilon_greedy",
    "imported_module",
    "list_worlds",
    "make_world",
    "random_policy",
    "run_episode",
    "sampler_defaults",
    "training_defaults",
    "world_options",
]
