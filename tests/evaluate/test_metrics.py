import numpy as np
import pytest

from diffworld.evaluate.metrics import crps, ensemble_mean_rmse, fill_missing, skill_vs_reference, spread_skill


def test_crps_of_a_perfect_ensemble_is_zero():
    obs = np.random.default_rng(0).normal(size=(4, 3, 5))
    assert np.allclose(crps(np.repeat(obs[:, None], 6, axis=1), obs), 0)


def test_fair_crps_matches_its_definition():
    rng = np.random.default_rng(1)
    fct, obs = rng.normal(size=(1, 5, 1)), rng.normal(size=(1, 1))
    x, y = fct[0, :, 0], obs[0, 0]
    m = len(x)
    expected = np.abs(x - y).mean() - np.abs(x[:, None] - x[None]).sum() / (2 * m * (m - 1))
    assert crps(fct, obs)[0] == pytest.approx(expected)


def test_single_member_crps_is_absolute_error():
    fct, obs = np.array([[[1.0, 2.0]]]), np.array([[0.0, 5.0]])
    assert crps(fct, obs).tolist() == [1.0, 3.0]


def test_calibrated_ensemble_has_spread_skill_near_one():
    rng = np.random.default_rng(2)
    centre = rng.normal(size=(4000, 1, 2))
    obs = centre[:, 0] + rng.normal(size=(4000, 2))
    fct = centre + rng.normal(size=(4000, 8, 2))  # truth and members exchangeable
    assert np.allclose(spread_skill(fct, obs), 1.0, atol=0.05)
    assert np.all(spread_skill(centre + 0.3 * rng.normal(size=(4000, 8, 2)), obs) < 0.5)  # overconfident
    assert spread_skill(fct[:, :1], obs) is None


def test_rmse_of_ensemble_mean():
    fct = np.array([[[1.0], [3.0]]])  # mean 2
    assert ensemble_mean_rmse(fct, np.array([[0.0]])).tolist() == [2.0]


def test_missing_objects_cost_the_largest_error():
    bounds = np.array([[0.0, 10.0], [0.0, 4.0]])
    truth = np.array([[[2.0, 3.0]]])  # [S=1, H=1, K=2]
    state = np.array([[[[np.nan, np.nan]], [[2.0, 1.0]]]])  # member 0 lost both objects
    filled = fill_missing(state, truth, bounds)
    assert filled[0, 0, 0].tolist() == [10.0, 0.0]
    assert filled[0, 1, 0].tolist() == [2.0, 1.0]


def test_skill_vs_reference():
    assert skill_vs_reference(np.array([1.0, 4.0]), np.array([4.0, 4.0]), np.array([0.0, 0.0])).tolist() == [0.75, 0.0]
