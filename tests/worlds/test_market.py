import numpy as np
import pytest

from diffworld.worlds.market import (
    LAMBDA_FAST,
    LAMBDA_SLOW,
    WARMUP,
    GarchSimulator,
    load_returns,
    market_spec,
    read_csv,
    scale_returns,
)


def test_arch_series_are_log_returns_of_the_shipped_prices():
    import arch.data.sp500

    r = load_returns("sp500")
    prices = arch.data.sp500.load()["Adj Close"]
    assert r.index[0] == prices.index[1] and len(r) == len(prices) - 1
    assert r.iloc[0] == pytest.approx(100 * np.log(prices.iloc[1] / prices.iloc[0]))
    assert str(r.index[0].date()) == "1999-01-05" and str(r.index[-1].date()) == "2018-12-31"
    with pytest.raises(ValueError, match="unknown market series 'ftse'.*ff_market"):
        load_returns("ftse")


def test_french_factors_get_their_months_back():
    r = load_returns("ff_market")
    assert str(r.index[0].date()) == "1926-07-31" and str(r.index[-1].date()) == "2018-11-30"
    assert r.index.is_monotonic_increasing and not r.index.has_duplicates
    assert r.iloc[0] == pytest.approx(100 * np.log1p(0.0296))  # Mkt-RF of July 1926: 2.96%


def test_scaling_divides_each_return_by_a_volatility_known_the_day_before():
    r = GarchSimulator(assets=2, seed=1).simulate(300)
    z, f, sigma, states = scale_returns(r)
    assert z.shape == (300 - WARMUP, 2, 1) and f.shape == (300 - WARMUP, 4) and sigma.shape == (300 - WARMUP, 2)
    np.testing.assert_allclose(z[:, :, 0] * sigma, r[WARMUP:], rtol=1e-5)
    # The recursion, written out for one day: σ²_t = λσ²_{t−1} + (1 − λ) r²_{t−1}.
    t = 17
    fast = LAMBDA_FAST * states[t - 1].fast + (1 - LAMBDA_FAST) * r[WARMUP + t - 1] ** 2
    slow = LAMBDA_SLOW * states[t - 1].slow + (1 - LAMBDA_SLOW) * r[WARMUP + t - 1] ** 2
    np.testing.assert_allclose(sigma[t], np.sqrt(fast))
    np.testing.assert_allclose(f[t], np.stack([0.5 * np.log(fast / slow), 0.5 * np.log(slow)], -1).ravel(), rtol=1e-6)
    # Changing a later return leaves the earlier days' scale and features alone (no look-ahead).
    r2 = r.copy()
    r2[200] += 10
    z2, f2, _, _ = scale_returns(r2)
    np.testing.assert_array_equal(f2[: 200 - WARMUP + 1], f[: 200 - WARMUP + 1])
    assert not np.array_equal(f2[200 - WARMUP + 1], f[200 - WARMUP + 1])
    with pytest.raises(ValueError, match="NaN or inf in returns at day 3"):
        scale_returns(np.where(np.arange(100)[:, None] == 3, np.nan, r[:100]))


def test_scaled_real_returns_are_near_unit_variance():
    z, _, _, _ = scale_returns(load_returns("sp500").to_numpy()[:, None])
    assert 0.9 < z.std() < 1.15
    assert market_spec(("sp500",)).action.n == 2


def test_csv_prices_become_log_returns_and_bad_rows_are_named(tmp_path):
    path = tmp_path / "prices.csv"
    prices = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 120)))
    dates = np.datetime_as_string(np.arange("2020-01-01", 120, dtype="datetime64[D]"))
    rows = [f"{d},{p}" for d, p in zip(dates, prices)]
    path.write_text("date,close\n" + "\n".join(rows[::-1]) + "\n")  # newest first: sorted on read
    r = read_csv(path)
    assert len(r) == 119 and str(r.index[0].date()) == "2020-01-02"
    np.testing.assert_allclose(r.to_numpy(), 100 * np.diff(np.log(prices)))
    bad = tmp_path / "bad.csv"
    bad.write_text("date,close\n" + "\n".join(rows[:50] + [f"{dates[50]},-3"] + rows[51:]) + "\n")
    with pytest.raises(ValueError, match=r"row 52 .*expected a date and a positive price"):
        read_csv(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("date,close\n" + "\n".join(rows + rows[-1:]) + "\n")
    with pytest.raises(ValueError, match="one row per date"):
        read_csv(dup)
    with pytest.raises(ValueError, match="no column 'open'"):
        read_csv(path, column="open")
    with pytest.raises(ValueError, match="could not read it"):
        read_csv(tmp_path / "missing.csv")


def test_simulator_branches_replay_and_has_fat_tails_and_clustering():
    sim = GarchSimulator(seed=3)
    sim.simulate(50)
    state = sim.get_state()
    a = sim.simulate(20)
    sim.set_state(state)
    np.testing.assert_array_equal(sim.simulate(20), a)
    sim.set_state(state)
    sim.reseed(9)
    assert not np.array_equal(sim.simulate(20), a)
    long = GarchSimulator(seed=0).simulate(20000)[:, 0]
    kurt = np.mean((long - long.mean()) ** 4) / long.var() ** 2
    acf = np.corrcoef(np.abs(long[:-1]), np.abs(long[1:]))[0, 1]
    assert kurt > 4 and acf > 0.1
    two = GarchSimulator(assets=2, seed=0).simulate(5000)
    assert 0.5 < np.corrcoef(two.T)[0, 1] < 0.85
