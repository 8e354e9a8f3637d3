"""What a world looks like from outside: frame shape, value kind and action space, and the
episodes it produces.

A `WorldSpec` is plain data. Worlds produce it, stores keep it, and a trained model carries a
copy, so the model never has to import the world it was trained on. An `Episode` is one
trajectory in the form every world produces and every store and loader serves; it lives here,
beside the spec it is checked against, so that worlds and data both build on it and neither
imports the other's package for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from diffworld.checks import check_number

LayoutName = Literal["grid", "graph", "series"]
ValueKind = Literal["binary", "categorical", "bounded", "real"]
ActionKind = Literal["none", "discrete", "continuous"]

#: Sentinel stored in a discrete action array where no action led into the frame (the first
#: frame of an episode). The model maps it to its learned "no action" embedding.
NO_ACTION = -1


@dataclass(frozen=True)
class ActionSpace:
    """The actions a world accepts."""

    kind: ActionKind = "none"
    #: Number of actions (discrete) or the action dimension (continuous); 0 for none.
    n: int = 0
    #: Optional human-readable names of the discrete actions.
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("none", "discrete", "continuous"):
            raise ValueError(f"action kind must be none, discrete or continuous, got {self.kind!r}")
        if self.kind == "none" and self.n != 0:
            raise ValueError(f"an action space of kind 'none' has n=0, got n={self.n}")
        if self.kind != "none" and self.n < 1:
            raise ValueError(f"a {self.kind} action space needs n >= 1, got n={self.n}")
        if self.names and len(self.names) != self.n:
            raise ValueError(f"expected {self.n} action names, got {len(self.names)}")

    def validate(self, actions: np.ndarray, where: str = "actions") -> None:
        """Raise ValueError unless `actions` ([T] or [T, n]) fits this space."""
        a = np.asarray(actions)
        if self.kind == "discrete":
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{where}: expected a 1-D integer array, got shape {a.shape} dtype {a.dtype}")
            bad = (a < NO_ACTION) | (a >= self.n)
            if bad.any():
                raise ValueError(
                    f"{where}: expected actions in [0, {self.n}) (or {NO_ACTION} for none), "
                    f"found {a[bad][0]} at index {int(np.flatnonzero(bad)[0])}"
                )
        elif self.kind == "continuous":
            if a.ndim != 2 or a.shape[1] != self.n:
                raise ValueError(f"{where}: expected shape [T, {self.n}], got {a.shape}")
            if np.isinf(a).any():
                raise ValueError(f"{where}: found inf in continuous actions")


@dataclass(frozen=True)
class WorldSpec:
    """Everything a model, a store or an evaluation needs to know about a world's frames."""

    #: Registry name of the world (for example "pong").
    name: str
    #: How one moment becomes tokens: "grid" (C, H, W), "graph" (N, F) or "series" (V, F).
    layout: LayoutName
    #: Shape of one frame, without the time axis.
    frame_shape: tuple[int, ...]
    #: "binary" (every value lo or hi of value_range), "categorical" (one-hot over the channel
    #: axis: each cell or node is in exactly one of the channels' states), "bounded" (within
    #: value_range) or "real".
    value_kind: ValueKind = "real"
    #: The actions that drive the world.
    action: ActionSpace = field(default_factory=ActionSpace)
    #: Duration of one step, in the world's own units (seconds, days, model time).
    step_duration: float = 1.0
    #: Names of the channels (grid) or variables (series).
    variables: tuple[str, ...] = ()
    #: (low, high) of frame values, for bounded, binary and categorical worlds.
    value_range: tuple[float, float] | None = None
    #: Undirected edge list of the graph, for the graph layout.
    edges: tuple[tuple[int, int], ...] = ()
    #: The grid's rows and columns wrap around (a torus, like the `fields` world's domain), so what
    #: leaves one edge enters the opposite one. The grid layout's refiner pads across the edges
    #: then (a zero padding would make the border a place unlike any other).
    periodic: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("grid", "graph", "series"):
            raise ValueError(f"layout must be grid, graph or series, got {self.layout!r}")
        if self.value_kind not in ("binary", "categorical", "bounded", "real"):
            raise ValueError(f"value_kind must be binary, categorical, bounded or real, got {self.value_kind!r}")
        if self.layout == "grid" and len(self.frame_shape) != 3:
            raise ValueError(f"a grid world has frames (C, H, W), got frame_shape={self.frame_shape}")
        if self.layout in ("graph", "series") and len(self.frame_shape) != 2:
            raise ValueError(f"a {self.layout} world has frames (N, F), got frame_shape={self.frame_shape}")
        if not all(isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1 for n in self.frame_shape):
            raise ValueError(f"frame_shape: expected positive integers, found {list(self.frame_shape)}")
        if self.value_kind == "categorical" and self.frame_shape[self.channel_axis] < 2:
            raise ValueError(f"a categorical world needs >= 2 channels (states), got frame_shape={self.frame_shape}")
        check_number("step_duration", self.step_duration, above=0.0)
        if self.value_range is not None:
            if len(self.value_range) != 2:
                raise ValueError(f"value_range: expected (low, high), found {self.value_range!r}")
            lo, hi = self.value_range
            check_number("value_range low", lo)
            check_number("value_range high", hi, above=lo)
        if self.layout == "graph":
            n = self.frame_shape[0]
            bad = [
                e
                for e in self.edges
                if len(e) != 2 or not all(isinstance(i, int | np.integer) and 0 <= i < n for i in e)
            ]
            if bad:
                raise ValueError(f"edges: expected pairs of node indices in [0, {n}), found {list(bad[0])}")

    @property
    def channel_axis(self) -> int:
        """The frame's channel (feature) axis, counted from the end: −3 for grid (C, H, W), else −1."""
        return -3 if self.layout == "grid" else -1

    def check_frames(self, frames: np.ndarray, where: str = "frames") -> None:
        """Raise ValueError unless `frames` is [T, *frame_shape] and finite."""
        a = np.asarray(frames)
        if a.ndim != len(self.frame_shape) + 1 or tuple(a.shape[1:]) != tuple(self.frame_shape):
            raise ValueError(
                f"{where}: expected shape [T, {', '.join(map(str, self.frame_shape))}] for world "
                f"{self.name!r}, got {list(a.shape)}"
            )
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ValueError(f"{where}: found NaN or inf in frames")
        if self.value_range is None or self.value_kind == "real" or a.size == 0:
            return
        lo, hi = self.value_range
        if self.value_kind == "bounded":
            bad, expected = (a < lo) | (a > hi), f"values in [{lo:g}, {hi:g}]"
        else:  # binary, categorical: every value is one of the two ends
            bad, expected = (a != lo) & (a != hi), f"values {lo:g} or {hi:g}"
        if bad.any():
            first = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
            raise ValueError(
                f"{where}: expected {expected} for the {self.value_kind} world {self.name!r}, "
                f"found {a[first]} at frame {first[0]}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldSpec:
        """Inverse of `to_dict`."""
        if not isinstance(d, dict):
            raise ValueError(f"a world spec: expected a JSON object, found {d!r}")
        d = dict(d)
        for key, kind in (
            ("frame_shape", list),
            ("action", dict),
            ("variables", list),
            ("value_range", list),
            ("edges", list),
            ("name", str),
        ):
            value = d.get(key)
            if value is not None and not isinstance(value, kind | tuple if kind is list else kind):
                wanted = "a list" if kind is list else "a JSON object" if kind is dict else "a string"
                raise ValueError(f"spec {key}: expected {wanted}, found {value!r}")
        d["action"] = ActionSpace(**{**d.get("action", {}), "names": tuple(d.get("action", {}).get("names", ()))})
        d["frame_shape"] = tuple(d["frame_shape"])
        d["variables"] = tuple(d.get("variables", ()))
        if d.get("value_range") is not None:
            d["value_range"] = tuple(d["value_range"])
        d["edges"] = tuple(tuple(e) for e in d.get("edges", ()))
        return cls(**d)


@dataclass
class Episode:
    """One trajectory of a world."""

    frames: np.ndarray  # [T, *frame_shape]
    actions: np.ndarray  # [T] int64 (discrete), [T, d] float32 (continuous) or [T] int64 of NO_ACTION
    rewards: np.ndarray  # [T] float32
    dones: np.ndarray  # [T] bool
    seed: int | None = None
    #: Simulator states per frame (optional), so an evaluation can branch the true world.
    states: list[Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def validate(self, spec: WorldSpec, where: str = "episode") -> None:
        """Raise ValueError naming the first thing that does not fit `spec`."""
        spec.check_frames(self.frames, f"{where}.frames")
        t = len(self)
        for name in ("rewards", "dones"):
            a = getattr(self, name)
            if a.shape != (t,):
                raise ValueError(f"{where}.{name}: expected shape [{t}], got {list(a.shape)}")
        if spec.action.kind == "none":
            if self.actions.shape[0] != t:
                raise ValueError(f"{where}.actions: expected {t} entries, got {self.actions.shape[0]}")
        else:
            if self.actions.shape[0] != t:
                raise ValueError(f"{where}.actions: expected {t} entries, got {self.actions.shape[0]}")
            spec.action.validate(self.actions, f"{where}.actions")
