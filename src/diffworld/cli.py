"""The `diffworld` command line: a thin typer front over `diffworld.recipes`."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typer.core import TyperGroup


class Commands(TyperGroup):
    """Typer's command group, whose usage errors (an unknown option or command, a value of the
    wrong type, a missing argument) end in one `error: ...` line and exit code 2, as the commands' own do."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # click's errors, as typer vendors them
            if type(e).__name__ == "NoArgsIsHelpError":  # the help, printed already (typer tells it by name too)
                raise SystemExit(2) from None
            ctx = getattr(e, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            raise SystemExit(getattr(e, "exit_code", 2)) from None
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, help="Diffusion-transformer world models.")

#: Errors that come from bad input: reported in one line, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, KeyError)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user error into `error: <message>` on stderr and exit code 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None

    return wrapper


#: --policy and --world of the commands that play a checkpoint's world: what that run may import.
POLICY_HELP = (
    "Policy that plays the real episodes: random, default or package.module:function (default: the one the "
    "checkpoint's data was collected with; a package.module:function it names runs only if passed here)."
)
WORLD_HELP = "The checkpoint's world, when its name imports a module (gym:<module>:<env id>): allows that import."


def _sampler(model_sampler: Any, **settings: Any) -> Any:
    """The model's sampler with the command line's settings (those not None) on top."""
    return replace(model_sampler, **{k: v for k, v in settings.items() if v is not None})


def _json_overrides(text: Optional[str], what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} must be a JSON object, e.g. '{{\"patch\": 8}}': {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@app.command()
@friendly
def worlds() -> None:
    """List the built-in worlds."""
    from rich.console import Console
    from rich.table import Table

    from diffworld.worlds import list_worlds, make_world

    table = Table("name", "layout", "frame", "values", "actions")
    for name in list_worlds():
        spec = make_world(name).spec
        acts = spec.action.kind if spec.action.kind == "none" else f"{spec.action.kind} {spec.action.n} {list(spec.action.names)}"
        table.add_row(name, spec.layout, "×".join(map(str, spec.frame_shape)), spec.value_kind, acts)
    Console().print(table)


@app.command()
@friendly
def collect(
    source: str = typer.Argument(..., help="A built-in world (pong), gym:<env id>, minatar:<game> or ale:<Game>."),
    out: Path = typer.Option(..., help="Episode store (Zarr) to create, or to resume if it holds this collection."),
    episodes: int = typer.Option(100, help="Episodes in all (seeds seed_offset .. seed_offset + N − 1)."),
    policy: str = typer.Option("random", help="random, default (the world's own) or package.module:function."),
    epsilon: float = typer.Option(0.0, help="Probability of a random action instead of the policy's."),
    max_steps: int = typer.Option(1000, help="Steps after which an episode is cut."),
    size: Optional[int] = typer.Option(None, help="Frame side in pixels for gym: and ale: sources (default 64)."),
    options: Optional[str] = typer.Option(None, help='JSON options of the source, e.g. \'{"grayscale": true}\'.'),
    workers: int = typer.Option(1, help="Processes that play episodes in parallel."),
    seed_offset: int = typer.Option(0, help="First episode seed."),
) -> None:
    """Play episodes of a world and append them to an episode store; re-running resumes."""
    from rich.progress import Progress

    from diffworld.data.collect import CollectConfig
    from diffworld.data.collect import collect as run_collect

    world_options = _json_overrides(options, "--options") | ({"size": size} if size is not None else {})
    cfg = CollectConfig(
        source=source, episodes=episodes, policy=policy, epsilon=epsilon, max_steps=max_steps,
        seed_offset=seed_offset, world_options=world_options,
    )  # fmt: skip
    with Progress() as bar:
        task = bar.add_task(f"collect {source}", total=episodes)
        store = run_collect(
            cfg, out, workers, on_episode=lambda e: bar.advance(task), on_resume=lambda n: bar.advance(task, n),
            log=lambda line: typer.echo(line, err=True),
        )  # fmt: skip
    typer.echo(f"{out}: {len(store)} episodes, {store.num_frames} frames of {store.spec.name} {list(store.spec.frame_shape)}")


@app.command("train")
@friendly
def train_cmd(
    out: Path = typer.Option(..., help="Run directory: checkpoint/ and train_log.jsonl are written here."),
    data: Optional[Path] = typer.Option(None, help="Episode store to train on (see `diffworld collect`); else --world is collected."),
    world: Optional[str] = typer.Option(None, help="Built-in world to collect and learn when no --data is given (default pong)."),
    episodes: Optional[int] = typer.Option(None, help="Training episodes to collect (seeds 0..N-1), without --data (default 200)."),
    preset: str = typer.Option("small", help="Model size: tiny, small or base."),
    dit: Optional[str] = typer.Option(None, help='JSON overrides of the model preset, e.g. \'{"patch": 8}\'; "target": "change" diffuses each frame\'s change from the one before.'),
    steps: int = typer.Option(2000, help="Optimizer steps."),
    batch_size: int = typer.Option(16, help="Windows per step, over all processes."),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast)."),
    compile_step: bool = typer.Option(
        False, "--compile", help="torch.compile the training step: a minute or so of compiling, then faster steps (needs a C++ compiler on CPU)."
    ),
    loss: Optional[str] = typer.Option(None, help='JSON overrides of the world\'s recommended loss config, e.g. \'{"event_weight": 0}\'.'),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Train a new model in place of the run OUT holds (its model is lost)."),
) -> None:
    """Train a world model on an episode store, or on freshly collected episodes of a built-in world.

    Runs on several processes unchanged under torchrun, e.g.
    `torchrun --nproc_per_node=2 -m diffworld train --data STORE --out RUN`.
    """
    from diffworld.model.world_model import ModelConfig
    from diffworld.recipes import recommended_loss, train_store, train_world
    from diffworld.train import TrainConfig

    if data is not None:  # the store names its world and holds its episodes: a --world or --episodes would go unused
        for name, value in (("--world", world), ("--episodes", episodes)):
            if value is not None:
                raise ValueError(f"{name} is for training without --data (the world is collected); the store {data} names its own world and episodes")
        if not data.exists():
            raise FileNotFoundError(f"no episode store at {data}")
    world = world or "pong"
    dit_overrides = _json_overrides(dit, "--dit")
    model_cfg = ModelConfig.preset(preset, **dit_overrides)
    source = world if data is None else _store_world(data)
    train_cfg = TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,  # type: ignore[arg-type]
        loss=recommended_loss(source, **_json_overrides(loss, "--loss")), compile=compile_step,
    )  # fmt: skip
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
    log = typer.echo if main_rank else (lambda _: None)
    if data is None:
        train_world(world, out, model_cfg, train_cfg, 200 if episodes is None else episodes, resume=resume, log=log, overwrite=overwrite)
    else:
        fit = "patch" not in dit_overrides
        train_store(data, out, model_cfg, train_cfg, resume=resume, log=log, fit=fit, overwrite=overwrite)
    log(f"checkpoint: {out / 'checkpoint'}")


def _store_world(path: Path) -> str:
    from diffworld.data.store import EpisodeStore

    return EpisodeStore.open(path, validate=False).spec.name


@app.command("eval")
@friendly
def eval_cmd(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, or the name of a shipped model (e.g. pong)."),
    out: Path = typer.Option(Path("eval"), help="Directory for metrics.json and horizon.png."),
    cases: Optional[int] = typer.Option(None, help="Held-out forecast start points (default: 64; lorenz96/fields: 32)."),
    members: Optional[int] = typer.Option(None, help="Ensemble members (default: 16)."),
    horizon: Optional[int] = typer.Option(None, help="Leads 1..horizon (default: 16; lorenz96/fields: 48)."),
    seed: int = typer.Option(0),
    seed_offset: int = typer.Option(0, help="Offset of the held-out episode seeds (500000: the validation set; games only)."),
    validation: bool = typer.Option(
        False, help="lorenz96/fields: forecast from the validation start dates (seeds 200000+), for choosing settings; the held-out dates only score the choice."
    ),
    steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the model's)."),
    method: Optional[str] = typer.Option(None, help="euler, heun or marginal (default: the model's)."),
    sigma_max: Optional[float] = typer.Option(None, help="Noise level sampling starts from (default: the model's)."),
    churn: Optional[float] = typer.Option(None, help="Stochastic churn of the sampler (default: the model's)."),
    sigma_ctx: Optional[float] = typer.Option(None, help="Context noise level (default: the model's)."),
    guidance: Optional[float] = typer.Option(None, help="Action guidance weight (default: the model's)."),
    guide: Optional[str] = typer.Option(
        None, help="lorenz96/fields: a weaker checkpoint of the same world (fewer steps, same data) that autoguides every forecast."
    ),
    guide_weight: Optional[float] = typer.Option(None, help="Autoguidance weight with --guide (default 2; 1: the model alone)."),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Evaluate a model on held-out episodes against persistence, climatology and the oracle
    (lorenz96 and fields: the forecast demo's weather-centre scores, AR(1) and free runs too)."""
    from rich.console import Console

    from diffworld.checks import check_device, check_output_dir
    from diffworld.evaluate.run import EvalConfig
    from diffworld.forecast_demo import evaluate_forecast_checkpoint
    from diffworld.forecast_demo import WORLDS as FORECAST_WORLDS
    from diffworld.model.world_model import WorldModel
    from diffworld.recipes import evaluate_checkpoint
    from diffworld.splits import VALIDATION_START_SEED_BASE

    check_output_dir(out, "--out")  # before any computing
    check_device(device)
    model = WorldModel.from_pretrained(checkpoint)
    sampler = _sampler(model.sampler, steps=steps, method=method, sigma_max=sigma_max, churn=churn, sigma_ctx=sigma_ctx, guidance=guidance)
    sizes = {k: v for k, v in dict(cases=cases, members=members, horizon=horizon).items() if v is not None}
    for name, value in sizes.items():
        least = 2 if name == "members" else 1  # fair CRPS and spread need two members
        if value < least:
            raise ValueError(f"--{name} must be at least {least}, got {value}")
    if model.spec.name in FORECAST_WORLDS and seed_offset:
        raise ValueError(f"--seed-offset is for game worlds; {model.spec.name} forecasts start from its held-out seeds (or, with --validation, its validation seeds)")
    if validation and model.spec.name not in FORECAST_WORLDS:
        raise ValueError(f"--validation is for lorenz96 and fields; a {model.spec.name} model's validation set is --seed-offset 500000")
    if validation:
        sizes["seed_base"] = VALIDATION_START_SEED_BASE
    if guide is not None and model.spec.name not in FORECAST_WORLDS:
        raise ValueError(f"--guide is for lorenz96 and fields; got a {model.spec.name} model")
    if guide is None and guide_weight is not None:
        raise ValueError("--guide-weight needs --guide, the checkpoint that guides")
    if (out / "metrics.json").exists():  # e.g. a demo's own directory: its scores would be lost
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    if model.spec.name in FORECAST_WORLDS:
        m = evaluate_forecast_checkpoint(checkpoint, out, sampler, device=device, log=typer.echo, guide=guide, **({} if guide_weight is None else {"guide_weight": guide_weight}), seed=seed, **sizes)
        _print_forecast_headline(m)
        typer.echo(f"wrote {out}/metrics.json, scores.png, spectra.png and {_forecast_picture(m['world'])} in {m['total_seconds']:.0f}s")
        return
    cfg = EvalConfig(seed=seed, seed_offset=seed_offset, **sizes)
    metrics = evaluate_checkpoint(checkpoint, out, cfg, sampler, device=device, log=typer.echo, policy=policy, world=world)
    print_summary(metrics, Console())
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'horizon.png'}")


@app.command()
@friendly
def rollout(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, or the name of a shipped model (e.g. pong)."),
    out: Path = typer.Option(Path("rollout.gif"), help="GIF to write."),
    frames: int = typer.Option(96, help="Frames of the free dream."),
    members: int = typer.Option(3, help="Dreams shown beside the truth."),
    seed: int = typer.Option(0),
    steps: Optional[int] = typer.Option(None),
    method: Optional[str] = typer.Option(None),
    sigma_max: Optional[float] = typer.Option(None),
    churn: Optional[float] = typer.Option(None),
    sigma_ctx: Optional[float] = typer.Option(None),
    guidance: Optional[float] = typer.Option(None),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Dream held-out futures and write them beside the truth as a GIF."""
    from diffworld.model.world_model import WorldModel, read_config, resolve_pretrained
    from diffworld.recipes import data_source, dream_gif

    directory = resolve_pretrained(checkpoint)
    source = data_source(read_config(directory), policy, world, str(directory))
    model = WorldModel.from_pretrained(checkpoint, device=device)
    sampler = _sampler(model.sampler, steps=steps, method=method, sigma_max=sigma_max, churn=churn, sigma_ctx=sigma_ctx, guidance=guidance)
    dream_gif(model, out, free_frames=frames, members=members, seed=seed, sampler=sampler, world=world, **source)
    typer.echo(f"wrote {out}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("demo"), help="Output directory."),
    world: str = typer.Option("pong"),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: the demo's, sized for ~10 minutes on 2 cores)."),
    preset: Optional[str] = typer.Option(None),
    episodes: Optional[int] = typer.Option(None),
    cases: Optional[int] = typer.Option(None, help="Held-out evaluation cases."),
    members: Optional[int] = typer.Option(None, help="Ensemble members in the evaluation."),
    batch_size: Optional[int] = typer.Option(None, help="Windows per optimizer step (default: the demo's)."),
    validate_every: Optional[int] = typer.Option(None, help="--world lorenz96/fields: early stopping on the climate of free runs every N steps (0: off)."),
    hub_members: Optional[int] = typer.Option(None, help="--world cascade: dreams per seed node for the hub ranking (default 64)."),
    device: str = typer.Option("cpu"),
    series: Optional[str] = typer.Option(None, help="--world market: an arch.data series by name (sp500, nasdaq, wti) or the path of a CSV of prices (date, price) holding a / or ending in .csv."),
) -> None:
    """Collect, train, evaluate and animate a world model: everything in one command."""
    from rich.console import Console

    from diffworld.forecast_demo import WORLDS as FORECAST_WORLDS
    from diffworld.recipes import DemoConfig, run_demo

    if validate_every is not None and world not in FORECAST_WORLDS:
        raise ValueError(f"--validate-every is for --world {' or '.join(FORECAST_WORLDS)}, got --world {world}")
    if hub_members is not None and world != "cascade":
        raise ValueError(f"--hub-members is for --world cascade, got --world {world}")
    train = functools.partial(_train_options, steps=steps, batch_size=batch_size, device=device)
    options = functools.partial(_demo_options, out=out, preset=preset, episodes=episodes, cases=cases, members=members, train=train)
    if world == "cascade":
        _cascade_demo(out, options, members, hub_members)
        return
    if world in FORECAST_WORLDS:
        _forecast_demo(out, world, options, validate_every)
        return
    if world == "market":
        _market_demo(out, preset, members, series, train)
        return
    if series is not None:
        raise ValueError(f"--series is for --world market, got --world {world}")
    cfg = DemoConfig(world=world)
    cfg = replace(
        cfg,
        preset=_given(preset, cfg.preset),
        episodes=_given(episodes, cfg.episodes),
        train=train(cfg.train),
        eval=replace(cfg.eval, cases=_given(cases, cfg.eval.cases), members=_given(members, cfg.eval.members)),
    )
    _refuse_existing_demo(out)
    metrics = run_demo(out, cfg, log=typer.echo)
    print_summary(metrics, Console())
    typer.echo(f"wrote {out}/metrics.json, horizon.png, rollout.gif and checkpoint/ in {metrics['total_seconds']:.0f}s")


def _refuse_existing_demo(out: Path) -> None:
    from diffworld.train import holds_run

    if holds_run(out):
        raise FileExistsError(f"{out} already holds a demo run; choose another --out or remove it")


def _given(value: Any, default: Any) -> Any:
    """An option's value where given (0 included: it is checked, not read as "not given"), else the default."""
    return default if value is None else value


def _train_options(cfg: Any, steps: Optional[int], batch_size: Optional[int], device: str) -> Any:
    """A demo's TrainConfig with the command line's --steps, --batch-size and --device on top."""
    return replace(cfg, steps=_given(steps, cfg.steps), batch_size=_given(batch_size, cfg.batch_size), device=device)


def _demo_options(
    cfg: Any,
    out: Path,
    preset: Optional[str],
    episodes: Optional[int],
    cases: Optional[int],
    members: Optional[int],
    train: Callable[[Any], Any],
) -> Any:
    """A cascade or forecast demo config with the command line's options on top; refuses an `out` that holds a run."""
    _refuse_existing_demo(out)
    return replace(
        cfg,
        preset=_given(preset, cfg.preset),
        episodes=_given(episodes, cfg.episodes),
        train=train(cfg.train),
        cases=_given(cases, cfg.cases),
        members=_given(members, cfg.members),
    )


def _cascade_demo(out: Path, options: Callable[[Any], Any], members: Optional[int], hub_members: Optional[int]) -> None:
    from diffworld.cascade_demo import CascadeDemoConfig, run_cascade_demo

    cfg = options(CascadeDemoConfig())
    cfg = replace(cfg, hub_members=_given(hub_members, min(_given(members, cfg.hub_members), cfg.hub_members)))
    m = run_cascade_demo(out, cfg, log=typer.echo)
    head = m["headline"]
    typer.echo(f"node Brier: model {head['node_brier_model']:.4f}, oracle {head['node_brier_oracle']:.4f} (ratio {head['node_brier_ratio']:.2f})")
    skill = head["infected_skill_vs_oracle"]
    typer.echo("infected-curve skill vs oracle by step: " + " ".join(f"{x:.2f}" for x in skill))
    typer.echo("hub Kendall tau: " + ", ".join(f"{k} {v:.2f}" for k, v in head["hub_kendall_tau"].items()))
    typer.echo(f"wrote {out}/metrics.json, spread.gif, curves.png, hubs.png and checkpoint/ in {m['total_seconds']:.0f}s")


def _forecast_demo(out: Path, world: str, options: Callable[[Any], Any], validate_every: Optional[int]) -> None:
    from diffworld.forecast_demo import ForecastDemoConfig, run_forecast_demo

    cfg = options(ForecastDemoConfig.for_world(world))
    if validate_every is not None:
        cfg = replace(cfg, validate_every=validate_every)
    m = run_forecast_demo(out, cfg, log=typer.echo)
    _print_forecast_headline(m)
    typer.echo(f"wrote {out}/metrics.json, scores.png, spectra.png, {_forecast_picture(world)} and checkpoint/ in {m['total_seconds']:.0f}s")


def _forecast_picture(world: str) -> str:
    return "forecast.gif" if world == "fields" else "hovmoller.png"


def _print_forecast_headline(m: dict[str, Any]) -> None:
    """The forecast evaluation's headline numbers, one line each."""
    head = m["headline"]
    lead, n = m["lead_time"], head["headline_leads"]
    for name in ("model", "persistence", "ar1", "oracle"):
        c = head["crps_by_lead"][name]
        typer.echo(f"CRPS {name:>11}: " + " ".join(f"t={lead[i]:g} {c[i]:.3f}" for i in (0, n // 4, n // 2, n - 1)))
    verdict = "yes" if head["beats_persistence_and_ar1"] else f"no (first miss at lead {head['first_lead_not_beating']})"
    typer.echo(f"model beats persistence and AR(1) at every lead to {lead[n - 1]:g}: {verdict}")
    typer.echo(f"free run: mean off by {head['free_run_mean_rel_error']:.1%}, variance by {head['free_run_var_rel_error']:.1%}")
    typer.echo(f"skill vs oracle to lead {head['oracle_saturation_lead']} (saturation): min {head['skill_vs_oracle_min_to_saturation']:.2f}")
    lo, hi = head["spread_skill_range_to_saturation"]
    o_lo, o_hi = head["oracle_spread_skill_range_to_saturation"]
    typer.echo(f"spread/skill to saturation: {lo:.2f}..{hi:.2f} (the oracle's {o_lo:.2f}..{o_hi:.2f}); forecast/truth spectrum: {head['spectrum_ratio_range'][0]:.2f}..{head['spectrum_ratio_range'][1]:.2f}")
    for line in event_lines(m.get("events")):
        typer.echo(line)


def _market_demo(out: Path, preset: Optional[str], members: Optional[int], series: Optional[str], train: Callable[[Any], Any]) -> None:
    from diffworld.market_demo import MarketDemoConfig, run_market_demo

    _refuse_existing_demo(out)
    cfg = MarketDemoConfig()
    cfg = replace(
        cfg, preset=_given(preset, cfg.preset), train=train(cfg.train), members=_given(members, cfg.members), series=_given(series, cfg.series),
    )  # fmt: skip
    m = run_market_demo(out, cfg, log=typer.echo)
    head = m["headline"]
    typer.echo(f"test period {m['test_period'][0]}..{m['test_period'][1]}, one day ahead:")
    for name, c in head["crps"].items():
        k, h = head["kupiec_p"][name], head["hits"][name]
        typer.echo(f"  {name:>16}: CRPS {c:.4f}  hits 1% {h['1%']:>3} (Kupiec p {k['1%']:.3f})  hits 5% {h['5%']:>3} (Kupiec p {k['5%']:.3f})")
    ratio = head["stylised_ratio_model_to_real"]
    typer.echo(f"model CRPS / GJR-GARCH-t: {head['model_crps_over_gjr_garch_t']:.4f}; stylised facts model/real: kurtosis {ratio['kurtosis']:.2f}, |r| autocorrelation {ratio['abs_acf']:.2f}")
    typer.echo(f"wrote {out}/metrics.json, backtest.md, fan_chart.png, var_backtest.png and checkpoint/ in {m['total_seconds']:.0f}s")


@app.command()
@friendly
def scenarios(
    checkpoint: Path = typer.Argument(..., help="A market model's checkpoint directory."),
    series: str = typer.Option("sp500", help="An arch.data series by name (sp500, nasdaq, wti) or the path of a CSV of prices (date, price) holding a / or ending in .csv."),
    date: Optional[str] = typer.Option(None, help="Scenarios for the days after this day, YYYY-MM-DD (default: the last day of the series)."),
    horizon: int = typer.Option(10, help="Days ahead."),
    n: int = typer.Option(1000, help="Scenario paths."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Write the paths here as .npy [n, horizon] (100·log-returns)."),
) -> None:
    """Draw return scenarios h days ahead from a date; print one-day and h-day VaR and ES at 1% and 5%."""
    import numpy as np
    import torch

    from diffworld.checks import check_output_file
    from diffworld.market_demo import history_until, load_series, path_risk
    from diffworld.market_demo import scenarios as draw
    from diffworld.model.world_model import WorldModel

    if out is not None:
        if out.exists():
            raise FileExistsError(f"{out} exists; choose another --out")
        check_output_file(out, "--out", suffixes=(".npy",))
    model = WorldModel.from_pretrained(checkpoint)
    if model.spec.name != "market" or model.spec.frame_shape[0] != 1:
        raise ValueError(f"{checkpoint}: expected a one-asset market model, found world {model.spec.name!r} with frames {list(model.spec.frame_shape)}")
    history = history_until(load_series(series), date, series)
    paths = draw(model, history.to_numpy(), horizon, n, generator=torch.Generator().manual_seed(seed))[:, :, 0]
    typer.echo(f"{n} paths of {horizon} days after {history.index[-1].date()} ({series}), 100·log-returns:")
    for key, value in path_risk(paths).items():
        typer.echo(f"  {key:>12}: {value:8.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, paths)
        typer.echo(f"wrote {out}")


@app.command()
@friendly
def play(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, or the name of a shipped model (e.g. pong)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000),
    fps: float = typer.Option(30.0, help="Target frames per second of each session (1..120)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    max_sessions: int = typer.Option(32, help="Players at once."),
    threads: int = typer.Option(1, help="Torch CPU threads (1 suits a small model on a small machine)."),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
    allow_origin: Optional[list[str]] = typer.Option(
        None, help="Another site (scheme://host[:port]) whose pages may open sessions; repeatable (default: none)."
    ),
) -> None:
    """Play a learned world in the browser: the dream live, beside the true game under the same actions."""
    try:
        from diffworld.play.server import serve
    except ImportError as e:
        raise ValueError(f"play needs fastapi and uvicorn ({e}): pip install 'diffworld[play]'") from None
    from diffworld.model.world_model import resolve_pretrained

    resolve_pretrained(checkpoint)  # a missing checkpoint fails here, before anything loads
    serve(
        checkpoint, host=host, port=port, fps=fps, device=device, max_sessions=max_sessions, threads=threads,
        log=typer.echo, world=world, allow_origins=tuple(allow_origin or ()),
    )  # fmt: skip


@app.command()
@friendly
def heads(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, or the name of a shipped model (e.g. pong)."),
    out: Optional[Path] = typer.Option(None, help="Where to save the heads (default: CHECKPOINT/heads)."),
    episodes: int = typer.Option(200, help="Training episodes (the checkpoint's training seeds)."),
    held_out: int = typer.Option(100, help="Held-out episodes to score the heads on."),
    steps: int = typer.Option(2000, help="Training steps."),
    batch_size: int = typer.Option(128),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Train reward and episode-end heads for a checkpoint's world; score them on held-out episodes."""
    from diffworld.heads import HeadsConfig
    from diffworld.recipes import train_checkpoint_heads

    config = HeadsConfig(steps=steps, batch_size=batch_size, seed=seed)
    train_checkpoint_heads(checkpoint, out, config, episodes, held_out, device, log=typer.echo, policy=policy, world=world)


@app.command()
@friendly
def agent(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory with heads/ (see `diffworld heads`), or a shipped model (pong)."),
    out: Path = typer.Option(..., help="Directory for metrics.json and the two agents."),
    steps: int = typer.Option(100_000, help="Environment steps of each agent's training."),
    envs: int = typer.Option(16, help="Dreams (and real games) stepped together."),
    dream_steps: int = typer.Option(50, help="Dreamed steps after which a dream episode is cut."),
    episodes: int = typer.Option(100, help="Held-out real episodes each policy is scored on."),
    heads_dir: Optional[Path] = typer.Option(None, "--heads", help="Heads directory (default: CHECKPOINT/heads)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Train an agent only in the dream, the same agent on the real game, and score both beside a random policy."""
    from diffworld.agent import PPOConfig
    from diffworld.recipes import AgentConfig, dream_agent

    config = AgentConfig(ppo=PPOConfig(steps=steps, seed=seed), num_envs=envs, dream_steps=dream_steps, eval_episodes=episodes)
    dream_agent(checkpoint, out, config, heads_dir, device, log=typer.echo, policy=policy, world=world)
    typer.echo(f"wrote {out / 'metrics.json'}")


def print_summary(metrics: dict[str, Any], console: Any) -> None:
    """A table of the headline numbers of an evaluation."""
    from rich.table import Table

    columns = [  # (summary key, heading, format): only those the evaluation produced
        ("state_crps", "state CRPS (mean over h)", ".3f"),
        ("cell_f1", "cell F1 (mean over h)", ".3f"),
        ("pixel_crps", "pixel CRPS", ".4f"),
    ]
    summary = metrics["summary"]
    columns = [c for c in columns if any(c[0] in s for s in summary.values())]
    table = Table("forecaster", *(c[1] for c in columns), title=f"{metrics['world']}: held-out")
    for name, s in summary.items():
        table.add_row(name, *(format(s.get(key, float("nan")), fmt) for key, _, fmt in columns))
    console.print(table)
    if "state_skill_vs_oracle" in metrics:
        skill = metrics["state_skill_vs_oracle"]
        console.print(f"state skill vs oracle by horizon: min {min(skill):.2f}, " + " ".join(f"{x:.2f}" for x in skill))
    if "cell_f1_skill_vs_oracle" in metrics:
        skill = metrics["cell_f1_skill_vs_oracle"]
        console.print(f"cell-F1 skill vs oracle by horizon: min {min(skill):.2f}, " + " ".join(f"{x:.2f}" for x in skill))
    for key in ("valid_frac", "action_fidelity", "rollout_fps", "evaluations_per_frame"):
        if key in metrics:
            console.print(f"{key}: {metrics[key]:.3f}")
    for line in event_lines(metrics.get("events")):
        console.print(line, highlight=False, soft_wrap=True)


def event_lines(events: dict[str, Any] | None) -> list[str]:
    """The chance events of an evaluation in a few lines: the model's numbers beside the oracle's."""
    if not events:
        return []

    def both(read: Callable[[dict[str, Any]], Any], numbers: dict[str, Any], fmt: str = ".3f") -> str:
        values = (read(numbers[name]) for name in ("model", "oracle"))
        return " / ".join("-" if v is None else format(v, fmt) for v in values)

    mean = lambda xs: sum(xs) / len(xs)
    lines = ["events, model / oracle from the same held-out starts:"]
    if "births" in events:
        b = events["births"]
        lines.append(
            f"  births a frame, mean over h = 1..{len(b['model']['rate'])}: {both(lambda r: mean(r['rate']), b)} "
            f"(h = 1: {both(lambda r: r['rate'][0], b)}; persistence {mean(b['persistence']['rate']):.3f})"
        )
    if "serve" in events:
        sv = events["serve"]
        lines.append(
            f"  serve, {sv['model']['frames']} draws from {sv['moments']} moments: valid ball {both(lambda r: r['served'], sv)}, "
            f"no ball {both(lambda r: r['no_ball'], sv)}, rows vs uniform chi-square p {both(lambda r: r['p'], sv)}"
        )
    if "source_births" in events:
        sb, wind = events["source_births"], events["wind"]
        at_birth = lambda r: None if r["strength_by_age"] is None else r["strength_by_age"][0]
        lines.append(
            f"  source births a step {both(lambda r: mean(r['rate']), sb)}, emission at birth {both(at_birth, sb, '.2f')}; "
            f"wind turns a step {both(lambda r: r['turns_a_step'], wind)}"
        )
    return lines


def main() -> None:
    """Entry point of the `diffworld` script."""
    app()


if __name__ == "__main__":
    main()
