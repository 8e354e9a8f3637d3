import numpy as np
import pytest

from diffworld.domains.games.evaluation import EvalConfig, evaluate
from diffworld.evaluate.forecasts import make_cases, oracle_forecast, persistence_forecast
from diffworld.worlds import default_policy, make_world
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def cases():
    return make_cases(
        lambda: make_world("pong"), [1_000_000, 1_000_001], default_policy("pong"), 6, 3, 8, np.random.default_rng(0)
    )


def test_cases_are_consistent_with_the_world(cases):
    assert cases.context.shape == (6, 3, 1, 32, 32) and cases.truth.shape == (6, 8, 1, 32, 32)
    world = make_world("pong")
    for i in range(6):  # replaying a case's state under its actions reproduces its truth exactly
        world.set_state(cases.states[i])
        replay = np.stack([world.step(a)[0] for a in cases.actions[i]])
        assert np.array_equal(replay, cases.truth[i])


def test_oracle_branches_with_fresh_noise(cases):
    oracle = oracle_forecast(lambda: make_world("pong"), cases, members=4, seed=0)
    assert oracle.shape == (6, 4, 8, 1, 32, 32)
    state, valid = make_world("pong").decode(oracle)
    assert valid.all()
    # Paddles follow the actions exactly in every branch.
    truth_state = make_world("pong").decode(cases.truth)[0]
    assert np.array_equal(state[..., 2], np.broadcast_to(truth_state[:, None, :, 2], state[..., 2].shape))
    assert np.array_equal(persistence_forecast(cases)[:, 0, 0], cases.context[:, -1])


def test_evaluate_writes_every_headline_field():
    model = tiny_model(make_world("pong").spec, frames=4, patch=8)
    cfg = EvalConfig(
        cases=4,
        episodes=2,
        members=3,
        horizon=5,
        fidelity_rollouts=4,
        climatology_episodes=2,
        serve_moments=4,
        serve_members=2,
        free_dreams=2,
        free_frames=6,
    )
    m = evaluate(model, "pong", cfg, train_seeds=[0, 1])
    assert m["world"] == "pong" and m["horizons"] == [1, 2, 3, 4, 5]
    for name in ("model", "persistence", "climatology", "oracle"):
        for key in ("pixel_crps", "pixel_rmse", "state_crps", "state_rmse", "valid_frac"):
            assert len(m["metrics"][name][key]) == 5, (name, key)
    assert len(m["state_skill_vs_oracle"]) == 5
    assert 0 <= m["valid_frac"] <= 1 and 0 <= m["action_fidelity"] <= 1 and m["rollout_fps"] > 0
    assert m["metrics"]["oracle"]["valid_frac"] == [1.0] * 5
    assert np.mean(m["metrics"]["oracle"]["state_crps"]) < np.mean(m["metrics"]["persistence"]["state_crps"])
    # An untrained model draws no valid frames, so its ball costs the largest error.
    assert m["valid_frac"] < 0.5
    assert np.mean(m["metrics"]["model"]["state_crps"]) > np.mean(m["metrics"]["oracle"]["state_crps"])
    # Chance events: births of the model, persistence (none) and the oracle; pong's serve drawn 4 × 2 times.
    assert (
        set(m["events"]["births"]) == {"model", "persistence", "oracle"}
        and m["events"]["births"]["persistence"]["births"] == 0
    )
    assert m["events"]["serve"]["oracle"]["frames"] == 8 and m["events"]["serve"]["oracle"]["served"] == 1.0
    assert m["events"]["first_move"]["oracle"]["valid"] == 1.0 and m["events"]["free_dreams"]["frames"] == 6


def test_held_out_seeds_must_not_overlap_training():
    model = tiny_model(make_world("pong").spec, frames=4, patch=8)
    with pytest.raises(ValueError, match="overlap"):
        evaluate(model, "pong", EvalConfig(cases=2, episodes=2), train_seeds=[1_000_001])


def test_evaluate_a_graph_world_without_actions():
    """cascade: no actions (none are passed to the model), a graph layout, an oracle from branching."""
    world = make_world("cascade", graph="karate", beta_ratio=3.0)
    model = tiny_model(world.spec, frames=4, patch=1)
    cfg = EvalConfig(cases=3, episodes=8, members=2, horizon=3, climatology_episodes=2)
    m = evaluate(model, "cascade", cfg, train_seeds=[0, 1], world_options={"graph": "karate", "beta_ratio": 3.0})
    assert set(m["metrics"]) == {"model", "persistence", "climatology", "oracle"}
    assert (
        len(m["state_skill_vs_oracle"]) == 3 and "action_fidelity" not in m and m["events"] is None
    )  # no grid births on a graph
    assert m["metrics"]["oracle"]["valid_frac"] == [1.0] * 3
