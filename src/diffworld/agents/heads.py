"""Reward and episode-end heads: what a world model's dreams need to become an environment.

A small network beside the world model reads a transition — the previous frame, the new frame,
the action between them — and predicts the reward received on arriving at the new frame (one of
the reward values the data holds, as classes) and whether the episode ends there.

A frame alone cannot say when an episode ends if the end depends on a tally the frame does not
show (pong ends at the third point, and shows no score). So the heads also read the episode so
far as the environment running them knows it: the number of positive and of negative rewards
received before this step, and the step count. A dream environment keeps that tally from the
heads' own predicted rewards.

Events are rare (a point every ~100 pong frames, an end every ~450), so training draws each
(reward, ends) class in proportion to the square root of its frequency, and afterwards takes
that tilt back off the logits (the prior correction of re-sampled training: log q/p), so
predictions keep the data's base rates: the reward logits by their class's tilt, the end logit
by the tilt between ending and going on within the predicted reward class (exact where the
reward is a function of the transition, as in games that score on a visible event).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from diffworld.checks import MAX_SEED, check_device, check_int, check_number
from diffworld.data.episodes import Episode, frame_stats
from diffworld.model.world_model import WorldModel
from diffworld.rollout import rollout
from diffworld.spec import WorldSpec

#: The format a heads folder's config.json names (a name, not a module: shipped heads carry it).
FORMAT = "diffworld.heads"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
#: Tallies of positive and negative rewards enter one-hot up to this count (an end on the third
#: point is then one "and" of two inputs for the network).
MAX_COUNT = 8
TALLY_FEATURES = 2 * MAX_COUNT + 1
#: Beyond this many distinct reward values, rewards are not classes (continuous rewards: not yet).
MAX_REWARD_CLASSES = 16


@dataclass(frozen=True)
class HeadsConfig:
    """Size of the heads network and how it is trained."""

    #: Channels of the first convolution (grid worlds) / width of the frame encoder.
    width: int = 32
    #: Width of the hidden layer that mixes frames, action and tally.
    hidden: int = 128
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    #: With a world model: quiet transitions dreamed beside every event one (see `train_heads`).
    dreamed_calm: int = 4000

    def __post_init__(self) -> None:
        for name, least in (("width", 1), ("hidden", 1), ("steps", 1), ("batch_size", 1), ("dreamed_calm", 0)):
            check_int(f"heads {name}", getattr(self, name), least)
        check_int("heads seed", self.seed, 0, MAX_SEED)
        check_number("heads lr", self.lr, above=0.0)


class Heads(nn.Module):
    """(previous frame, frame, action, tally) -> reward-class logits [B, K] and episode-end logit [B]."""

    def __init__(
        self,
        spec: WorldSpec,
        rewards: tuple[float, ...],
        step_scale: float,
        mean: np.ndarray,
        std: np.ndarray,
        config: HeadsConfig = HeadsConfig(),
    ) -> None:
        super().__init__()
        if not rewards:
            raise ValueError("heads need at least one reward value")
        self.spec, self.rewards, self.step_scale, self.config = (
            spec,
            tuple(float(r) for r in rewards),
            float(step_scale),
            config,
        )
        stat_shape = (-1,) + (1,) * (-1 - spec.channel_axis)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(stat_shape))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(stat_shape))
        # Log-odds added after training, undoing the event tilt of its sampling (see `train_heads`):
        # per reward class, and for the end logit per (predicted) reward class.
        self.register_buffer("reward_shift", torch.zeros(len(rewards)))
        self.register_buffer("end_shift", torch.zeros(len(rewards)))
        w = config.width
        shape = tuple(spec.frame_shape)
        if spec.layout == "grid":
            c = shape[0]
            self.encoder = nn.Sequential(  # [B, 3C, H, W] (previous, new, difference) -> [B, 2w·8·8]
                nn.Conv2d(3 * c, w, 3, padding=1), nn.SiLU(),
                nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(8), nn.Flatten(),
            )  # fmt: skip
            features = 2 * w * 64
        else:
            size = int(np.prod(shape))
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * size, 8 * w), nn.SiLU())
            features = 8 * w
        act = spec.action
        self.action_dim = act.n if act.kind in ("discrete", "continuous") else 0
        self.mlp = nn.Sequential(
            nn.Linear(features + self.action_dim + TALLY_FEATURES, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, len(rewards) + 1),
        )

    def action_features(self, actions: torch.Tensor | None, batch: int) -> torch.Tensor:
        """One-hot discrete actions (unknown −1: zeros), continuous ones as they are (NaN: zeros)."""
        dev = self.mean.device
        if self.action_dim == 0:
            return torch.zeros(batch, 0, device=dev)
        if actions is None:
            return torch.zeros(batch, self.action_dim, device=dev)
        actions = torch.as_tensor(actions, device=dev)
        if self.spec.action.kind == "discrete":
            a = actions.long().reshape(batch)
            return F.one_hot(a.clamp(min=0), self.action_dim).float() * (a >= 0)[:, None]
        return torch.nan_to_num(actions.float().reshape(batch, self.action_dim))

    def forward(
        self, prev: torch.Tensor, frame: torch.Tensor, actions: torch.Tensor | None, tally: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prev, frame [B, *frame] world units; tally [B, 3] (positive, negative rewards so far, step)."""
        b = frame.shape[0]
        p, f = (prev.float() - self.mean) / self.std, (frame.float() - self.mean) / self.std
        axis = self.spec.channel_axis % (frame.ndim - 1) + 1  # the channel axis of a batch of frames
        h = self.encoder(torch.cat([p, f, f - p], dim=axis))  # [B, features]
        logits = self.mlp(
            torch.cat([h, self.action_features(actions, b), self.tally_features(tally)], dim=-1)
        )  # [B, K + 1]
        reward_logits = logits[:, :-1] + self.reward_shift
        return reward_logits, logits[:, -1] + self.end_shift[reward_logits.argmax(-1)]

    def tally_features(self, tally: torch.Tensor) -> torch.Tensor:
        """[B, 3] counts and step -> one-hot counts (0..MAX_COUNT−1, the last also "or more") and the scaled step."""
        counts = tally[:, :2].long().clamp(0, MAX_COUNT - 1)  # [B, 2]
        hot = F.one_hot(counts, MAX_COUNT).float().flatten(1)  # [B, 2·MAX_COUNT]
        return torch.cat([hot, tally[:, 2:3].float() / self.step_scale], dim=-1)

    def batch_inputs(self, data: Transitions, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The transitions `idx` of `data` as the heads' inputs, on the heads' device."""
        return data.batch(idx, self.mean.device)

    @torch.no_grad()
    def predict(
        self, prev: torch.Tensor, frame: torch.Tensor, actions: torch.Tensor | None, tally: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most likely reward [B] (a value of `self.rewards`) and whether the episode ends [B] bool."""
        reward_logits, end_logit = self(prev, frame, actions, tally)
        values = torch.tensor(self.rewards, device=reward_logits.device)
        return values[reward_logits.argmax(-1)], end_logit > 0

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Weights as safetensors and the config as JSON, in `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS))
        config = {
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "rewards": list(self.rewards),
            "step_scale": self.step_scale,
            "heads": asdict(self.config),
            **(extra or {}),
        }
        (d / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Heads:
        """Load heads saved by `save_pretrained`; errors name the file and what is wrong."""
        d = Path(directory)
        if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
            raise FileNotFoundError(f"{d}: expected heads ({CONFIG} and {WEIGHTS}); train them with `diffworld heads`")
        try:
            config = json.loads((d / CONFIG).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{d / CONFIG}: not valid JSON ({e})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(
                f"{d / CONFIG}: expected format {FORMAT!r}, "
                f"found {config.get('format') if isinstance(config, dict) else config!r}"
            )
        try:
            spec = WorldSpec.from_dict(config["spec"])
            rewards, step_scale, heads_config = (
                tuple(config["rewards"]),
                config["step_scale"],
                HeadsConfig(**config["heads"]),
            )
            if not all(isinstance(r, int | float) and not isinstance(r, bool) and np.isfinite(r) for r in rewards):
                raise ValueError(f"expected rewards to be finite numbers, found {list(rewards)}")
            check_number("step_scale", step_scale, above=0.0)
        except KeyError as e:
            raise ValueError(f"{d / CONFIG}: expected a field {e.args[0]!r}, found none") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{d / CONFIG} is invalid: {e}") from None
        try:
            state = load_file(str(d / WEIGHTS))
        except Exception as e:  # safetensors raises several types for a corrupt file
            raise ValueError(f"{d / WEIGHTS}: cannot read the weights ({e})") from None
        if "mean" not in state:
            raise ValueError(f"{d / WEIGHTS}: expected the heads' weights, found no tensor 'mean'")
        channels = state["mean"].numel()
        heads = cls(spec, rewards, step_scale, np.zeros(channels), np.ones(channels), heads_config)
        try:
            heads.load_state_dict(state)
        except RuntimeError as e:  # missing, unexpected or misshapen tensors
            raise ValueError(f"{d / WEIGHTS} does not match {d / CONFIG}: {' '.join(str(e).split())[:300]}") from None
        return heads.to(device).eval()


def checkpoint_heads(checkpoint: str | Path) -> Path:
    """Where a checkpoint's heads live: `<checkpoint>/heads`."""
    return Path(checkpoint) / "heads"


# ---------------------------------------------------------------------- data


@dataclass
class Transitions:
    """Every transition of a list of episodes, indexing into their concatenated frames."""

    frames: np.ndarray  # [N_frames, *frame]
    prev: np.ndarray  # [M] index of the previous frame
    actions: np.ndarray  # [M] or [M, d]
    tally: np.ndarray  # [M, 3] positive, negative rewards before this step, step index
    reward: np.ndarray  # [M] reward received
    ends: np.ndarray  # [M] bool

    @classmethod
    def of(cls, episodes: list[Episode]) -> Transitions:
        prev, actions, tally, reward, ends = [], [], [], [], []
        offset = 0
        for e in episodes:
            t = len(e)
            prev.append(offset + np.arange(t - 1))
            actions.append(e.actions[1:])
            tally.append(
                reward_tally(e.rewards)[:-1] + np.array([0, 0, 1], np.float32)
            )  # the tally at frame t − 1, step t
            reward.append(e.rewards[1:].astype(np.float64))
            ends.append(e.dones[1:])
            offset += t
        return cls(
            np.concatenate([e.frames for e in episodes]),
            np.concatenate(prev),
            np.concatenate(actions),
            np.concatenate(tally).astype(np.float32),
            np.concatenate(reward),
            np.concatenate(ends).astype(bool),
        )

    @classmethod
    def pairs(
        cls,
        prev: np.ndarray,
        new: np.ndarray,
        actions: np.ndarray,
        tally: np.ndarray,
        reward: np.ndarray,
        ends: np.ndarray,
    ) -> Transitions:
        """Transitions from separate previous and new frames [M, *frame] (e.g. dreamed new frames)."""
        frames = np.stack([prev, new], axis=1).reshape((2 * len(prev),) + prev.shape[1:])  # prev_0, new_0, prev_1, ...
        return cls(frames, 2 * np.arange(len(prev)), actions, tally.astype(np.float32), reward, ends.astype(bool))

    @classmethod
    def concat(cls, parts: list[Transitions]) -> Transitions:
        offsets = np.cumsum([0] + [len(p.frames) for p in parts[:-1]])
        return cls(
            np.concatenate([p.frames.astype(np.float32) for p in parts]),
            np.concatenate([p.prev + o for p, o in zip(parts, offsets)]),
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("actions", "tally", "reward", "ends")),
        )

    def __len__(self) -> int:
        return len(self.prev)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        p = self.prev[idx]
        as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        return (
            as_t(self.frames[p]).float(),
            as_t(self.frames[p + 1]).float(),
            as_t(self.actions[idx]),
            as_t(self.tally[idx]),
        )


def reward_tally(rewards: np.ndarray) -> np.ndarray:
    """An episode's rewards [T] -> its tally at every frame [T, 3]: the positive and the negative
    rewards received up to and including that frame, and the frame's index."""
    r = np.asarray(rewards, dtype=np.float64)
    return np.stack([np.cumsum(r > 0), np.cumsum(r < 0), np.arange(len(r))], axis=1).astype(np.float32)


def reward_classes(rewards: np.ndarray) -> tuple[float, ...]:
    """The distinct reward values, as classes; too many of them is an error."""
    values = np.unique(rewards)
    if len(values) > MAX_REWARD_CLASSES:
        raise ValueError(
            f"the heads predict rewards as classes: expected at most {MAX_REWARD_CLASSES} distinct reward values, "
            f"found {len(values)} (continuous rewards are not supported yet)"
        )
    return tuple(float(v) for v in values)


# ---------------------------------------------------------------------- training and scores


@torch.no_grad()
def dreamed_transitions(
    model: WorldModel, episodes: list[Episode], calm: int, seed: int = 0, batch_size: int = 256
) -> Transitions:
    """Transitions whose new frame the model dreamed: for every event transition (a reward or an
    end) and `calm` others drawn at random, the model's one-step dream from the true context
    under the true action, labelled with the true reward and end. (Transitions before a full
    context of frames − 1 frames are skipped.)"""
    keep = model.frames - 1
    data = Transitions.of(episodes)
    usable = data.tally[:, 2] >= keep  # the new frame's index in its episode
    event = ((data.reward != 0) | data.ends) & usable
    rng = np.random.default_rng(seed)
    quiet = np.flatnonzero(~event & usable)
    pick = np.concatenate([np.flatnonzero(event), rng.choice(quiet, min(calm, len(quiet)), replace=False)])
    g = torch.Generator(device=model.device).manual_seed(seed)
    frames = torch.as_tensor(data.frames)
    all_actions = np.concatenate([e.actions for e in episodes])
    new = []
    for a in range(0, len(pick), batch_size):
        idx = pick[a : a + batch_size]
        window = data.prev[idx][:, None] + np.arange(-keep + 1, 1)  # [B, keep] the context frames' indices
        ctx = frames[window].float()
        ctx_actions = torch.as_tensor(all_actions[window]) if model.spec.action.kind != "none" else None
        act = torch.as_tensor(data.actions[idx])[:, None] if model.spec.action.kind != "none" else None
        dream = rollout(model, ctx, act, context_actions=ctx_actions, generator=g)  # [B, 1, 1, *frame]
        new.append(dream[:, 0, 0].cpu().numpy())
    p = data.prev[pick]
    return Transitions.pairs(
        data.frames[p], np.concatenate(new), data.actions[pick], data.tally[pick], data.reward[pick], data.ends[pick]
    )


def train_heads(
    spec: WorldSpec,
    episodes: list[Episode],
    config: HeadsConfig = HeadsConfig(),
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
    model: WorldModel | None = None,
) -> Heads:
    """Fit reward and episode-end heads on the transitions of `episodes` (seeded).

    With `model`, the data also holds the model's one-step dreams of the same transitions (all
    events, and `config.dreamed_calm` others), so the heads learn to read rewards off dreamed
    frames too — where the dream differs from the truth (pong's reference model drops the new
    serve more often than not, so a point shows as a ball that leaves and does not come back).
    """
    check_device(device)
    if not episodes:
        raise ValueError("train_heads needs at least one episode")
    data = Transitions.of(episodes)
    if len(data) == 0:
        raise ValueError("train_heads: the episodes hold no transitions (every episode has one frame)")
    if model is not None:
        t0 = time.perf_counter()
        dreamed = dreamed_transitions(model, episodes, config.dreamed_calm, config.seed)
        log(f"heads: {len(dreamed)} one-step dreams to learn from ({time.perf_counter() - t0:.0f}s)")
        data = Transitions.concat([data, dreamed])
    classes = reward_classes(data.reward)
    target = np.searchsorted(classes, data.reward)
    joint = 2 * target + data.ends  # (reward class, ends) as one class
    counts = np.bincount(joint, minlength=2 * len(classes)).astype(np.float64)
    # Square-root sampling of the joint classes (q ∝ √p), afterwards taken back off the logits.
    p_joint = counts / counts.sum()
    q_joint = np.sqrt(p_joint) / np.sqrt(p_joint).sum()
    p_kj, q_kj = p_joint.reshape(-1, 2), q_joint.reshape(-1, 2)  # [K, (goes on, ends)]
    reward_shift = -np.log(q_kj.sum(1) / p_kj.sum(1))
    w = np.divide(q_kj, p_kj, out=np.ones_like(q_kj), where=p_kj > 0)  # sampling weight per joint class
    end_shift = -np.log(w[:, 1] / w[:, 0])
    draw = q_joint[joint] / counts[joint]  # [M] probability of each transition in a batch
    mean, std = frame_stats(episodes)
    torch.manual_seed(config.seed)
    heads = Heads(spec, classes, float(max(data.tally[:, 2].max(), 1.0)), mean, std, config).to(device)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=0.01)
    t0 = time.perf_counter()
    heads.train()
    for step in range(config.steps):
        idx = rng.choice(len(data), config.batch_size, p=draw)
        reward_logits, end_logit = heads(*heads.batch_inputs(data, idx))
        y = torch.as_tensor(target[idx], device=heads.mean.device)
        ends = torch.as_tensor(data.ends[idx], dtype=torch.float32, device=heads.mean.device)
        loss = F.cross_entropy(reward_logits, y) + F.binary_cross_entropy_with_logits(end_logit, ends)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(config.steps // 5, 1) == 0:
            log(
                f"heads step {step + 1}/{config.steps}: loss {loss.item():.4f} "
                f"({(step + 1) / (time.perf_counter() - t0):.1f} it/s)"
            )
    heads.eval()
    with torch.no_grad():
        heads.reward_shift.copy_(torch.as_tensor(reward_shift, dtype=torch.float32))
        heads.end_shift.copy_(torch.as_tensor(end_shift, dtype=torch.float32))
    return heads


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 of boolean predictions (0 when neither predicts nor holds a single positive: nothing to find)."""
    tp = float((pred & truth).sum())
    denom = float(pred.sum() + truth.sum())
    return 2 * tp / denom if denom else 0.0


@torch.no_grad()
def score_heads(heads: Heads, data: list[Episode] | Transitions, batch_size: int = 2048) -> dict[str, Any]:
    """Accuracy and F1 of the heads on the transitions of episodes (or on `Transitions`, e.g. dreamed
    ones), beside the majority baseline (always the most common reward, never an end). Reward F1 is
    macro-averaged over the reward values that occur."""
    data = data if isinstance(data, Transitions) else Transitions.of(data)
    preds_r, preds_e = [], []
    for a in range(0, len(data), batch_size):
        idx = np.arange(a, min(a + batch_size, len(data)))
        r, e = heads.predict(*heads.batch_inputs(data, idx))
        preds_r.append(r.cpu().numpy())
        preds_e.append(e.cpu().numpy())
    pr, pe = np.concatenate(preds_r), np.concatenate(preds_e)
    values = np.unique(data.reward)
    majority = values[np.argmax([(data.reward == v).sum() for v in values])]

    def reward_scores(pred: np.ndarray) -> dict[str, Any]:
        per = {f"{v:g}": f1(pred == v, data.reward == v) for v in values}
        return {
            "accuracy": float((pred == data.reward).mean()),
            "macro_f1": float(np.mean(list(per.values()))),
            "f1": per,
        }

    return {
        "transitions": len(data),
        "events": {"rewards": {f"{v:g}": int((data.reward == v).sum()) for v in values}, "ends": int(data.ends.sum())},
        "reward": {"heads": reward_scores(pr), "majority": reward_scores(np.full_like(data.reward, majority))},
        "end": {
            "heads": {"accuracy": float((pe == data.ends).mean()), "f1": f1(pe, data.ends)},
            "majority": {"accuracy": float((~data.ends).mean()), "f1": 0.0},
        },
    }
