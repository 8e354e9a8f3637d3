"""Every config refuses, where it is built, a number out of range or of the wrong type: one
line saying what was expected and what was found, so the CLI and the library agree."""

import math

import pytest

from diffworld.agents.heads import HeadsConfig
from diffworld.agents.ppo import PPOConfig
from diffworld.data.collect import CollectConfig
from diffworld.domains.epidemics.evaluation import CascadeDemoConfig
from diffworld.domains.forecasting.evaluation import ForecastDemoConfig
from diffworld.domains.games.agents import AgentConfig
from diffworld.domains.games.demo import DemoConfig
from diffworld.domains.games.evaluation import EvalConfig
from diffworld.domains.markets.evaluation import MarketDemoConfig
from diffworld.model.dit import DiTConfig
from diffworld.spec import WorldSpec
from diffworld.train import TrainConfig

NAN, INF = math.nan, math.inf

BAD = [
    # (config, field, bad value, what the message says)
    (DiTConfig, "depth", 0, "dit depth: expected an integer in [1, 1024], found 0"),
    (DiTConfig, "depth", 100_000, "dit depth: expected an integer in [1, 1024], found 100000"),
    (DiTConfig, "depth", 2.5, "dit depth: expected an integer in [1, 1024], found 2.5"),
    (DiTConfig, "width", "32", "dit width: expected an integer in [1, 65536], found '32'"),
    (DiTConfig, "width", 200_000, "dit width: expected an integer in [1, 65536], found 200000"),
    (DiTConfig, "heads", 0, "dit heads: expected an integer in [1, 1024], found 0"),
    (DiTConfig, "heads", 3, "dit width 128: expected it to split into 3 heads of even size"),
    (DiTConfig, "frames", 1, "dit frames: expected an integer in [2, 65536], found 1"),
    (DiTConfig, "patch", 0, "dit patch: expected an integer in [1, 1024], found 0"),
    (DiTConfig, "refine", -1, "dit refine: expected an integer in [0, 1024], found -1"),
    (DiTConfig, "mlp_ratio", NAN, "dit mlp_ratio: expected a finite number > 0 and <= 64, found nan"),
    (DiTConfig, "mlp_ratio", 0.001, "dit mlp_ratio: expected a hidden width"),
    (DiTConfig, "depth", True, "dit depth: expected an integer in [1, 1024], found True"),
    (TrainConfig, "steps", 0, "train steps: expected an integer >= 1, found 0"),
    (TrainConfig, "batch_size", 0, "train batch_size: expected an integer >= 1, found 0"),
    (TrainConfig, "subgraph_nodes", -1, "train subgraph_nodes: expected an integer >= 0, found -1"),
    (TrainConfig, "lr", NAN, "train lr: expected a finite number > 0, found nan"),
    (TrainConfig, "lr", 0.0, "train lr: expected a finite number > 0, found 0.0"),
    (TrainConfig, "warmup", -1, "train warmup: expected an integer >= 0, found -1"),
    (TrainConfig, "min_lr_ratio", 2.0, "train min_lr_ratio: expected a finite number >= 0 and <= 1, found 2.0"),
    (TrainConfig, "weight_decay", INF, "train weight_decay: expected a finite number >= 0, found inf"),
    (TrainConfig, "grad_clip", 0.0, "train grad_clip: expected a finite number > 0, found 0.0"),
    (TrainConfig, "ema_decay", 1.0, "train ema_decay: expected a finite number >= 0 and < 1, found 1.0"),
    (TrainConfig, "seed", -1, "train seed: expected an integer in [0, 9223372036854775807], found -1"),
    (TrainConfig, "log_every", 0, "train log_every: expected an integer >= 1, found 0"),
    (TrainConfig, "checkpoint_every", 0, "train checkpoint_every: expected an integer >= 1, found 0"),
    (TrainConfig, "device", "tpu", "train device: expected cpu, cuda, cuda:<index> or mps, found 'tpu'"),
    (HeadsConfig, "batch_size", 0, "heads batch_size: expected an integer >= 1, found 0"),
    (HeadsConfig, "steps", 0, "heads steps: expected an integer >= 1, found 0"),
    (HeadsConfig, "lr", NAN, "heads lr: expected a finite number > 0, found nan"),
    (HeadsConfig, "width", 0, "heads width: expected an integer >= 1, found 0"),
    (HeadsConfig, "dreamed_calm", -1, "heads dreamed_calm: expected an integer >= 0, found -1"),
    (PPOConfig, "steps", 0, "ppo steps: expected an integer >= 1, found 0"),
    (PPOConfig, "minibatch", 0, "ppo minibatch: expected an integer >= 1, found 0"),
    (PPOConfig, "gamma", 1.5, "ppo gamma: expected a finite number >= 0 and <= 1, found 1.5"),
    (PPOConfig, "lr", INF, "ppo lr: expected a finite number > 0, found inf"),
    (PPOConfig, "clip", 0.0, "ppo clip: expected a finite number > 0, found 0.0"),
    (PPOConfig, "entropy_coef", NAN, "ppo entropy_coef: expected a finite number >= 0, found nan"),
    (AgentConfig, "num_envs", 0, "agent num_envs: expected an integer >= 1, found 0"),
    (AgentConfig, "dream_steps", 0, "agent dream_steps: expected an integer >= 1, found 0"),
    (AgentConfig, "eval_episodes", -1, "agent eval_episodes: expected an integer >= 1, found -1"),
    (EvalConfig, "members", 1, "eval members: expected an integer >= 2, found 1"),
    (EvalConfig, "cases", 0, "eval cases: expected an integer >= 1, found 0"),
    (EvalConfig, "horizon", 0, "eval horizon: expected an integer >= 1, found 0"),
    (EvalConfig, "seed", -1, "eval seed: expected an integer in [0, 9223372036854775807], found -1"),
    (EvalConfig, "seed_offset", -1, "eval seed_offset: expected an integer >= 0, found -1"),
    (DemoConfig, "episodes", 0, "demo episodes: expected an integer >= 1, found 0"),
    (DemoConfig, "preset", "huge", "unknown model preset 'huge'"),
    (ForecastDemoConfig, "members", 1, "forecast demo members: expected an integer >= 2, found 1"),
    (ForecastDemoConfig, "validate_every", -1, "forecast demo validate_every: expected an integer >= 0, found -1"),
    (ForecastDemoConfig, "twin_scale", NAN, "forecast demo twin_scale: expected a finite number >= 0, found nan"),
    (ForecastDemoConfig, "dit", {"depth": 0}, "dit depth: expected an integer in [1, 1024], found 0"),
    (CascadeDemoConfig, "hub_members", 0, "cascade demo hub_members: expected an integer >= 1, found 0"),
    (CascadeDemoConfig, "members", 1, "cascade demo members: expected an integer >= 2, found 1"),
    (MarketDemoConfig, "members", 1, "market demo members: expected an integer >= 2, found 1"),
    (MarketDemoConfig, "seeds", 0, "market demo seeds: expected an integer >= 1, found 0"),
    (
        MarketDemoConfig,
        "train_end",
        "2015-13-45",
        "market demo train_end: expected a date YYYY-MM-DD, found '2015-13-45'",
    ),
    (MarketDemoConfig, "test_end", "2010-01-01", "market demo dates: expected validation_start < train_end < test_end"),
    (CollectConfig, "epsilon", NAN, "collect epsilon: expected a finite number >= 0 and <= 1, found nan"),
    (CollectConfig, "episodes", 0, "collect episodes: expected an integer >= 1, found 0"),
    (CollectConfig, "max_steps", 0, "collect max_steps: expected an integer >= 1, found 0"),
]


def _ids(case):
    config, name, value, _ = case
    return f"{config.__name__}.{name}={value!r}"


@pytest.mark.parametrize("case", BAD, ids=[_ids(c) for c in BAD])
def test_a_config_refuses_a_bad_number_where_it_is_built(case):
    config, name, value, message = case
    required = {"source": "pong", "episodes": 1} if config is CollectConfig else {}
    with pytest.raises(ValueError) as err:
        config(**{**required, name: value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_the_defaults_are_valid():
    for config in (
        DiTConfig,
        TrainConfig,
        HeadsConfig,
        PPOConfig,
        AgentConfig,
        EvalConfig,
        DemoConfig,
        CascadeDemoConfig,
        MarketDemoConfig,
    ):
        config()
    ForecastDemoConfig.for_world("fields")


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(step_duration=NAN), "step_duration: expected a finite number > 0, found nan"),
        (dict(step_duration=-1.0), "step_duration: expected a finite number > 0, found -1.0"),
        (dict(step_duration=INF), "step_duration: expected a finite number > 0, found inf"),
        (dict(frame_shape=(1, 0, 4)), "frame_shape: expected positive integers, found [1, 0, 4]"),
        (dict(value_range=(1.0, 0.0)), "value_range high: expected a finite number > 1, found 0.0"),
        (dict(value_range=(0.0, NAN)), "value_range high: expected a finite number > 0, found nan"),
    ],
)
def test_a_world_spec_refuses_bad_numbers(bad, message):
    with pytest.raises(ValueError) as err:
        WorldSpec(
            **{
                "name": "w",
                "layout": "grid",
                "frame_shape": (1, 4, 4),
                "value_kind": "bounded",
                "value_range": (0.0, 1.0),
                **bad,
            }
        )
    assert str(err.value) == message
