"""A compact PPO agent (Schulman et al. 2017) for the vector envs of `diffworld.agents.envs`.

One actor-critic network (a small CNN for grid frames), generalised advantage estimation
(GAE-λ), the clipped surrogate objective, a value loss and an entropy bonus. It trains the same
way in a dream (`DreamVectorEnv`) and in the true game (`WorldVectorEnv`), which is what makes
"trained only in the dream" comparable with "trained on the real game for as many steps".

Truncated episodes (a step cap, not a real end) bootstrap from the value of their last
observation, which next-step autoreset returns on the truncating step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffworld.checks import MAX_SEED, check_int, check_number


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings; the defaults train a pong agent in a few minutes on two CPU cores."""

    #: Environment steps in all (summed over the vector env's envs).
    steps: int = 100_000
    #: Steps per env between updates (the rollout is num_envs × horizon transitions).
    horizon: int = 128
    epochs: int = 4
    minibatch: int = 512
    lr: float = 1e-3
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    grad_clip: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "horizon", "epochs", "minibatch"):
            check_int(f"ppo {name}", getattr(self, name), 1)
        check_int("ppo seed", self.seed, 0, MAX_SEED)
        check_number("ppo lr", self.lr, above=0.0)
        for name in ("gamma", "lam"):
            check_number(f"ppo {name}", getattr(self, name), least=0.0, most=1.0)
        check_number("ppo clip", self.clip, above=0.0)
        check_number("ppo grad_clip", self.grad_clip, above=0.0)
        for name in ("value_coef", "entropy_coef"):
            check_number(f"ppo {name}", getattr(self, name), least=0.0)


class ActorCritic(nn.Module):
    """Observations [B, frames, *frame] -> action logits [B, A] and state values [B]."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, width: int = 32) -> None:
        super().__init__()
        self.obs_shape, self.n_actions = tuple(obs_shape), n_actions
        if len(obs_shape) == 4:  # [frames, C, H, W]: frames stacked as channels, plus the newest change
            k, c = obs_shape[0], obs_shape[1]
            self.body = nn.Sequential(
                nn.Conv2d((k + (k > 1)) * c, width, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(2 * width * 64, 256), nn.SiLU(),
            )  # fmt: skip
        else:
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(int(np.prod(obs_shape)), 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU()
            )
        self.policy = nn.Linear(256, n_actions)
        self.value = nn.Linear(256, 1)
        nn.init.orthogonal_(self.policy.weight, 0.01)  # near-uniform first policy
        nn.init.zeros_(self.policy.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float()
        if x.ndim == 5:
            if x.shape[1] > 1:  # the newest frame minus the one before: motion in one channel
                x = torch.cat([x, x[:, -1:] - x[:, -2:-1]], dim=1)
            x = x.flatten(1, 2)  # [B, (frames + 1)·C, H, W]
        h = self.body(x)
        return self.policy(h), self.value(h)[:, 0]

    @torch.no_grad()
    def act(self, obs: np.ndarray, generator: torch.Generator | None = None, greedy: bool = False) -> np.ndarray:
        """Actions [B] for observations [B, ...]: sampled from the policy, or its most likely ones."""
        logits, _ = self(torch.as_tensor(obs))
        if greedy:
            return logits.argmax(-1).numpy()
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0].numpy()


def train_ppo(
    envs: object, config: PPOConfig = PPOConfig(), log: Callable[[str], None] = print, net: ActorCritic | None = None
) -> tuple[ActorCritic, list[dict[str, float]]]:
    """Train an actor-critic on a Gymnasium vector env with discrete actions (next-step autoreset).

    Returns the network and a log (per update: steps, mean return of the episodes finished in it,
    losses, seconds).
    """
    n = envs.num_envs  # type: ignore[attr-defined]
    obs_shape = envs.single_observation_space.shape  # type: ignore[attr-defined]
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    torch.manual_seed(config.seed)
    net = net or ActorCritic(obs_shape, n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, eps=1e-5)
    g = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    obs, _ = envs.reset(seed=config.seed)  # type: ignore[attr-defined]
    starting = np.zeros(n, dtype=bool)  # the next step of these envs is an autoreset (not a transition)
    returns_now = np.zeros(n)
    updates = max(config.steps // (n * config.horizon), 1)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for update in range(updates):
        for group in opt.param_groups:  # linear learning-rate decay
            group["lr"] = config.lr * (1 - update / updates)
        T = config.horizon
        b_obs = np.zeros((T, n, *obs_shape), np.float32)
        b_act = np.zeros((T, n), np.int64)
        b_logp, b_val, b_rew = np.zeros((T, n), np.float32), np.zeros((T, n), np.float32), np.zeros((T, n), np.float32)
        b_valid = np.zeros((T, n), bool)  # a real transition (not an autoreset step)
        b_end = np.zeros((T, n), bool)  # the episode ended (terminated or truncated) with this step
        finished: list[float] = []
        net.eval()
        for t in range(T):
            with torch.no_grad():
                logits, value = net(torch.as_tensor(obs))
            action = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]
            b_obs[t], b_act[t] = obs, action.numpy()
            b_logp[t] = torch.log_softmax(logits, -1).gather(1, action[:, None])[:, 0].numpy()
            b_val[t], b_valid[t] = value.numpy(), ~starting
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())  # type: ignore[attr-defined]
            reward = np.where(starting, 0.0, reward)
            returns_now += reward
            b_end[t] = (terminated | truncated) & ~starting
            for i in np.flatnonzero(b_end[t]):
                finished.append(float(returns_now[i]))
            returns_now[b_end[t]] = 0.0
            cut = truncated & ~starting
            if cut.any():  # bootstrap a cut episode from its last observation's value
                with torch.no_grad():
                    _, v_last = net(torch.as_tensor(obs[cut]))
                reward[cut] += config.gamma * v_last.numpy()  # `reward` is np.where's own copy
            b_rew[t] = reward
            starting = b_end[t]
        with torch.no_grad():
            _, next_value = net(torch.as_tensor(obs))
        # GAE-λ backwards; an autoreset step carries no transition and cuts the chain.
        adv = np.zeros((T, n), np.float32)
        last = np.zeros(n, np.float32)
        next_v = np.where(starting, 0.0, next_value.numpy())
        for t in reversed(range(T)):
            nonterminal = ~b_end[t]
            delta = b_rew[t] + config.gamma * next_v * nonterminal - b_val[t]
            last = np.where(b_valid[t], delta + config.gamma * config.lam * nonterminal * last, 0.0)
            adv[t] = last
            next_v = np.where(b_valid[t], b_val[t], 0.0)
        ret = adv + b_val
        valid = b_valid.reshape(-1)
        flat = lambda a: a.reshape(T * n, *a.shape[2:])[valid]  # noqa: E731
        o, a, lp, advs, rets = (torch.as_tensor(flat(x)) for x in (b_obs, b_act, b_logp, adv, ret))
        net.train()
        for _ in range(config.epochs):
            order = rng.permutation(len(o))
            for start in range(0, len(o), config.minibatch):
                mb = torch.as_tensor(order[start : start + config.minibatch])
                logits, value = net(o[mb])
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(1, a[mb][:, None])[:, 0]
                ratio = (logp - lp[mb]).exp()
                adv_mb = (advs[mb] - advs[mb].mean()) / (advs[mb].std() + 1e-8)
                policy_loss = -torch.min(
                    ratio * adv_mb, ratio.clamp(1 - config.clip, 1 + config.clip) * adv_mb
                ).mean()  # clipped surrogate
                value_loss = F.mse_loss(value, rets[mb])
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                opt.step()
        row = {
            "update": update + 1,
            "steps": (update + 1) * n * T,
            "episodes": len(finished),
            "mean_return": float(np.mean(finished)) if finished else float("nan"),
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        history.append(row)
        if (update + 1) % max(updates // 10, 1) == 0 or update + 1 == updates:
            log(
                f"ppo update {update + 1}/{updates}: {row['steps']} steps, return {row['mean_return']:.2f} "
                f"over {len(finished)} episodes, entropy {row['entropy']:.2f}, {row['seconds']:.0f}s"
            )
    return net.eval(), history


def play_episodes(envs: object, policy: Callable[[np.ndarray], np.ndarray], episodes: int) -> np.ndarray:
    """Run `policy` (observations [B, ...] -> actions [B]) in a vector env until `episodes` episodes
    have ended; returns their returns, in the order the envs started them (the first `episodes`)."""
    n = envs.num_envs  # type: ignore[attr-defined]
    obs, _ = envs.reset()  # type: ignore[attr-defined]
    totals, order = np.zeros(n), np.arange(n)  # order: the start index of each env's running episode
    started, done = n, {}
    starting = np.zeros(n, dtype=bool)
    while len([k for k in done if k < episodes]) < episodes:
        obs, reward, terminated, truncated, _ = envs.step(policy(obs))  # type: ignore[attr-defined]
        totals += np.where(starting, 0.0, reward)
        for i in np.flatnonzero(starting):  # autoreset: a new episode began in env i
            order[i], started = started, started + 1
            totals[i] = 0.0
        for i in np.flatnonzero((terminated | truncated) & ~starting):
            done[int(order[i])] = float(totals[i])
        starting = (terminated | truncated) & ~starting
    return np.array([done[k] for k in range(episodes)])
