"""The interface every domain offers: its worlds, the evaluation of a checkpoint, its demo, its summary.

`diffworld eval` and `diffworld demo` find the domain of a world (`diffworld.domains.domain_of`)
and call it through this interface alone, with the command line's options gathered in
`EvalOptions` or `DemoOptions`. A domain reads the options it names in `eval_options` /
`demo_options`; one given to a domain that does not read it is refused (`check_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from diffworld.spec import WorldSpec


@dataclass(frozen=True)
class EvalOptions:
    """What an evaluation of a checkpoint was asked for, beyond the checkpoint and the output: None where not given."""

    #: Settings of the sampler on top of the checkpoint's (`SamplerConfig` fields).
    sampler: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    #: Seed of the evaluation's own draws.
    seed: int = 0
    #: Held-out forecast start points, ensemble members and leads 1..horizon (default: the domain's).
    cases: int | None = None
    members: int | None = None
    horizon: int | None = None
    #: Games and cascade: offset of the held-out episode seeds (`splits.GAME_VALIDATION_OFFSET`: the validation set).
    seed_offset: int | None = None
    #: Forecasting: forecast from the validation start dates instead of the held-out ones.
    validation: bool | None = None
    #: Forecasting: a weaker checkpoint of the same world that autoguides every forecast, and its weight.
    guide: str | None = None
    guide_weight: float | None = None
    #: Games: the policy that plays the real episodes, and the world name a checkpoint's world must match.
    policy: str | None = None
    world: str | None = None
    #: Markets: the series the test period is taken from (an `arch.data` name or a CSV path).
    series: str | None = None
    #: Epidemics: an episode store of held-out observed cascades, for a model trained on observed ones.
    data: str | None = None
    log: Callable[[str], None] = print

    def given(self) -> dict[str, Any]:
        """The options that were given (not None; `validation` only when True)."""
        return _given(self, OPTIONAL_EVAL)

    def sizes(self, *names: str) -> dict[str, Any]:
        """The options among `names` that were given, by name: keyword arguments for a domain's evaluation."""
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class DemoOptions:
    """What a demo was asked for beyond the world and the output: None where not given (0 is a value)."""

    steps: int | None = None
    preset: str | None = None
    episodes: int | None = None
    cases: int | None = None
    members: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    #: Forecasting: early stopping on the climate of free runs every this many steps (0: off).
    validate_every: int | None = None
    #: Epidemics: dreams per seed node for the hub ranking.
    hub_members: int | None = None
    #: Markets: the series forecast (an `arch.data` name or a CSV path).
    series: str | None = None
    log: Callable[[str], None] = print

    def given(self) -> dict[str, Any]:
        """The options that were given (not None)."""
        return _given(self, OPTIONAL_DEMO)


#: The options a domain may read or refuse (the device, seed, sampler and log every domain takes).
OPTIONAL_EVAL = (
    "cases", "members", "horizon", "seed_offset", "validation", "guide", "guide_weight", "policy", "world", "series",
    "data",
)  # fmt: skip
OPTIONAL_DEMO = (
    "steps", "preset", "episodes", "cases", "members", "batch_size", "validate_every", "hub_members", "series",
)  # fmt: skip


def _given(options: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields of `options` among `names` that were given: not None, and a flag only when set."""
    values = {f.name: getattr(options, f.name) for f in fields(options) if f.name in names}
    return {name: value for name, value in values.items() if value is not None and value is not False}


@runtime_checkable
class Domain(Protocol):
    """A family of worlds with its own scores: what `diffworld eval` and `diffworld demo` dispatch to."""

    #: Short name (games, epidemics, forecasting, markets).
    name: str
    #: How an error names the worlds it serves, e.g. "lorenz96 and fields".
    label: str
    #: The worlds its demo runs, by name (`diffworld demo --world`).
    demo_worlds: tuple[str, ...]
    #: The optional `EvalOptions` and `DemoOptions` fields it reads; others given are refused.
    eval_options: frozenset[str]
    demo_options: frozenset[str]

    def serves(self, world: str) -> bool:
        """Whether `world` (a checkpoint's spec name, or a demo's --world) is one of this domain's."""
        ...

    def worlds(self) -> list[tuple[str, WorldSpec | None]]:
        """Its worlds by name, each with a spec where one can be built without outside data or packages."""
        ...

    def evaluate(self, checkpoint: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
        """Score a checkpoint on held-out data; write metrics.json and pictures into `out`; return the metrics."""
        ...

    def demo(self, world: str, out: Path, options: DemoOptions) -> dict[str, Any]:
        """Collect (or load), train and evaluate a model of `world` into `out`; return the metrics."""
        ...

    def print_summary(self, metrics: dict[str, Any]) -> None:
        """Print the headline numbers of `evaluate`'s or `demo`'s metrics."""
        ...

    def outputs(self, world: str, demo: bool) -> list[str]:
        """What `evaluate` (or, with `demo`, the demo) writes into its output folder: metrics.json first."""
        ...


def check_options(domain: Domain, world: str, options: EvalOptions | DemoOptions, among: Iterable[Domain]) -> None:
    """Refuse an option given for `world` that its domain does not read, naming the domains that do."""
    demo = isinstance(options, DemoOptions)
    reads = domain.demo_options if demo else domain.eval_options
    for name in options.given():
        if name in reads:
            continue
        readers = [d for d in among if name in (d.demo_options if demo else d.eval_options)]
        flag = "--" + name.replace("_", "-")
        if demo:
            worlds = " or ".join(w for d in readers for w in d.demo_worlds)
            raise ValueError(f"{flag} is for --world {worlds}, got --world {world}")
        raise ValueError(f"{flag} is for {' or '.join(d.label for d in readers)}; got a {world} model")


def given(value: Any, default: Any) -> Any:
    """An option's value where given (0 included: it is checked, not read as "not given"), else the default."""
    return default if value is None else value


def with_training(train: Any, options: DemoOptions) -> Any:
    """A demo's TrainConfig with the options' steps, batch size and device on top."""
    steps, batch_size = given(options.steps, train.steps), given(options.batch_size, train.batch_size)
    return replace(train, steps=steps, batch_size=batch_size, device=options.device)


def refuse_existing_demo(out: Path) -> None:
    """Refuse an output folder that holds a training run: a demo would replace its model."""
    from diffworld.train import holds_run

    if holds_run(out):
        raise FileExistsError(f"{out} already holds a demo run; choose another --out or remove it")


def model_and_oracle(read: Callable[[dict[str, Any]], Any], numbers: dict[str, Any], fmt: str = ".3f") -> str:
    """An event's number for the model and the oracle, "model / oracle" ("-" where there is none)."""
    values = (read(numbers[name]) for name in ("model", "oracle"))
    return " / ".join("-" if v is None else format(v, fmt) for v in values)


def checkpoint_sampler(checkpoint: str | Path, settings: dict[str, Any]) -> Any:
    """The checkpoint's sampler (`SamplerConfig`) with `settings` on top; a bad checkpoint or setting, or a
    sampler its world cannot use (`check_sampler`), fails here, before a domain's work."""
    from diffworld.inputs import check_sampler
    from diffworld.model.world_model import WorldModel

    model = WorldModel.from_pretrained(checkpoint)
    sampler = replace(model.sampler, **settings)
    check_sampler(model.spec, sampler, model.config.dit.chance)
    return sampler


#: The line that heads the chance events of an evaluation's summary.
EVENTS_HEADING = "events, model / oracle from the same held-out starts:"

__all__ = [
    "EVENTS_HEADING",
    "DemoOptions",
    "Domain",
    "EvalOptions",
    "check_options",
    "checkpoint_sampler",
    "given",
    "model_and_oracle",
    "refuse_existing_demo",
    "with_training",
]
