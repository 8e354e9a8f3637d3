"""Training: AdamW with warmup and cosine decay, gradient clipping, EMA weights, checkpoints, resume.

A run directory holds
    checkpoint/model.safetensors, config.json   the EMA model (what you sample with)
    checkpoint/train_state.safetensors, .json   raw weights, optimizer, random state, step
    train_log.jsonl                             one JSON line per logging interval

A trained model is never replaced unless asked: a run directory that holds a checkpoint is
refused, unless the run is resumed (which needs its training state, readable) or `overwrite`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from diffworld import distributed
from diffworld.checks import MAX_SEED, check_device, check_int, check_number, check_output_dir
from diffworld.data.episodes import Episode, frame_stats
from diffworld.data.store import EpisodeStore
from diffworld.data.windows import WindowSampler, flatten
from diffworld.diffusion.chance import chance_loss, draw_chance_noise
from diffworld.diffusion.loss import (
    LossConfig,
    Subgraph,
    draw_loss_noise,
    noised_loss,
    unforeseen_frequency,
    unforeseen_pixels,
)
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.evaluate.events import births, born_cells, occupied
from diffworld.model.world_model import ModelConfig, WorldModel, check_compiler, read_config
from diffworld.spec import WorldSpec
from diffworld.worlds import sampler_defaults

#: What a model trains on: episodes in memory, or an episode store on disk.
TrainingData = list[Episode] | EpisodeStore


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    #: Linear warmup steps, then cosine decay to min_lr_ratio·lr at the last step.
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    #: EMA decay of the sampling weights (ramped up from 0 over the first steps).
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    device: str = "cpu"
    #: "bf16" runs the forward and backward passes under bfloat16 autocast.
    precision: Literal["fp32", "bf16"] = "fp32"
    loss: LossConfig = field(default_factory=LossConfig)
    #: Run the training step's forward and backward through `torch.compile` (inductor): some tens
    #: of seconds of compiling at the first step (a few with inductor's on-disk cache warm), then
    #: fused kernels for the elementwise work around the matmuls (the demo's step: 1.15-1.19x
    #: the eager steps/s on a 2-core AMD CPU; none on the sessions' first CPU: docs/research-log.md). On a CPU
    #: it needs a C++ compiler. The model, its EMA and the checkpoints are the eager modules: the
    #: compiled step shares their parameters.
    compile: bool = False
    #: Train only the parameters whose names start with one of these (e.g.
    #: "denoiser.net.chance.event", the chance prior's event head); the rest stays as it was
    #: (fine-tuning a part of a trained model). Empty: train everything.
    train_only: tuple[str, ...] = ()
    #: Graph worlds: train each step on a subgraph of about this many nodes (0: the whole graph):
    #: nodes with all their neighbours, those near where the windows' first frames show activity
    #: first (`active_nodes`), scored where the whole neighbourhood is present (`draw_subgraph`);
    #: the model still dreams on the whole graph. For graphs too large to train on whole.
    subgraph_nodes: int = 0

    def __post_init__(self) -> None:
        for name, least in (
            ("steps", 1), ("batch_size", 1), ("warmup", 0), ("log_every", 1), ("checkpoint_every", 1),
            ("subgraph_nodes", 0),
        ):  # fmt: skip
            check_int(f"train {name}", getattr(self, name), least)
        check_int("train seed", self.seed, 0, MAX_SEED)
        check_number("train lr", self.lr, above=0.0)
        check_number("train min_lr_ratio", self.min_lr_ratio, least=0.0, most=1.0)
        check_number("train weight_decay", self.weight_decay, least=0.0)
        check_number("train grad_clip", self.grad_clip, above=0.0)
        check_number("train ema_decay", self.ema_decay, least=0.0, below=1.0)
        check_device(self.device, "train device")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        if self.compile:  # here, so every caller stops before collecting or training
            check_compiler(self.device)
        if not isinstance(self.train_only, tuple) or not all(isinstance(p, str) and p for p in self.train_only):
            raise ValueError(f"train_only: expected a tuple of parameter-name prefixes, got {self.train_only!r}")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is native on `device`: a CPU with bf16 matmul kernels (AVX-512 or
    AMX); other devices are not checked (True). On an AVX2-only CPU it is emulated: a
    1024×384 → 1536 linear ran 5× slower than in fp32 (19 vs 100 GFLOP/s, 2-core AMD EPYC)."""
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # torch without the probe: assume the best, do not warn
        return True


class StopTraining(Exception):
    """Raised by a `validate` hook of `train` to end the run after this check (e.g. a target reached).

    The run saves its checkpoint at that step and returns as if `steps` were reached; `score`
    is the check's score, kept like any other for early stopping.
    """

    def __init__(self, score: float) -> None:
        super().__init__(f"training stopped by the validation hook (score {score})")
        self.score = score


@dataclass
class TrainResult:
    """What a finished (or resumed and finished) run produced."""

    model: WorldModel  # EMA weights
    steps: int
    seconds: float  # wall time of the optimisation, summed over resumed segments
    final_loss: float
    #: With early stopping: {"step", "validation"} of the returned (best) weights; else None.
    best: dict[str, float] | None = None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio·lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, over all parameters in one multi-tensor call."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def build_model(
    spec: WorldSpec, data: TrainingData, config: ModelConfig, sampler: SamplerConfig | None = None, seed: int = 0
) -> WorldModel:
    """A freshly initialised model with normalisation statistics from `data` (episodes or a store).

    Without `sampler`, the model samples with the settings its world recommends (`sampler_defaults`),
    with the chance sampler if it has a chance code.
    """
    if sampler is None:  # a model with a chance code draws with it; others as their world recommends
        sampler = SamplerConfig(
            **{**sampler_defaults(spec.name), **({"method": "chance"} if config.dit.chance else {})}
        )
    mean, std = frame_stats(data) if isinstance(data, list) else data.stats()
    if config.target == "change" and not config.change_std:
        config = replace(config, change_std=change_std(data, spec, std, config.sigma_data))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WorldModel(spec, config, mean, std, sampler)


def initialize_from(model: WorldModel, checkpoint: str | Path, fresh: tuple[str, ...] = ()) -> list[str]:
    """Copy the weights and normalisation of a trained model of the same world (a checkpoint directory or a
    shipped model's name) into `model`, to fine-tune it; parts only `model` has (a chance code) keep
    their fresh initialisation, except a chance decoder of its own, which starts as the source's
    backbone. So do the parts whose names start with a prefix in `fresh` (the source's are dropped,
    so their shape may differ: a chance code of more codes). Returns the fresh parts' tensor
    names; a one-line ValueError where the worlds or a shared tensor's shape differ, or a `fresh`
    prefix names no tensor of `model`."""
    source = WorldModel.from_pretrained(checkpoint)
    if source.spec != model.spec:
        raise ValueError(
            f"--init {checkpoint}: expected a model of the world {model.spec.name!r} "
            f"{list(model.spec.frame_shape)}, found one of {source.spec.name!r} {list(source.spec.frame_shape)}"
        )
    own, found = model.state_dict(), source.state_dict()
    check_prefixes(list(own), fresh, "--fresh", "tensor")
    found = {k: v for k, v in found.items() if not k.startswith(tuple(fresh))}
    extra = sorted(set(found) - set(own))
    if extra:
        raise ValueError(f"--init {checkpoint}: its tensors {extra[:3]} have no place in this model")
    for name, tensor in found.items():
        if own[name].shape != tensor.shape:
            raise ValueError(
                f"--init {checkpoint}: tensor {name} expected shape {list(own[name].shape)}, found {list(tensor.shape)}"
            )
    model.load_state_dict(found, strict=False)
    fresh = sorted(set(own) - set(found))
    # A chance decoder of its own starts as the source's backbone (`DiTConfig.chance_decoder`).
    trunk = {k: k.replace(".decoder.", ".", 1) for k in fresh if ".decoder." in k}
    start = {k: found[v] for k, v in trunk.items() if v in found and found[v].shape == own[k].shape}
    model.load_state_dict(start, strict=False)
    return [k for k in fresh if k not in start]


def change_std(data: TrainingData, spec: WorldSpec, std: np.ndarray, sigma_data: float) -> float:
    """RMS of one step's change in model units (frames scaled by σ_data / the channel's std), over
    every channel and every consecutive pair of frames within an episode of `data`."""
    shape = (-1,) + (1,) * (-1 - spec.channel_axis)  # per-channel scale, broadcast over a frame
    scale = (sigma_data / np.asarray(std, dtype=np.float64)).reshape(shape)
    total, count = 0.0, 0
    episodes = data if isinstance(data, list) else (data.episode(i) for i in range(len(data)))
    for episode in episodes:
        delta = np.diff(np.asarray(episode.frames, dtype=np.float64), axis=0) * scale
        total, count = total + float(np.square(delta).sum()), count + delta.size
    if count == 0 or not total > 0:
        raise ValueError(
            "a model that diffuses the change needs episodes of >= 2 frames that change; "
            f"found {count} changes, all zero"
        )
    return math.sqrt(total / count)


def freeze_all_but(model: WorldModel, prefixes: tuple[str, ...]) -> None:
    """Leave only the parameters whose names start with one of `prefixes` trainable (all of them if
    there are none: nothing is changed); the others keep requires_grad off after training. A
    one-line ValueError for a prefix that names no parameter."""
    if not prefixes:
        return
    check_prefixes([name for name, _ in model.named_parameters()], prefixes, "train_only", "parameter")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))


def check_prefixes(names: list[str], prefixes: tuple[str, ...], option: str, what: str) -> None:
    """A one-line ValueError for a prefix that starts none of `names`, with a few names near it."""
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            near = sorted({n.rsplit(".", 2)[0] for n in names if n.startswith(prefix.rsplit(".", 1)[0])})[:3]
            raise ValueError(f"{option}: no {what} of this model starts with {prefix!r} (some that do exist: {near})")


def make_optimizer(model: WorldModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices only (not biases, norms or
    embeddings' null vectors).

    The fused kernel updates all parameters in one pass (CPU and CUDA); on the demo's training
    step it and the multi-tensor EMA were ~10% faster than per-parameter loops (docs/research-log.md).
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=True)


def check_data(model: WorldModel, data: TrainingData) -> None:
    """Raise ValueError (one line) unless `data` fits the model's world: before any training starts."""
    if isinstance(data, list):
        if not data:
            raise ValueError("no training episodes")
        for i, e in enumerate(data):
            e.validate(model.spec, f"episode {i}")
        return
    spec, want = data.spec, model.spec
    for what in ("layout", "frame_shape", "action"):
        if getattr(spec, what) != getattr(want, what):
            raise ValueError(
                f"{data.path}: the model expects {what} {getattr(want, what)} (world {want.name!r}), "
                f"the store holds {getattr(spec, what)} (world {spec.name!r})"
            )
    if len(data) == 0:
        raise ValueError(f"{data.path}: the store holds no finished episode")


def train(
    model: WorldModel,
    data: TrainingData,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    validate: Callable[[WorldModel], float] | None = None,
    validate_every: int = 250,
    overwrite: bool = False,
) -> TrainResult:
    """Train `model` on windows of `data` (episodes or an EpisodeStore), writing checkpoints and a log to `out_dir`.

    Under `torchrun` each process trains on its slice of every global batch (`cfg.batch_size`
    windows in all) with DDP; rank 0 alone writes the log and the checkpoints.

    Early stopping: with `validate` (the EMA model -> a score, lower is better, e.g. CRPS on a
    validation period) the EMA weights are scored every `validate_every` steps and at the end;
    the best are saved to `out_dir/best/` (loadable with `WorldModel.from_pretrained`) and
    returned, and each score goes to the log as {"step", "validation"}. `checkpoint/` still holds
    the last state, so a resumed run goes on from there. A hook that raises `StopTraining(score)`
    ends the run after that check (checkpoint saved at that step).

    A `out_dir` that holds a run is refused (see `check_run_dir`) unless `resume` goes on from its
    training state or `overwrite` trains a new model in its place.
    """
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    check_run_dir(out, resume, overwrite)
    check_data(model, data)
    graph = subgraph_adjacency(model, cfg)  # None: windows of the whole frame
    ranks, dev = distributed.setup(cfg.device)
    if cfg.precision == "bf16" and not native_bf16(dev):
        cap = torch.backends.cpu.get_cpu_capability()
        warnings.warn(
            f"this CPU ({cap}) has no native bf16 matmul: bf16 training runs several times slower than fp32 here",
            stacklevel=2,
        )
    if cfg.batch_size % ranks.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {ranks.world_size} processes")
    model.to(dev).train()
    freeze_all_but(model, cfg.train_only)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)  # windows, noise levels, noise, action dropout
    step, prior_seconds = 0, 0.0
    if resume and holds_run(out):
        check_same_model(ckpt, model)
        held_state = read_train_state(ckpt)
        held = tuple(held_state.get("train", {}).get("train_only", ()))
        if held != cfg.train_only:  # the optimizer's state holds exactly the parts that run trained
            raise ValueError(
                f"{ckpt} holds a run that trained {list(held) or 'every parameter'}; resuming it needs the same "
                f"train_only, got {list(cfg.train_only) or 'every parameter'}"
            )
        step = load_train_state(ckpt, model, ema, opt, gen)
        prior_seconds = float(held_state.get("train_seconds", 0.0))
    frames, actions, ends = flat_arrays(data, model.spec.action.kind)
    sampler = WindowSampler.from_arrays(frames, actions, ends, model.frames)
    surprise = None
    has_chance = model.denoiser.net.chance is not None and cfg.loss.chance_weight > 0
    if model.spec.layout == "grid" and (cfg.loss.surprise_weight or cfg.loss.event_weight or has_chance):
        starts = np.concatenate([[0], ends[:-1]])
        trajectories = (torch.from_numpy(frames[a:b]) for a, b in zip(starts, ends))
        surprise = unforeseen_frequency(trajectories, cfg.loss.motion_radius).to(dev)
    flags, events = None, None  # each flat frame an event or not (grids); the windows ending at one
    if has_chance:
        if ranks.world_size > 1:
            raise ValueError("a model with a chance code trains in one process for now; run it without torchrun")
        flags = event_flags(frames, ends, model.spec, surprise, cfg.loss)
        events = chance_windows(sampler, flags, cfg.loss)
        shift = event_shift(
            0 if events is None else len(events), len(sampler), event_rows(events, cfg) / cfg.batch_size
        )
        for m in (model, ema):
            m.denoiser.net.chance.event_shift.fill_(shift)  # type: ignore[union-attr]
    denoiser: torch.nn.Module = model.denoiser
    if ranks.world_size > 1:
        denoiser = DistributedDataParallel(model.denoiser, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:  # the loss's passes only: sampling, validation and checkpoints use the eager modules
        denoiser = torch.compile(denoiser)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
    meta = {"train": asdict(cfg), "processes": ranks.world_size, **(extra_config or {})}
    log = (out / "train_log.jsonl").open("a" if step else "w") if ranks.is_main else None  # a new run, a new log

    def project(x: torch.Tensor) -> torch.Tensor:  # own predictions fed back as a rollout feeds frames back
        return model.normalize(model.project(model.denormalize(x)))

    chance_parts: dict[str, float] = {}
    window_loss_sum, window_count, t0, last_log_t = 0.0, 0, time.perf_counter(), time.perf_counter()
    final_loss = float("nan")
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (score, step, EMA weights)
    bar = _progress(progress and ranks.is_main)
    task = bar.add_task("train", total=cfg.steps, completed=step, loss="?", speed="?")
    with bar:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            batch = sampler.sample(cfg.batch_size, gen, ranks.part)
            subgraph = None
            if graph is not None:
                focus = active_nodes(graph, batch.frames[:, 0])
                subgraph = draw_subgraph(graph, cfg.subgraph_nodes, gen, dev, focus)
            x = model.normalize(
                batch.frames.to(dev) if subgraph is None else batch.frames[:, :, subgraph.nodes.cpu()].to(dev)
            )
            acts = None if batch.actions is None else batch.actions.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                # Every rank draws the loss's noise for the global batch and keeps its part, as it does the windows.
                batch_shape = (cfg.batch_size, *x.shape[1:])
                noise = draw_loss_noise(cfg.loss, batch_shape, acts is not None, gen_for(gen, dev), dev).part(
                    ranks.part
                )
                loss = noised_loss(denoiser, x, acts, cfg.loss, noise, surprise, project, subgraph)
                if has_chance:
                    loss = loss + cfg.loss.chance_weight * chance_step(
                        denoiser, model, sampler, flags, events, cfg, gen, dev, surprise, chance_parts
                    )
            opt.zero_grad(set_to_none=True)
            if not loss.requires_grad:
                raise ValueError(f"train_only {list(cfg.train_only)}: this loss gives those parameters no gradient")
            loss.backward()
            loss_value = float(distributed.mean_over_ranks(loss.detach(), ranks))
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the learning rate")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            window_loss_sum += loss_value
            window_count += 1
            if on_step is not None:
                on_step(step, loss_value)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                final_loss = window_loss_sum / window_count
                record = {
                    "step": step,
                    "loss": final_loss,
                    "lr": lr_at(step - 1, cfg),
                    "grad_norm": float(grad_norm),
                    "steps_per_s": window_count / (now - last_log_t),
                    "elapsed_s": now - t0,
                    **{f"chance_{k}": v for k, v in chance_parts.items()},
                }
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.update(task, loss=f"{final_loss:.4f}", speed=f"{record['steps_per_s']:.1f} it/s")
                window_loss_sum, window_count, last_log_t = 0.0, 0, now
            bar.update(task, completed=step)
            stopped = False
            if validate is not None and (step % validate_every == 0 or step == cfg.steps):
                try:
                    score = float(validate(ema))
                except StopTraining as stop:
                    score, stopped = float(stop.score), True
                ema.train(False)
                if log is not None:
                    log.write(json.dumps({"step": step, "validation": score}) + "\n")
                    log.flush()
                if best is None or score < best[0]:
                    best = (score, step, copy.deepcopy(ema.state_dict()))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped:
                meta["train_seconds"] = prior_seconds + time.perf_counter() - t0
                if ranks.is_main:
                    save_checkpoint(ckpt, model, ema, opt, gen, step, meta)
                distributed.barrier(ranks)
            if stopped:
                break
    if log is not None:
        log.close()
    chosen = None
    if best is not None:
        chosen = {"step": best[1], "validation": best[0]}
        ema.load_state_dict(best[2])
        if ranks.is_main:
            ema.save_pretrained(out / "best", extra={**meta, "best": chosen})
    return TrainResult(
        model=ema, steps=step, seconds=prior_seconds + time.perf_counter() - t0, final_loss=final_loss, best=chosen
    )


def check_subgraphs(spec: WorldSpec, config: ModelConfig, cfg: TrainConfig) -> None:
    """Raise a one-line ValueError if `cfg.subgraph_nodes` asks for subgraphs a model of `config` for
    `spec` cannot train on (not a graph world, or a model with a chance code)."""
    if not cfg.subgraph_nodes:
        return
    if spec.layout != "graph":
        raise ValueError(f"train subgraph_nodes: expected a graph world, found a {spec.layout} one")
    if config.dit.chance:
        raise ValueError("train subgraph_nodes: a model with a chance code trains on whole frames")


def subgraph_adjacency(model: WorldModel, cfg: TrainConfig) -> sp.csr_array | None:
    """The graph whose subgraphs `train` draws (`cfg.subgraph_nodes`), or None where it trains on whole frames."""
    check_subgraphs(model.spec, model.config, cfg)
    if not cfg.subgraph_nodes or cfg.subgraph_nodes >= model.layout.num_tokens:  # none asked, or the whole graph fits
        return None
    return sp.csr_array(model.layout.adjacency)


def draw_subgraph(
    adjacency: sp.csr_array,
    budget: int,
    gen: torch.Generator,
    device: torch.device | str,
    focus: np.ndarray | None = None,
) -> Subgraph:
    """About `budget` nodes of the graph: nodes in a random order — those of `focus` [N] bool first —
    each taken with all its neighbours while they fit. Scored (weight > 0): the nodes whose
    neighbours are all present (the centres, and any other whose neighbourhood came in whole); the
    rest are context. Weights average 1 over the nodes. At least one centre is taken, whatever its
    degree."""
    n = adjacency.shape[0]
    ptr, idx = adjacency.indptr, adjacency.indices
    inside = np.zeros(n, bool)
    count, misses = 0, 0
    order = torch.randperm(n, generator=gen).numpy()
    if focus is not None:
        order = np.concatenate([order[focus[order]], order[~focus[order]]])
    for v in order:
        around = idx[ptr[v] : ptr[v + 1]]
        new = int((~inside[around]).sum()) + int(not inside[v])
        if count and count + new > budget:
            misses += 1
            if misses > 64:  # the rest are unlikely to fit either
                break
            continue
        inside[around], inside[v] = True, True
        count += new
        if count >= budget:
            break
    nodes = np.flatnonzero(inside)
    # scored: every node whose neighbours all made it in (the centres, and any other)
    weight = (adjacency[nodes] @ (~inside).astype(np.int64) == 0).astype(np.float32)
    weight *= len(nodes) / weight.sum()
    return Subgraph(torch.from_numpy(nodes).to(device), torch.from_numpy(weight).to(device))


def active_nodes(adjacency: sp.csr_array, first: torch.Tensor) -> np.ndarray:
    """[N] bool: the nodes whose state in any window's first frame `first` [B, N, F] differs from that
    frame's typical node (the median over nodes, feature by feature), and their neighbours: where
    something happens next. A subgraph centred there (`draw_subgraph`'s focus) scores the nodes a
    spread can reach instead of the many it cannot; chosen from the first frame, before any target
    frame, so the choice does not select on outcomes."""
    typical = first.median(dim=1, keepdim=True).values  # [B, 1, F]
    active = (first != typical).any(-1).any(0).numpy()  # [N]
    return active | (adjacency @ active.astype(np.int64) > 0)


def event_frames(
    frames: torch.Tensor,
    value_kind: str,
    value_range: tuple[float, float],
    surprise: torch.Tensor | None,
    cfg: LossConfig,
) -> torch.Tensor:
    """Consecutive grid frames [T, C, H, W] of one episode -> bool [T]: the frames where something
    appears by chance. Binary and categorical worlds: a birth (an object with nothing of its
    channel next to it in the frame before: a serve, a spawn; `evaluate.events.births`) and the
    frame after it (the object's first move, which shows the direction chance gave it). Real-valued
    ones: a rare unforeseen change (at a pixel where such changes happen in at most
    `event_max_frequency` of transitions, given the training data's `surprise` map [H, W])."""
    events = torch.zeros(len(frames), dtype=torch.bool)
    if len(frames) < 2:
        return events
    if value_kind in ("binary", "categorical"):
        on = occupied(frames.cpu().numpy(), value_kind, value_range)
        count, _ = births(on[:-1], on[1:])  # [T − 1, C]
        born = torch.from_numpy(count.reshape(len(count), -1).sum(1) > 0)
        events[1:] = born
        events[2:] |= born[:-1]  # the new object's first move: where chance sent it shows here
        return events
    if surprise is None or len(frames) < 3:
        return events
    rare = (surprise > 0) & (surprise <= cfg.event_max_frequency)  # [H, W]
    unforeseen = unforeseen_pixels(frames.float()[None], cfg.motion_radius)[0]  # [T − 2, H, W]
    events[2:] = (unforeseen & rare.to(unforeseen.device)).flatten(1).any(1).cpu()
    return events


def event_flags(
    frames: np.ndarray, ends: np.ndarray, spec: WorldSpec, surprise: torch.Tensor | None, cfg: LossConfig
) -> torch.Tensor | None:
    """bool [N]: which of the flat frames of episodes ending at `ends` are chance events
    (`event_frames`, episode by episode); None off grids, where every frame is left to chance."""
    if spec.layout != "grid":
        return None
    starts = np.concatenate([[0], ends[:-1]])
    kind, value_range = spec.value_kind, spec.value_range or (0.0, 1.0)
    parts = [
        event_frames(torch.from_numpy(frames[a:b]), kind, value_range, surprise, cfg) for a, b in zip(starts, ends)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def chance_windows(sampler: WindowSampler, flags: torch.Tensor | None, cfg: LossConfig) -> torch.Tensor | None:
    """The starts of the windows that end at an event frame (`flags`), where a chance code has an
    outcome to learn; None where there are none, no flags, or `chance_events` is 0."""
    if flags is None or cfg.chance_events == 0:
        return None
    found = sampler.ending_at(flags.nonzero()[:, 0])
    return found if len(found) else None


def event_rows(events: torch.Tensor | None, cfg: TrainConfig) -> int:
    """Rows of a chance step's batch drawn among the windows `events` that end at events."""
    return 0 if events is None else round(cfg.loss.chance_events * cfg.batch_size)


def chance_step(
    denoiser: torch.nn.Module,
    model: WorldModel,
    sampler: WindowSampler,
    flags: torch.Tensor | None,
    events: torch.Tensor | None,
    cfg: TrainConfig,
    gen: torch.Generator,
    dev: torch.device,
    surprise: torch.Tensor | None,
    parts: dict[str, float],
) -> torch.Tensor:
    """The chance code's loss on windows of its own: `event_rows` drawn among the windows `events`
    that end at event frames, the rest among all. A window's target is an event where `flags`
    (bool over the flat frames) says so; without flags every frame is left to chance."""
    b, n_events = cfg.batch_size, event_rows(events, cfg)
    batches = [sampler.sample(b - n_events, gen)] + ([sampler.sample(n_events, gen, starts=events)] if n_events else [])
    starts = torch.cat([w.starts for w in batches])  # type: ignore[misc]
    event = None if flags is None else flags[starts + sampler.length - 1]
    raw = torch.cat([w.frames for w in batches])
    x = model.normalize(raw.to(dev))
    acts = None if batches[0].actions is None else torch.cat([w.actions for w in batches]).to(dev)
    noise = draw_chance_noise(cfg.loss, tuple(x.shape), gen_for(gen, dev), dev)
    found_quiet = None if event is None else quiet_frames(model, raw[:, -2:], event)
    quiet = None if found_quiet is None else (model.normalize(found_quiet[0][:, None])[:, 0], found_quiet[1])
    loss, found = chance_loss(
        denoiser, x, acts, cfg.loss, noise, model.sampler.sigma_max, surprise, gen_for(gen, dev), event, quiet
    )
    parts.update(found)
    return loss


def quiet_frames(
    model: WorldModel, last: torch.Tensor, event: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For windows whose last two frames are `last` [B, 2, *frame] (world units): (each target
    without the objects born in it [B, *frame], world units; bool [B], the `event` windows with a
    birth), the frame had chance not acted. Binary grids only (None elsewhere): an object off is
    the low value there."""
    if model.spec.value_kind != "binary" or model.spec.layout != "grid" or not event.any():
        return None
    lo, hi = model.spec.value_range or (0.0, 1.0)
    on = occupied(last.cpu().numpy(), "binary", (lo, hi))
    born = torch.from_numpy(born_cells(on[:, 0], on[:, 1]))
    calm = torch.where(born, torch.tensor(lo, dtype=last.dtype), last[:, 1].cpu())
    return calm, event.cpu() & born.flatten(1).any(1)


def event_shift(n_events: int, n_windows: int, share: float) -> float:
    """Log odds of an event in the data minus those in a training mix that draws `share` of its
    windows among the `n_events` (of `n_windows`) ending at events and the rest among all."""
    rate = n_events / max(n_windows, 1)
    mixed = share + (1 - share) * rate
    if not 0 < rate < 1 or mixed >= 1:
        return 0.0
    return math.log(rate / (1 - rate)) - math.log(mixed / (1 - mixed))


def holds_run(out: str | Path) -> bool:
    """Whether run directory `out` holds a checkpoint (a trained model, its training state, or part of them)."""
    ckpt = Path(out) / "checkpoint"
    recover_checkpoint(ckpt)
    return ckpt.is_dir() and any(ckpt.iterdir())


def check_run_dir(out: str | Path, resume: bool, overwrite: bool = False) -> None:
    """Refuse, before any work, a run in `out` that would replace a trained model nobody asked to replace.

    A directory holding a run is refused unless `resume` (and then its training state must be
    readable: a run that cannot be resumed is never silently started over) or `overwrite`.
    """
    if resume and overwrite:
        raise ValueError("resume continues the run in the output directory and overwrite replaces it: choose one")
    check_output_dir(out, "run directory")
    if overwrite or not holds_run(out):
        return
    ckpt = Path(out) / "checkpoint"
    if not resume:
        raise FileExistsError(
            f"{ckpt} already holds a training run; resume it, overwrite it, or choose another output directory"
        )
    read_train_state(ckpt)
    tensors = ckpt / "train_state.safetensors"
    if not tensors.is_file():
        raise ValueError(f"{tensors}: expected the run's weights and optimizer state to resume from, found no file")
    try:  # the header and the file's length: a truncated file fails here, before any data is collected
        with safe_open(str(tensors), framework="pt"):
            pass
    except Exception as e:  # safetensors raises its own error types on a truncated or foreign file
        raise unreadable_tensors(tensors, e) from None


def unreadable_tensors(path: Path, e: Exception) -> ValueError:
    """The one-line error for a training state's tensors that cannot be read."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return ValueError(f"{path}: expected the run's saved tensors, found {type(e).__name__}: {first}")


def read_train_state(ckpt: Path) -> dict[str, Any]:
    """The `train_state.json` of a checkpoint, checked: a ValueError naming the file if it cannot be read."""
    path = ckpt / "train_state.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: expected the run's training state to resume from, found no such file") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: expected the run's training state as JSON, found {type(e).__name__}: {e}") from None
    if not (isinstance(info, dict) and type(info.get("step")) is int and info["step"] >= 0):
        found = repr(info.get("step")) if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{path}: expected a JSON object with an integer step >= 0, found step {found}")
    return info


def check_same_model(ckpt: Path, model: WorldModel) -> None:
    """Raise ValueError unless the run in `ckpt` trained a model of `model`'s world and shape."""
    held = read_config(ckpt)
    want = json.loads(json.dumps(model.config_dict()))
    for key in ("spec", "model"):
        if held.get(key) != want[key]:
            raise ValueError(
                f"{ckpt} holds a run with {key} {held.get(key)}; resuming it needs the same, got {want[key]}"
            )


def flat_arrays(data: TrainingData, action_kind: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(frames [N, *frame], actions [N, ...] or None, episode ends [E]) of episodes or a store."""
    if isinstance(data, list):
        frames, actions, ends = flatten(data)
    else:
        frames, actions, _, _, ends = data.arrays()
    return frames, None if action_kind == "none" else actions, np.asarray(ends, dtype=np.int64)


def gen_for(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """The CPU generator, or on an accelerator one seeded from it (noise is then drawn on the device)."""
    if device.type == "cpu":
        return gen
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(
    ckpt: Path,
    model: WorldModel,
    ema: WorldModel,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    meta: dict[str, Any],
) -> None:
    """Write the EMA model and the full training state to `ckpt`, replacing it only once complete."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ema.save_pretrained(tmp, extra={**meta, "step": step})
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.train"] = gen.get_state()
    save_file(tensors, str(tmp / "train_state.safetensors"))
    (tmp / "train_state.json").write_text(json.dumps({"step": step, **meta}, indent=2))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(ckpt: Path) -> None:
    """Finish a checkpoint swap a killed process left half done (see `save_checkpoint`).

    `save_checkpoint` writes `<ckpt>.tmp` completely (train_state.json last), then moves the old
    checkpoint to `<ckpt>.old` and the new one into place. Killed between those two moves, the
    complete new checkpoint is `.tmp`; killed while writing `.tmp`, the old one is still in place.
    """
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if not ckpt.exists():
        if (tmp / "train_state.json").exists():
            tmp.rename(ckpt)
        elif (old / "train_state.json").exists():
            old.rename(ckpt)


def load_train_state(
    ckpt: Path, model: WorldModel, ema: WorldModel, opt: torch.optim.Optimizer, gen: torch.Generator
) -> int:
    """Restore a run saved by `save_checkpoint`; returns the step it had reached."""
    info = read_train_state(ckpt)
    path = ckpt / "train_state.safetensors"
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on a truncated or foreign file
        raise unreadable_tensors(path, e) from None
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict(WorldModel.from_pretrained(ckpt).state_dict())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
    gen.set_state(tensors["rng.train"])
    return int(info["step"])


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "build_model",
    "check_data",
    "check_run_dir",
    "flat_arrays",
    "holds_run",
    "load_train_state",
    "read_train_state",
    "lr_at",
    "recover_checkpoint",
    "save_checkpoint",
    "train",
    "update_ema",
]
