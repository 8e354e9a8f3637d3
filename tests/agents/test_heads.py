import json

import numpy as np
import pytest
import torch

from diffworld.agents.heads import Heads, HeadsConfig, Transitions, score_heads, train_heads
from diffworld.data.episodes import Episode
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds import collect_episodes, default_policy, make_world

SMALL = HeadsConfig(width=8, hidden=32, steps=300, batch_size=64, lr=3e-3)


def pong_episodes(seeds):
    return collect_episodes(lambda: make_world("pong"), seeds, default_policy("pong"), 1000)


@pytest.fixture(scope="module")
def pong_heads():
    return train_heads(make_world("pong").spec, pong_episodes(range(40)), SMALL, log=lambda s: None)


def test_transitions_tally_rewards_before_each_step():
    spec = WorldSpec("toy", "grid", (1, 4, 4), "real", ActionSpace("discrete", 2))
    rewards = np.array([0, 1, 0, -1, 1, 0], dtype=np.float32)
    ep = Episode(np.zeros((6, 1, 4, 4), np.float32), np.array([-1, 0, 1, 0, 1, 0]), rewards, np.arange(6) == 5)
    ep.validate(spec)
    t = Transitions.of([ep, ep])
    assert len(t) == 10 and t.prev[5] == 6  # the second episode's first transition reads its own frame 0
    assert t.tally[:5].tolist() == [[0, 0, 1], [1, 0, 2], [1, 0, 3], [1, 1, 4], [2, 1, 5]]
    assert t.reward[:5].tolist() == [1, 0, -1, 1, 0] and t.ends[:5].tolist() == [False] * 4 + [True]


def test_pong_heads_find_every_point_on_held_out_episodes(pong_heads):
    scores = score_heads(pong_heads, pong_episodes(range(1_000_000, 1_000_020)))
    assert scores["reward"]["heads"]["macro_f1"] > 0.95
    assert scores["reward"]["majority"]["macro_f1"] < 0.34  # the baseline finds no point
    assert scores["end"]["majority"]["f1"] == 0.0 and scores["events"]["ends"] == 20


def test_heads_keep_the_data_base_rates_despite_oversampling_events():
    """Rewards that no input predicts (a 5% coin): re-sampled training would say ~18% without the
    prior correction; the corrected heads say the data's rate."""
    spec = WorldSpec("coin", "grid", (1, 8, 8), "real", ActionSpace("discrete", 2))

    def episodes(n, seed):
        r = np.random.default_rng(seed)
        return [
            Episode(
                r.random((100, 1, 8, 8), dtype=np.float32),
                r.integers(0, 2, 100),
                (r.random(100) < 0.05).astype(np.float32),
                np.zeros(100, bool),
            )
            for _ in range(n)
        ]

    heads = train_heads(spec, episodes(40, 1), SMALL, log=lambda s: None)
    data = Transitions.of(episodes(10, 2))
    logits, _ = heads(*heads.batch_inputs(data, np.arange(len(data))))
    p_reward = logits.softmax(-1)[:, 1].mean().item()
    assert 0.03 < p_reward < 0.075, p_reward


def test_heads_save_and_load_to_the_same_predictions(pong_heads, tmp_path):
    pong_heads.save_pretrained(tmp_path / "heads")
    loaded = Heads.from_pretrained(tmp_path / "heads")
    data = Transitions.of(pong_episodes([1_000_100]))
    idx = np.arange(len(data))
    for a, b in zip(pong_heads(*pong_heads.batch_inputs(data, idx)), loaded(*loaded.batch_inputs(data, idx))):
        assert torch.allclose(a, b)


def test_bad_heads_input_is_named(tmp_path):
    spec = make_world("pong").spec
    ep = pong_episodes([0])[0]
    ep.rewards = np.arange(len(ep), dtype=np.float32)
    with pytest.raises(ValueError, match="at most 16 distinct reward values, found"):
        train_heads(spec, [ep], SMALL)
    with pytest.raises(FileNotFoundError, match="expected heads"):
        Heads.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not valid JSON"):
        Heads.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="expected format 'diffworld.heads'"):
        Heads.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("heads", {"batch_size": 0}, r"config.json is invalid: heads batch_size: expected an integer >= 1, found 0"),
        ("heads", None, r"config.json: expected a field 'heads', found none"),
        ("rewards", ["a"], r"config.json is invalid: expected rewards to be finite numbers, found \['a'\]"),
        ("step_scale", 0, r"config.json is invalid: step_scale: expected a finite number > 0, found 0"),
        ("spec", 5, r"config.json is invalid: a world spec: expected a JSON object, found 5"),
    ],
)
def test_a_heads_config_of_wrong_types_is_refused_in_one_line(pong_heads, tmp_path, key, value, match):
    pong_heads.save_pretrained(tmp_path / "heads")
    config = json.loads((tmp_path / "heads/config.json").read_text())
    if value is None:
        del config[key]
    else:
        config[key] = value
    (tmp_path / "heads/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match) as err:
        Heads.from_pretrained(tmp_path / "heads")
    assert "\n" not in str(err.value)
