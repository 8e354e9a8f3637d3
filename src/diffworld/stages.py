"""A staged training recipe: several training runs, each starting from the one before, as one command.

A recipe is a TOML file, or the name of a shipped model (the recipe that trained it, kept beside
its weights as `recipe.toml`):

    world = "pong"          # or data = "store.zarr"
    episodes = 400          # collected once per stage (seeds 0..N-1), without data

    [[stage]]
    name = "backbone"
    preset = "base"
    steps = 8000
    dit = { refine = 4 }

    [[stage]]               # starts from the stage before
    name = "chance"
    steps = 3000
    lr = 7e-4
    dit = { chance = 128, chance_decoder = true, chance_prior = "decoder" }

    [sampler]               # set on the final model
    event_shift = 0.0

`run_recipe` trains each stage in `OUT/stages/<name>` and writes the last stage's model, with the
recipe's sampler settings, to `OUT/checkpoint`. Resuming skips the finished stages.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from diffworld.checks import check_output_dir
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import PRETRAINED_DIR, ModelConfig, WorldModel, read_config
from diffworld.recipes import init_config, recommended_loss, train_store, train_world
from diffworld.train import TrainConfig, check_run_dir, holds_run, read_train_state

#: The file a shipped model's recipe is kept in, beside its weights.
RECIPE_FILE = "recipe.toml"
TOP_KEYS = ("world", "data", "episodes", "stage", "sampler")
STAGE_KEYS = ("name", "preset", "dit", "loss", "steps", "batch_size", "lr", "seed", "train_only", "fresh")


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe; every stage after the first starts from the one before."""

    name: str
    steps: int
    #: Model size of the first stage (tiny, small, base); later stages keep the model they start from.
    preset: str | None = None
    #: Overrides of the model config (`ModelConfig.with_dit`), e.g. adding a chance code.
    dit: dict[str, Any] = field(default_factory=dict)
    #: Overrides of the world's recommended loss (`recipes.recommended_loss`).
    loss: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    #: Name prefixes of the only parameters this stage trains (`TrainConfig.train_only`).
    train_only: tuple[str, ...] = ()
    #: Name prefixes of the parts that start fresh instead of from the stage before (`initialize_from`).
    fresh: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """Where the data comes from, the stages in order, and the final model's sampler settings."""

    stages: tuple[Stage, ...]
    world: str | None = None
    data: Path | None = None
    episodes: int = 200
    sampler: dict[str, Any] = field(default_factory=dict)

    def train_config(self, stage: Stage, device: str = "cpu") -> TrainConfig:
        """The resolved training settings of `stage`."""
        return TrainConfig(
            steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, seed=stage.seed, device=device,
            loss=recommended_loss(self.source, **stage.loss), train_only=stage.train_only,
        )  # fmt: skip

    @property
    def source(self) -> str:
        """The world the recipe trains: the built-in world's name, or the store's world."""
        if self.world is not None:
            return self.world
        from diffworld.data.store import EpisodeStore

        return EpisodeStore.open(self.data, validate=False).spec.name


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path if it exists, else the recipe of the shipped model of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = PRETRAINED_DIR / str(name_or_path) / RECIPE_FILE
    if "/" not in str(name_or_path) and shipped.is_file():
        return shipped
    names = sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{RECIPE_FILE}"))
    raise FileNotFoundError(
        f"no recipe at {str(name_or_path)!r}: expected a TOML file or a shipped model's name ({', '.join(names)})"
    )


def read_recipe(name_or_path: str | Path) -> Recipe:
    """Parse and check a recipe (see the module's docstring); a one-line ValueError naming the file otherwise."""
    path = recipe_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"recipe {path}: expected TOML, found {type(e).__name__}: {e}") from None
    try:
        return parse_recipe(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"recipe {path}: {e}") from None


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    """A `Recipe` from a parsed TOML table, every key and value checked."""
    unknown(raw, TOP_KEYS, "top-level key")
    if ("world" in raw) == ("data" in raw):
        raise ValueError("expected exactly one of world (a built-in world to collect) and data (an episode store)")
    if "data" in raw and "episodes" in raw:
        raise ValueError("episodes is for a collected world; a store (data) holds its own episodes")
    stages = raw.get("stage")
    if not (isinstance(stages, list) and stages and all(isinstance(s, dict) for s in stages)):
        raise ValueError(f"expected one or more [[stage]] tables, found {type(stages).__name__}")
    parsed = tuple(parse_stage(s, i) for i, s in enumerate(stages))
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"expected distinct stage names, found {names}")
    sampler = raw.get("sampler", {})
    if not isinstance(sampler, dict):
        raise ValueError(f"[sampler]: expected a table, found {type(sampler).__name__}")
    unknown(sampler, tuple(asdict(SamplerConfig())), "sampler setting")
    SamplerConfig(**sampler)  # its own checks, now rather than after hours of training
    episodes = raw.get("episodes", 200)
    if type(episodes) is not int or episodes < 1:
        raise ValueError(f"episodes: expected an integer >= 1, found {episodes!r}")
    world, data = raw.get("world"), raw.get("data")
    for key, value in (("world", world), ("data", data)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, found {value!r}")
    return Recipe(parsed, world, None if data is None else Path(data), episodes, sampler)


def parse_stage(raw: dict[str, Any], index: int) -> Stage:
    """Stage `index` of a recipe, checked."""
    name = raw.get("name")
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name)):
        raise ValueError(f"stage {index + 1}: expected a name of letters, digits, - and _, found {name!r}")
    where = f"stage {name!r}"
    unknown(raw, STAGE_KEYS, f"{where} key")
    if "steps" not in raw:
        raise ValueError(f"{where}: expected steps, found none")
    if index and "preset" in raw:
        raise ValueError(f"{where}: preset is for the first stage; later ones keep the model they start from")
    if not index and "fresh" in raw:
        raise ValueError(f"{where}: fresh names parts of the stage before; the first stage has none")
    for key in ("dit", "loss"):
        if not isinstance(raw.get(key, {}), dict):
            raise ValueError(f"{where}: {key} expected a table, found {raw[key]!r}")
    for key in ("train_only", "fresh"):
        value = raw.get(key, [])
        if not (isinstance(value, list) and all(isinstance(p, str) and p for p in value)):
            raise ValueError(f"{where}: {key} expected a list of parameter-name prefixes, found {value!r}")
    stage = Stage(**{**raw, "train_only": tuple(raw.get("train_only", ())), "fresh": tuple(raw.get("fresh", ()))})
    TrainConfig(steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, seed=stage.seed)  # their checks
    if index == 0:
        ModelConfig.preset(stage.preset or "small", **stage.dit)
    return stage


def unknown(table: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    """Refuse keys of `table` not in `known`."""
    extra = sorted(set(table) - set(known))
    if extra:
        raise ValueError(f"unknown {what} {extra[0]!r}: expected one of {', '.join(known)}")


def stage_done(run: Path, stage: Stage, train_cfg: TrainConfig, init: Path | None) -> bool:
    """Whether the run directory `run` holds `stage` trained to its last step. A run there trained
    with other settings, or from another start, than the recipe's is refused (ValueError)."""
    ckpt = run / "checkpoint"
    if not (ckpt / "train_state.json").is_file():
        return False
    held = read_train_state(ckpt)
    want = {**plain(train_cfg), "device": held.get("train", {}).get("device")}
    # A setting newer than the run's diffworld was off then: its default.
    found = {"train": with_defaults(held.get("train"), plain(TrainConfig())), "init": held.get("init")}
    if found != {"train": want, "init": None if init is None else str(init)}:
        raise ValueError(
            f"{run} holds stage {stage.name!r} trained with other settings or from another start than the recipe's; "
            "--overwrite trains every stage again, or choose another output directory"
        )
    return held["step"] >= stage.steps


def plain(config: Any) -> Any:
    """A dataclass as the JSON a checkpoint holds it in."""
    return json.loads(json.dumps(asdict(config)))


def with_defaults(found: Any, defaults: Any) -> Any:
    """`found` (a JSON table) with the keys only `defaults` has added, table by table."""
    if not (isinstance(found, dict) and isinstance(defaults, dict)):
        return found
    return {**defaults, **{k: with_defaults(v, defaults.get(k)) for k, v in found.items()}}


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """Train `recipe`'s stages in `out/stages/<name>` and write the final model to `out/checkpoint`.

    `resume` skips the stages already trained to their end and continues the one under way;
    `overwrite` trains every stage again. Without either, an `out` holding any part of a run is
    refused before anything is collected. Returns the final checkpoint's directory.
    """
    out = check_output_dir(out, "run directory")
    runs = [out / "stages" / s.name for s in recipe.stages]
    for run in runs:  # every refusal before the first stage starts (resume with overwrite among them)
        check_run_dir(run, resume, overwrite)
    check_run_dir(out, False, overwrite or resume)  # the final model is written again on a resumed run
    if recipe.data is not None and not recipe.data.exists():
        raise FileNotFoundError(f"no episode store at {recipe.data}")
    previous: Path | None = None
    for i, (stage, run) in enumerate(zip(recipe.stages, runs, strict=True)):
        train_cfg = recipe.train_config(stage, device)
        if resume and stage_done(run, stage, train_cfg, previous):
            log(f"stage {i + 1}/{len(runs)} {stage.name}: trained already ({run})")
        else:
            log(f"stage {i + 1}/{len(runs)} {stage.name}: {stage.steps} steps in {run}")
            if previous is None:
                model_cfg = ModelConfig.preset(stage.preset or "small", **stage.dit)
            else:
                model_cfg = init_config(previous, stage.dit)
            # A stage under way continues from its checkpoint; one not begun starts from the stage before.
            args = dict(
                resume=resume and holds_run(run), progress=progress, log=log, overwrite=overwrite, init=previous,
                fresh=stage.fresh,
            )  # fmt: skip
            if recipe.data is None:
                train_world(recipe.world, run, model_cfg, train_cfg, recipe.episodes, **args)  # type: ignore[arg-type]
            else:
                train_store(recipe.data, run, model_cfg, train_cfg, fit="patch" not in stage.dit, **args)
        previous = run / "checkpoint"
    return finish(runs, out / "checkpoint", recipe)


def finish(runs: list[Path], final: Path, recipe: Recipe) -> Path:
    """Write the last stage's model (of the stage run directories `runs`) to `final` with the recipe's
    sampler settings and its stages recorded."""
    last = runs[-1] / "checkpoint"
    model = WorldModel.from_pretrained(last)
    model.sampler = replace(model.sampler, **recipe.sampler)
    held = read_config(last)
    extra = {k: v for k, v in held.items() if k not in model.config_dict()}
    extra["recipe"] = {
        "stages": [{k: v for k, v in asdict(s).items() if v not in ((), {}, None)} for s in recipe.stages],
        "sampler": recipe.sampler,
        "train_seconds": sum(float(read_train_state(run / "checkpoint").get("train_seconds", 0.0)) for run in runs),
    }
    return model.save_pretrained(final, extra)
