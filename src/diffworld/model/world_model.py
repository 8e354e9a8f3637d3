"""WorldModel: the denoiser plus everything needed to use it — spec, normalisation, sampler defaults."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from diffworld.checks import check_device, check_fits, check_int, check_number
from diffworld.diffusion.sampling import SamplerConfig, draw_marginal, one_hot_argmax
from diffworld.layouts import make_layout
from diffworld.model.denoiser import Denoiser
from diffworld.model.dit import PRESETS, DiT, DiTConfig
from diffworld.spec import WorldSpec

FORMAT = "diffworld.world_model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TARGETS = ("frame", "change")
CONFIG = "config.json"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network."""

    dit: DiTConfig = field(default_factory=DiTConfig)
    #: Standard deviation of the normalised data (EDM's σ_data).
    sigma_data: float = 0.5
    #: What a new frame is diffused as. "frame": the frame itself. "change": its difference from
    #: the frame before, preconditioned with the change's own scale (`change_std`), as ML weather
    #: models predict the residual to the current state: where a step changes a field by a small
    #: fraction of its range (`fields`: 18%), the network's errors scale with the change, not with
    #: the field, and noise levels in the sampler's and the loss's settings count in units of the
    #: change. The network still sees frames; only the denoiser's skip connection (around the
    #: previous frame) and its output scale differ (docs/research-log.md, "Fields: diffusing the change").
    target: Literal["frame", "change"] = "frame"
    #: Std of one step's change in model units (RMS over channels), set from the training data by
    #: `train.build_model` when `target` is "change"; 0 until then.
    change_std: float = 0.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"model target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not (math.isfinite(self.change_std) and self.change_std >= 0):
            raise ValueError(f"change_std must be a finite number >= 0, got {self.change_std!r}")
        if not (isinstance(self.sigma_data, int | float) and math.isfinite(self.sigma_data) and self.sigma_data > 0):
            raise ValueError(f"sigma_data must be a finite number > 0, got {self.sigma_data!r}")

    @property
    def change_scale(self) -> float:
        """Model units per unit of the change's noise levels: change_std / σ_data (1 for frame targets)."""
        if self.target == "frame":
            return 1.0
        if self.change_std <= 0:
            raise ValueError(
                "a model that diffuses the change needs change_std > 0 (set by train.build_model from the data)"
            )
        return self.change_std / self.sigma_data

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named size preset (see `diffworld.model.dit.PRESETS`), with DiT fields overridden
        (and `target`, the one model-level setting an override may name)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; expected one of: {', '.join(PRESETS)}")
        target = overrides.pop("target", "frame")
        return cls(target=target).with_dit(PRESETS[name], also=("target",), **overrides)

    def with_dit(self, dit: DiTConfig | None = None, also: tuple[str, ...] = (), **overrides: Any) -> ModelConfig:
        """This config with its DiT (or `dit`) and those of its fields in `overrides` replaced; a
        one-line ValueError naming an unknown field (and the valid ones, with the caller's `also`)."""
        unknown = set(overrides) - set(DiTConfig.__dataclass_fields__)
        if unknown:
            expected = sorted(DiTConfig.__dataclass_fields__) + list(also)
            raise ValueError(f"unknown model setting(s) {sorted(unknown)}; expected some of {expected}")
        return replace(self, dit=replace(dit or self.dit, **overrides))


class WorldModel(nn.Module):
    """A trained world: D(x; σ) on normalised frames, with the world's spec and sampler defaults."""

    def __init__(
        self,
        spec: WorldSpec,
        config: ModelConfig,
        mean: np.ndarray | torch.Tensor,
        std: np.ndarray | torch.Tensor,
        sampler: SamplerConfig | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.sampler = sampler or SamplerConfig()
        self.layout = make_layout(spec, config.dit.patch, config.dit.graph_attention)
        change_std = config.change_std if config.target == "change" else None
        self.denoiser = Denoiser(
            DiT(config.dit, self.layout, spec.action.kind, spec.action.n), config.sigma_data, change_std
        )
        # Per-channel statistics, shaped to broadcast over frames [..., *frame_shape].
        stat_shape = (-1,) + (1,) * (-1 - spec.channel_axis)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(stat_shape))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(stat_shape))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def frames(self) -> int:
        """Frames in the trained window; rollouts keep at most frames − 1 of context."""
        return self.config.dit.frames

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """World units -> model units (zero mean, std σ_data per channel)."""
        return (frames - self.mean) / self.std * self.config.sigma_data

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> world units."""
        return x / self.config.sigma_data * self.std + self.mean

    def project(self, frames: torch.Tensor) -> torch.Tensor:
        """Onto the world's values: round binary worlds, one-hot the largest channel of categorical
        ones, clamp bounded ones, leave real ones."""
        if self.spec.value_kind == "categorical":
            return one_hot_argmax(frames, self.spec.channel_axis, self.spec.value_range or (0.0, 1.0))
        if self.spec.value_kind == "real" or self.spec.value_range is None:
            return frames
        lo, hi = self.spec.value_range
        frames = frames.clamp(lo, hi)
        if self.spec.value_kind == "binary":
            frames = torch.where(frames - lo > (hi - lo) / 2, hi, lo).to(frames.dtype)
        return frames

    def uncertainty(self, frames: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
        """Frames [B, *frame] (world units) off the world's values -> [B]: how many values their
        projection onto the world's values likely gets wrong. Each value's distance from its
        projection, as a share of the value range, is read as the chance that it is wrong (for a
        binary value that is the denoiser's mean, its chance of being the other value); the chances
        of at least `floor` are summed, so a clean frame's faint residue counts for nothing.
        An average of outcomes (a ball smeared over fifteen rows) counts several values."""
        lo, hi = self.spec.value_range or (0.0, 1.0)
        off = (frames - self.project(frames)).abs().flatten(1) / (hi - lo)  # [B, values]
        return (off * (off >= floor)).sum(1)

    def draw_marginal(self, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Every cell drawn independently from its estimated mean (world units): the marginal sampler's frame."""
        return draw_marginal(
            mean, self.spec.value_kind, self.spec.channel_axis, self.spec.value_range or (0.0, 1.0), generator
        )

    def compiled_denoiser(self) -> Callable[..., torch.Tensor]:
        """The denoiser through `torch.compile`, built on the first call and kept (outside the
        module's state, so checkpoints do not change): rollouts and Dreamers with `compile=True`
        run their steps through it. Each new input shape compiles on its first call (tens of
        seconds on a CPU; a few with inductor's on-disk cache warm). ValueError without a C++
        compiler on a CPU."""
        compiled = self.__dict__.get("_compiled_denoiser")
        if compiled is None:
            check_compiler(self.device)
            compiled = self.__dict__["_compiled_denoiser"] = torch.compile(self.denoiser)
        return compiled

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ save / load

    def config_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON config written beside the weights."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "model": {
                "dit": asdict(self.config.dit),
                "sigma_data": self.config.sigma_data,
                "target": self.config.target,
                "change_std": self.config.change_std,
            },
            "sampler": asdict(self.sampler),
            **(extra or {}),
        }

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write `model.safetensors` and `config.json` into `directory`, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        _atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))
        text = json.dumps(self.config_dict(extra), indent=2)
        _atomic_write(directory / CONFIG, lambda p: p.write_text(text))
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu") -> WorldModel:
        """Load a model saved by `save_pretrained`, or a reference model shipped with diffworld by name."""
        directory = resolve_pretrained(name_or_path)
        spec, model_cfg, sampler = parse_config(read_config(directory), directory / CONFIG)
        check_device(device)
        # The config's sizes against the weights' shapes, read from the file's header, before
        # anything is allocated: a config asking for a huge network fails here in one line.
        check_shapes(read_shapes(directory / WEIGHTS), spec, model_cfg, directory / WEIGHTS)
        stat_len = spec.frame_shape[spec.channel_axis]
        model = cls(spec, model_cfg, np.zeros(stat_len), np.ones(stat_len), sampler)
        try:
            state = load_file(str(directory / WEIGHTS))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"checkpoint weights {directory / WEIGHTS} are corrupt or unreadable: {e}") from None
        check_weights(state, directory / WEIGHTS)
        # strict=False for `LATER_PARTS` alone: check_shapes refused any other tensor missing.
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
        return model.to(device).eval()


#: Tensors added to the architecture after models were saved without them, whose fresh
#: initialisation leaves a model's outputs unchanged (the chance prior's global event term starts
#: at zero): a checkpoint without them loads, and they keep that initialisation.
LATER_PARTS = ("denoiser.net.chance.event_pool.", "denoiser.net.chance.event_global.")


def read_shapes(path: Path) -> dict[str, list[int]]:
    """The shape of every tensor in a safetensors file, from its header alone (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint weights {path} are corrupt or unreadable: {e}") from None


def check_model(
    spec: WorldSpec, config: ModelConfig, copies: int = 1, device: str | torch.device = "cpu"
) -> dict[str, list[int]]:
    """The shape of every tensor a model of `config` for `spec` saves, or a one-line ValueError if
    none can be built (a patch that does not tile the frames, a width its positions cannot use,
    more tokens than `layouts.MAX_TOKENS`) or `copies` of its weights would not fit in the memory
    of `device` (training holds five: weights, EMA, gradients and Adam's two moments; 0: not
    checked). Built on the meta device: nothing is allocated."""
    d = config.dit.width
    # Each block holds at least the 17·D² weights of its two attentions and adaLN, and its MLP's 2·D·hidden.
    least = config.dit.depth * (17 * d * d + 2 * d * int(d * config.dit.mlp_ratio))
    if copies:
        check_fits(
            4 * copies * least,
            f"{copies} cop{'y' if copies == 1 else 'ies'} of a model of {config.dit.depth} blocks of width {d}",
            device,
        )
    channels = spec.frame_shape[spec.channel_axis]
    with torch.device("meta"):
        model = WorldModel(spec, config, np.zeros(channels), np.ones(channels))
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def check_shapes(found: dict[str, list[int]], spec: WorldSpec, config: ModelConfig, path: Path) -> None:
    """Raise a one-line ValueError naming `path` unless the tensors `found` in it are those a model
    of `config` for `spec` holds, shape for shape. The number of blocks is compared first, so a
    config asking for thousands is refused before even a skeleton of them is built."""
    blocks = {k.split(".")[3] for k in found if k.startswith("denoiser.net.blocks.")}
    if len(blocks) != config.dit.depth:
        raise ValueError(
            f"checkpoint weights {path} do not match the config: "
            f"expected dit depth {config.dit.depth}, found {len(blocks)} blocks"
        )
    try:  # the weights' own size is the file's: only the shapes need comparing
        expected = check_model(spec, config, copies=0)
    except ValueError as e:
        raise ValueError(f"checkpoint config {path.parent / CONFIG} is invalid: {e}") from None
    missing, unexpected = set(expected) - set(found), set(found) - set(expected)
    missing = {k for k in missing if not k.startswith(LATER_PARTS)}
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights {path} do not match the config: "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    for k, shape in expected.items():
        if k in found and found[k] != shape:
            raise ValueError(f"checkpoint tensor {k}: expected shape {shape}, found {found[k]}")


def check_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise a one-line ValueError naming `path` and the tensor if a weight is NaN or infinite, or
    a normalisation std is not a finite number > 0: such a model dreams NaN, or black frames."""
    std = state["std"].reshape(-1).double()
    bad = ~(torch.isfinite(std) & (std > 0))
    if bad.any():
        i = int(bad.nonzero()[0])
        expected = "a normalisation std > 0 and finite in every channel"
        raise ValueError(f"{path}: expected {expected}, found {std[i].item()} in std[{i}]")
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        flat = tensor.reshape(-1)
        bad = ~torch.isfinite(flat)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{path}: expected finite weights, found {flat[i].item()} in {name}[{i}]")


def check_compiler(device: str | torch.device) -> None:
    """Raise ValueError (one line) if `torch.compile` cannot build kernels for `device`: on a CPU,
    inductor compiles C++ with $CXX, else g++ (clang++ on macOS), as its `cpp.cxx` setting says."""
    if torch.device(device).type != "cpu":
        return
    compiler = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(compiler) is None:
        raise ValueError(
            f"torch.compile on a CPU needs a C++ compiler ({compiler}, or another named by $CXX); none found on PATH"
        )


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """A checkpoint directory: a path if it exists, else the name of a shipped reference model."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = PRETRAINED_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and shipped.is_dir():
        return shipped
    names = sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG).exists()) if PRETRAINED_DIR.is_dir() else []
    raise FileNotFoundError(
        f"no checkpoint at {str(name_or_path)!r}: expected a directory with {CONFIG} and {WEIGHTS}, "
        f"or a shipped model name ({', '.join(names) or 'none shipped'})"
    )


def read_config(directory: Path) -> dict[str, Any]:
    """Parse and check a checkpoint's config.json."""
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: {name} is missing")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint config {directory / CONFIG} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{directory / CONFIG} is not a diffworld world-model config (format {FORMAT!r} expected)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{directory / CONFIG} has format version {config['format_version']}; "
            f"this diffworld reads up to {FORMAT_VERSION}"
        )
    parse_config(config, directory / CONFIG)  # every field checked when read, whoever reads it
    return config


def parse_config(config: dict[str, Any], path: Path) -> tuple[WorldSpec, ModelConfig, SamplerConfig]:
    """The world spec, model config and sampler settings of a checkpoint's config.json (`path`),
    each checked, and its `data` section's shape; a one-line ValueError naming `path` otherwise."""
    try:
        for section in ("spec", "model", "model.dit", "sampler", "data", "data.collect"):
            value: Any = config
            for key in section.split("."):
                value = value.get(key, {}) if isinstance(value, dict) else value
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"expected {section} to be a JSON object, found {value!r}")
        spec = WorldSpec.from_dict(config["spec"])
        m = config["model"]
        change_std = m.get("change_std", 0.0)
        check_number("change_std", change_std, least=0.0)
        model_cfg = ModelConfig(
            dit=DiTConfig(**m["dit"]),
            sigma_data=m["sigma_data"],
            target=m.get("target", "frame"),
            change_std=change_std,
        )
        sampler_fields = _known(SamplerConfig, config.get("sampler") or {})
        if "steps" in sampler_fields:
            check_int("sampler steps", sampler_fields["steps"], 1)
        sampler = SamplerConfig(**sampler_fields)
        seeds = (config.get("data") or {}).get("train_seeds")
        if seeds is not None and not (
            isinstance(seeds, list) and len(seeds) == 2 and all(type(x) is int and x >= 0 for x in seeds)
        ):
            raise ValueError(f"expected data.train_seeds to be [first, last], two integers >= 0, found {seeds!r}")
    except KeyError as e:
        raise ValueError(f"checkpoint config {path} is invalid: expected a field {e.args[0]!r}, found none") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint config {path} is invalid: {e}") from None
    return spec, model_cfg, sampler


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
