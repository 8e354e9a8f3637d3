"""The `diffworld` command line: a thin typer front over `diffworld.recipes` and `diffworld.domains`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from diffworld.splits import GAME_VALIDATION_OFFSET, VALIDATION_START_SEED_BASE


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
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    KeyError,
)


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
ADAPTIVE_HELP = (
    "Binary and categorical worlds: redraw a frame whose one-step draw is uncertain with this many Euler steps "
    "(0: never; default: the model's)."
)
POLICY_HELP = (
    "Policy that plays the real episodes: random, default or package.module:function (default: the one the "
    "checkpoint's data was collected with; a package.module:function it names runs only if passed here)."
)
WORLD_HELP = "The checkpoint's world, when its name imports a module (gym:<module>:<env id>): allows that import."


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
    """List the worlds of every domain."""
    from rich.console import Console
    from rich.table import Table

    from diffworld.domains import domains

    table = Table("name", "domain", "layout", "frame", "values", "actions")
    for domain in domains():
        for name, spec in domain.worlds():
            if spec is None:  # an adapter's family: each game has its own spec
                table.add_row(name, domain.name, "grid", "from the game", "", "")
                continue
            acts = {"none": "none", "discrete": f"discrete {spec.action.n} {list(spec.action.names)}"}.get(
                spec.action.kind, f"{spec.action.kind} {spec.action.n}"
            )
            table.add_row(name, domain.name, spec.layout, "×".join(map(str, spec.frame_shape)), spec.value_kind, acts)
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
    options: Optional[str] = typer.Option(None, help="JSON options of the source, e.g. '{\"grayscale\": true}'."),
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
    typer.echo(
        f"{out}: {len(store)} episodes, {store.num_frames} frames of {store.spec.name} {list(store.spec.frame_shape)}"
    )


@app.command("import-cascades")
@friendly
def import_cascades_command(
    table: Path = typer.Argument(..., help="Cascade table (.csv or .tsv) with cascade, node and time columns."),
    graph: str = typer.Option(..., help="The graph: a file (.csv, .tsv, .txt, .graphml, .gexf) or a built-in name."),
    step: float = typer.Option(..., help="Duration of one step, in the table's time units."),
    out: Path = typer.Option(..., help="Episode store (Zarr) to create."),
    directed: bool = typer.Option(False, help="Read an edge-list graph's edges as source -> target."),
) -> None:
    """Turn observed cascades (who was reached, and when) on a graph into an episode store to train on."""
    from diffworld.data.cascades import import_cascades

    store = import_cascades(out, table, graph, step, directed)
    typer.echo(f"{out}: {len(store)} cascades, {store.num_frames} frames of {list(store.spec.frame_shape)}")


@app.command("train")
@friendly
def train_cmd(
    out: Path = typer.Option(..., help="Run directory: checkpoint/ and train_log.jsonl are written here."),
    data: Optional[Path] = typer.Option(
        None, help="Episode store to train on (see `diffworld collect`); else --world is collected."
    ),
    world: Optional[str] = typer.Option(
        None, help="Built-in world to collect and learn when no --data is given (default pong)."
    ),
    episodes: Optional[int] = typer.Option(
        None, help="Training episodes to collect (seeds 0..N-1), without --data (default 200)."
    ),
    preset: Optional[str] = typer.Option(
        None, help="Model size: tiny, small (the default) or base; with --init, that model's own."
    ),
    dit: Optional[str] = typer.Option(
        None,
        help="JSON overrides of the model preset, e.g. '{\"patch\": 8}'; "
        '"target": "change" diffuses each frame\'s change from the one before.',
    ),
    steps: int = typer.Option(2000, help="Optimizer steps."),
    batch_size: int = typer.Option(16, help="Windows per step, over all processes."),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast)."),
    compile_step: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile the training step: a minute or so of compiling, "
        "then faster steps (needs a C++ compiler on CPU).",
    ),
    loss: Optional[str] = typer.Option(
        None, help="JSON overrides of the world's recommended loss config, e.g. '{\"event_weight\": 0}'."
    ),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Train a new model in place of the run OUT holds (its model is lost)."),
    init: Optional[str] = typer.Option(
        None,
        help="Start from a trained model of the same world (checkpoint directory or shipped name) "
        "and fine-tune it; parts it lacks (a chance code) start fresh.",
    ),
    train_only: Optional[str] = typer.Option(
        None,
        help="Train only the parameters whose names start with these comma-separated prefixes "
        "(e.g. denoiser.net.chance.event: a chance model's event head); the rest stays frozen.",
    ),
    fresh: Optional[str] = typer.Option(
        None,
        help="With --init: the parts whose names start with these comma-separated prefixes start fresh "
        "instead of from its weights, so their shape may differ (e.g. denoiser.net.chance.codebook).",
    ),
    subgraph_nodes: int = typer.Option(
        0,
        help="Graph worlds: train each step on a subgraph of about this many nodes (random nodes with all "
        "their neighbours) instead of the whole graph; 0: the whole graph.",
    ),
) -> None:
    """Train a world model on an episode store, or on freshly collected episodes of a built-in world.

    Runs on several processes unchanged under torchrun, e.g.
    `torchrun --nproc_per_node=2 -m diffworld train --data STORE --out RUN`.
    """
    from diffworld.model.world_model import ModelConfig
    from diffworld.recipes import init_config, recommended_loss, train_store, train_world
    from diffworld.train import TrainConfig

    if data is not None:  # the store names its world and holds its episodes: a --world or --episodes would go unused
        for name, value in (("--world", world), ("--episodes", episodes)):
            if value is not None:
                raise ValueError(
                    f"{name} is for training without --data (the world is collected); "
                    f"the store {data} names its own world and episodes"
                )
        if not data.exists():
            raise FileNotFoundError(f"no episode store at {data}")
    world = world or "pong"
    dit_overrides = _json_overrides(dit, "--dit")
    fresh_parts = prefixes(fresh)
    if fresh_parts and init is None:
        raise ValueError("--fresh names parts of the --init model that start fresh; give --init too")
    if init is not None:
        if preset is not None:
            raise ValueError("--init trains the model it names at its own size; drop --preset (--dit still applies)")
        model_cfg = init_config(init, dit_overrides)
    else:
        model_cfg = ModelConfig.preset(preset or "small", **dit_overrides)
    source = world if data is None else _store_world(data)
    train_cfg = TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,  # type: ignore[arg-type]
        loss=recommended_loss(source, **_json_overrides(loss, "--loss")), compile=compile_step,
        train_only=prefixes(train_only), subgraph_nodes=subgraph_nodes,
    )  # fmt: skip
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
    log = typer.echo if main_rank else (lambda _: None)
    if data is None:
        train_world(
            world,
            out,
            model_cfg,
            train_cfg,
            200 if episodes is None else episodes,
            resume=resume,
            log=log,
            overwrite=overwrite,
            init=init,
            fresh=fresh_parts,
        )
    else:
        fit = "patch" not in dit_overrides
        train_store(
            data, out, model_cfg, train_cfg, resume=resume, log=log, fit=fit, overwrite=overwrite, init=init,
            fresh=fresh_parts,
        )  # fmt: skip
    log(f"checkpoint: {out / 'checkpoint'}")


@app.command("recipe")
@friendly
def recipe_cmd(
    recipe: str = typer.Argument(
        ..., help="A recipe file (TOML: the data, the stages, the final sampler) or a shipped model's name."
    ),
    out: Path = typer.Option(..., help="Run directory: stages/<name>/ per stage, checkpoint/ for the final model."),
    resume: bool = typer.Option(False, help="Skip the stages trained already and continue the one under way."),
    overwrite: bool = typer.Option(False, help="Train every stage again in place of the run OUT holds."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Train a staged recipe (several runs, each starting from the one before) in one command.

    `diffworld recipe pong --out runs/pong` retrains the shipped `pong` model from nothing.
    """
    from diffworld.stages import read_recipe, run_recipe

    final = run_recipe(read_recipe(recipe), out, resume=resume, overwrite=overwrite, device=device, log=typer.echo)
    typer.echo(f"checkpoint: {final}")


def prefixes(text: str | None) -> tuple[str, ...]:
    """Comma-separated parameter-name prefixes -> a tuple of them (none for None)."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _store_world(path: Path) -> str:
    from diffworld.data.store import EpisodeStore

    return EpisodeStore.open(path, validate=False).spec.name


@app.command("eval")
@friendly
def eval_cmd(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, or the name of a shipped model (e.g. pong)."),
    out: Path = typer.Option(Path("eval"), help="Directory for metrics.json and the domain's pictures."),
    cases: Optional[int] = typer.Option(
        None, help="Held-out forecast start points (default: the domain's; games 64, lorenz96/fields 32)."
    ),
    members: Optional[int] = typer.Option(None, help="Ensemble members (default: the domain's)."),
    horizon: Optional[int] = typer.Option(
        None, help="Leads 1..horizon (default: the domain's; games 16, lorenz96/fields 48)."
    ),
    seed: int = typer.Option(0),
    seed_offset: Optional[int] = typer.Option(
        None,
        help=f"Games and cascade: offset of the held-out episode seeds ({GAME_VALIDATION_OFFSET}: the validation set).",
    ),
    validation: bool = typer.Option(
        False,
        help=f"lorenz96/fields: forecast from the validation start dates (seeds {VALIDATION_START_SEED_BASE}+), "
        "for choosing settings; the held-out dates only score the choice.",
    ),
    steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the model's)."),
    method: Optional[str] = typer.Option(None, help="euler, heun, marginal or chance (default: the model's)."),
    sigma_max: Optional[float] = typer.Option(None, help="Noise level sampling starts from (default: the model's)."),
    churn: Optional[float] = typer.Option(None, help="Stochastic churn of the sampler (default: the model's)."),
    sigma_ctx: Optional[float] = typer.Option(None, help="Context noise level (default: the model's)."),
    guidance: Optional[float] = typer.Option(None, help="Action guidance weight (default: the model's)."),
    adaptive_steps: Optional[int] = typer.Option(None, help=ADAPTIVE_HELP),
    event_shift: Optional[float] = typer.Option(
        None, help="chance: log odds added to the event logit (default: the model's correction to the data's rate)."
    ),
    guide: Optional[str] = typer.Option(
        None,
        help="lorenz96/fields: a weaker checkpoint of the same world (fewer steps, same data) "
        "that autoguides every forecast.",
    ),
    guide_weight: Optional[float] = typer.Option(
        None, help="Autoguidance weight with --guide (default 2; 1: the model alone)."
    ),
    series: Optional[str] = typer.Option(
        None, help="market: the series whose test period is backtested (default sp500; a name or a CSV path)."
    ),
    data: Optional[str] = typer.Option(
        None, help="cascade models of observed cascades: the store of held-out cascades (diffworld import-cascades)."
    ),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Evaluate a model on held-out data with its domain's protocol: games against persistence, climatology
    and the oracle; lorenz96 and fields like a weather centre; cascade on epidemics and hubs; market as a VaR
    backtest."""
    from diffworld.checks import check_device, check_output_dir
    from diffworld.domains import EvalOptions, check_options, domain_of, domains
    from diffworld.model.world_model import read_config, resolve_pretrained

    check_output_dir(out, "--out")  # before any computing
    check_device(device)
    sizes = {k: v for k, v in dict(cases=cases, members=members, horizon=horizon).items() if v is not None}
    for name, value in sizes.items():
        least = 2 if name == "members" else 1  # fair CRPS and spread need two members
        if value < least:
            raise ValueError(f"--{name} must be at least {least}, got {value}")
    config = read_config(resolve_pretrained(checkpoint))
    name = config["spec"]["name"]
    domain = domain_of(name)
    sampler = {k: v for k, v in dict(
        steps=steps, method=method, sigma_max=sigma_max, churn=churn, sigma_ctx=sigma_ctx, guidance=guidance,
        adaptive_steps=adaptive_steps, event_shift=event_shift,
    ).items() if v is not None}  # fmt: skip
    options = EvalOptions(
        sampler=sampler, device=device, seed=seed, **sizes, seed_offset=seed_offset, validation=validation, guide=guide,
        guide_weight=guide_weight, policy=policy, world=world, series=series, data=data, log=typer.echo,
    )  # fmt: skip
    check_options(domain, name, options, domains())
    if (out / "metrics.json").exists():  # e.g. a demo's own directory: its scores would be lost
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    metrics = domain.evaluate(checkpoint, out, options)
    domain.print_summary(metrics)
    typer.echo(_wrote(out, domain.outputs(name, demo=False), metrics.get("total_seconds")))


def _wrote(out: Path, files: list[str], seconds: Optional[float]) -> str:
    """The last line of a command that wrote `files` into `out` (those of them that are there)."""
    files = [f for f in files if (out / f).exists()] or files
    listed = files[0] if len(files) == 1 else ", ".join(files[:-1]) + " and " + files[-1]
    return f"wrote {out}/{listed}" + ("" if seconds is None else f" in {seconds:.0f}s")


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
    adaptive_steps: Optional[int] = typer.Option(None, help=ADAPTIVE_HELP),
    device: str = typer.Option("cpu"),
    policy: Optional[str] = typer.Option(None, help=POLICY_HELP),
    world: Optional[str] = typer.Option(None, help=WORLD_HELP),
) -> None:
    """Dream held-out futures and write them beside the truth as a GIF."""
    from diffworld.domains.games.pictures import dream_gif
    from diffworld.model.world_model import WorldModel, read_config, resolve_pretrained
    from diffworld.recipes import data_source

    directory = resolve_pretrained(checkpoint)
    source = data_source(read_config(directory), policy, world, str(directory))
    model = WorldModel.from_pretrained(checkpoint, device=device)
    settings = dict(
        steps=steps, method=method, sigma_max=sigma_max, churn=churn, sigma_ctx=sigma_ctx, guidance=guidance,
        adaptive_steps=adaptive_steps,
    )  # fmt: skip
    sampler = replace(model.sampler, **{k: v for k, v in settings.items() if v is not None})
    dream_gif(model, out, free_frames=frames, members=members, seed=seed, sampler=sampler, world=world, **source)
    typer.echo(f"wrote {out}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("demo"), help="Output directory."),
    world: str = typer.Option(
        "pong", help="The world whose domain's demo runs: pong (or another game), cascade, lorenz96, fields or market."
    ),
    steps: Optional[int] = typer.Option(
        None, help="Optimizer steps (default: the demo's, sized for ~10 minutes on 2 cores)."
    ),
    preset: Optional[str] = typer.Option(None),
    episodes: Optional[int] = typer.Option(None),
    cases: Optional[int] = typer.Option(None, help="Held-out evaluation cases."),
    members: Optional[int] = typer.Option(None, help="Ensemble members in the evaluation."),
    batch_size: Optional[int] = typer.Option(None, help="Windows per optimizer step (default: the demo's)."),
    validate_every: Optional[int] = typer.Option(
        None, help="--world lorenz96/fields: early stopping on the climate of free runs every N steps (0: off)."
    ),
    hub_members: Optional[int] = typer.Option(
        None, help="--world cascade: dreams per seed node for the hub ranking (default 64)."
    ),
    device: str = typer.Option("cpu"),
    series: Optional[str] = typer.Option(
        None,
        help="--world market: an arch.data series by name (sp500, nasdaq, wti) "
        "or the path of a CSV of prices (date, price) holding a / or ending in .csv.",
    ),
) -> None:
    """Collect, train, evaluate and animate a world model: everything in one command."""
    from diffworld.domains import DemoOptions, check_options, domain_of, domains

    domain = domain_of(world)
    options = DemoOptions(
        steps=steps, preset=preset, episodes=episodes, cases=cases, members=members, batch_size=batch_size,
        device=device, validate_every=validate_every, hub_members=hub_members, series=series, log=typer.echo,
    )  # fmt: skip
    check_options(domain, world, options, domains())
    metrics = domain.demo(world, out, options)
    domain.print_summary(metrics)
    typer.echo(_wrote(out, domain.outputs(world, demo=True), metrics.get("total_seconds")))


@app.command()
@friendly
def scenarios(
    checkpoint: Path = typer.Argument(..., help="A market model's checkpoint directory."),
    series: str = typer.Option(
        "sp500",
        help="An arch.data series by name (sp500, nasdaq, wti) "
        "or the path of a CSV of prices (date, price) holding a / or ending in .csv.",
    ),
    date: Optional[str] = typer.Option(
        None, help="Scenarios for the days after this day, YYYY-MM-DD (default: the last day of the series)."
    ),
    horizon: int = typer.Option(10, help="Days ahead."),
    n: int = typer.Option(1000, help="Scenario paths."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Write the paths here as .npy [n, horizon] (100·log-returns)."),
) -> None:
    """Draw return scenarios h days ahead from a date; print one-day and h-day VaR and ES at 1% and 5%."""
    import numpy as np

    from diffworld.checks import check_output_file
    from diffworld.domains.markets.scenarios import checkpoint_scenarios, path_risk

    if out is not None:
        if out.exists():
            raise FileExistsError(f"{out} exists; choose another --out")
        check_output_file(out, "--out", suffixes=(".npy",))
    paths, history = checkpoint_scenarios(checkpoint, series, date, horizon, n, seed)
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
    from diffworld.agents.heads import HeadsConfig
    from diffworld.domains.games.agents import train_checkpoint_heads

    config = HeadsConfig(steps=steps, batch_size=batch_size, seed=seed)
    train_checkpoint_heads(
        checkpoint, out, config, episodes, held_out, device, log=typer.echo, policy=policy, world=world
    )


@app.command()
@friendly
def agent(
    checkpoint: str = typer.Argument(
        ..., help="Checkpoint directory with heads/ (see `diffworld heads`), or a shipped model (pong)."
    ),
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
    from diffworld.agents.ppo import PPOConfig
    from diffworld.domains.games.agents import AgentConfig, dream_agent

    config = AgentConfig(
        ppo=PPOConfig(steps=steps, seed=seed), num_envs=envs, dream_steps=dream_steps, eval_episodes=episodes
    )
    dream_agent(checkpoint, out, config, heads_dir, device, log=typer.echo, policy=policy, world=world)
    typer.echo(f"wrote {out / 'metrics.json'}")


def main() -> None:
    """Entry point of the `diffworld` script."""
    app()


if __name__ == "__main__":
    main()
