import numpy as np
import pytest
from scipy import stats

from diffworld.domains.markets import risk


def test_basel_traffic_light_matches_the_250_day_table():
    zones = [risk.traffic_light(k, 250, 0.01) for k in range(12)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 2


def test_kupiec_accepts_the_right_rate_and_rejects_a_wrong_one():
    hits = np.zeros(1000, bool)
    hits[::100] = True  # 10 of 1,000 at 1%
    assert risk.kupiec(hits, 0.01)[1] > 0.99
    hits[::33] = True  # 31 of 1,000
    lr, p = risk.kupiec(hits, 0.01)
    assert p < 1e-4
    # The statistic, written out for x hits in n days.
    n, x = 1000, int(hits.sum())
    expected = -2 * ((n - x) * np.log(0.99) + x * np.log(0.01) - (n - x) * np.log(1 - x / n) - x * np.log(x / n))
    assert lr == pytest.approx(expected)
    assert risk.kupiec(np.zeros(500, bool), 0.05)[1] < 1e-6  # no hits at all is a failure too


def test_christoffersen_flags_clustered_hits_only():
    spread = np.random.default_rng(0).random(1000) < 0.05  # independent hits
    clustered = np.zeros(1000, bool)
    for start in range(0, 1000, 100):
        clustered[start : start + 5] = True  # same 50 hits, in runs of five
    assert risk.christoffersen(spread)[1] > 0.2
    assert risk.christoffersen(clustered)[1] < 1e-6


@pytest.mark.parametrize("nu", [None, 5.0])
def test_parametric_quantile_es_and_crps_agree_with_samples(nu):
    rng = np.random.default_rng(0)
    fc = risk.ParametricForecast(np.array([0.1, -0.2]), np.array([1.0, 2.0]), nu)
    draws = fc.sample(400_000, rng)  # [2, N]
    assert np.allclose(draws.std(axis=1), [1.0, 2.0], rtol=0.02)  # unit-variance shocks
    ens = risk.EnsembleForecast(draws)
    for alpha in (0.01, 0.05):
        np.testing.assert_allclose(fc.quantile(alpha), ens.quantile(alpha), rtol=0.03)
        np.testing.assert_allclose(fc.expected_shortfall(alpha), ens.expected_shortfall(alpha), rtol=0.03)
    obs = np.array([0.5, -3.0])
    np.testing.assert_allclose(fc.crps(obs), risk.EnsembleForecast(draws[:, :4000]).crps(obs), rtol=0.05)


def test_pinball_is_minimised_by_the_true_quantile():
    obs = np.random.default_rng(1).standard_normal(200_000)
    q = stats.norm.ppf(0.05)
    losses = [risk.pinball(np.full_like(obs, q + d), obs, 0.05) for d in (-0.3, 0.0, 0.3)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_backtest_of_a_correct_model_passes_and_of_a_narrow_one_fails():
    rng = np.random.default_rng(2)
    scale = np.exp(rng.normal(0, 0.3, 2000))
    obs = scale * rng.standard_normal(2000)
    right = risk.backtest(risk.ParametricForecast(np.zeros(2000), scale), obs)
    narrow = risk.backtest(risk.ParametricForecast(np.zeros(2000), 0.7 * scale), obs)
    assert right["kupiec_p_1"] > 0.01 and right["kupiec_p_5"] > 0.01 and right["traffic_light_1"] == "green"
    assert narrow["kupiec_p_1"] < 1e-3 and narrow["crps"] > right["crps"] and narrow["traffic_light_1"] == "red"


def test_stylised_facts_tell_garch_from_iid_noise():
    from diffworld.worlds.market import GarchSimulator

    garch = GarchSimulator(seed=0).simulate(5000)[:, 0]
    iid = np.random.default_rng(0).standard_normal(5000)
    g, n = risk.stylised_facts(garch[None]), risk.stylised_facts(iid[None])
    assert g["kurtosis"] > 4 and abs(n["kurtosis"] - 3) < 0.3
    assert g["abs_acf"] > 0.1 and abs(n["abs_acf"]) < 0.03
    assert g["leverage"] < -0.02
