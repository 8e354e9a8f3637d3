"""Market scenarios and the market demo end to end at tiny size."""

import json

import numpy as np
import pytest
import torch

from diffworld.domains.markets.demo import run_market_demo
from diffworld.domains.markets.evaluation import MARKET_LOSS, MarketDemoConfig
from diffworld.domains.markets.scenarios import one_day_ahead, scenarios
from diffworld.train import TrainConfig
from diffworld.worlds.market import GarchSimulator, market_spec, scale_returns
from tests.conftest import DEVICES, tiny_model


@pytest.fixture
def market_model():
    return tiny_model(market_spec(("a", "b")), frames=6)


def test_scenarios_continue_exactly_like_a_one_day_ahead_forecast(market_model):
    """Day one of a scenario is the one-day-ahead forecast of that day: same context, same features."""
    r = GarchSimulator(assets=2, seed=0).simulate(120)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    paths = scenarios(market_model, r[:100], 3, 5, generator=gen())
    ahead = one_day_ahead(market_model, r[:101], np.array([100]), 5, generator=gen())
    assert paths.shape == (5, 3, 2) and ahead.shape == (1, 5, 2)
    np.testing.assert_allclose(paths[:, 0], ahead[0], rtol=1e-5)
    assert np.isfinite(paths).all() and not np.allclose(paths[0], paths[1])


def test_each_scenario_path_scales_by_its_own_dreamed_volatility(market_model, monkeypatch):
    """Day 2 of a path is its dreamed z times the volatility updated with the path's own day 1."""
    import diffworld.domains.markets.scenarios as md

    seen = {}
    real_rollout = md.rollout

    def spy(*args, **kwargs):
        out = real_rollout(*args, **kwargs)
        seen["z"] = out
        return out

    monkeypatch.setattr(md, "rollout", spy)
    r = GarchSimulator(assets=2, seed=1).simulate(100)
    paths = scenarios(market_model, r, 2, 4, generator=torch.Generator().manual_seed(0))
    z = seen["z"][0, :, :, :, 0].double().numpy()  # [n, H, V]
    _, _, _, states = scale_returns(r)
    state = states[-1].update(r[-1])
    np.testing.assert_allclose(paths[:, 0], z[:, 0] * state.scale(), rtol=1e-5)
    after = [state.update(paths[i, 0]).scale() for i in range(4)]
    np.testing.assert_allclose(paths[:, 1], z[:, 1] * np.stack(after), rtol=1e-5)


def test_one_day_ahead_needs_a_full_context(market_model):
    r = GarchSimulator(seed=0).simulate(100)
    with pytest.raises(ValueError, match="needs 5 scaled days"):
        one_day_ahead(market_model, np.repeat(r, 2, axis=1), np.array([62]), 2)


@pytest.mark.parametrize("device", DEVICES)
def test_market_demo_writes_backtest_metrics_and_pictures(tmp_path, device):
    cfg = MarketDemoConfig(
        extra_series=("wti",), validation_start="2014-11-01", train_end="2015-01-01", test_end="2015-02-15",
        preset="tiny", dit={"frames": 6},
        train=TrainConfig(steps=4, batch_size=4, warmup=1, loss=MARKET_LOSS, device=device), validate_every=2,
        validation_members=4, members=8, free_paths=2, horizon=3, fan_paths=16,
    )  # fmt: skip
    run_market_demo(tmp_path, cfg, progress=False, log=lambda s: None)
    for name in (
        "metrics.json",
        "backtest.md",
        "fan_chart.png",
        "var_backtest.png",
        "checkpoint/model.safetensors",
        "joint/checkpoint/model.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    m = json.loads((tmp_path / "metrics.json").read_text())
    head = m["headline"]
    peers = {"model", "garch_normal", "gjr_garch_t", "historical_250d", "climatology"}
    assert set(head["crps"]) == peers and set(head["kupiec_p"]) == peers
    assert m["test_period"] == ["2015-01-02", "2015-02-13"]
    assert all(row["days"] == 30 for row in m["backtest"].values())
    best = json.loads((tmp_path / "best" / "config.json").read_text())["best"]
    assert best["step"] in (2, 4) and best["validation"] > 0
    assert m["early_stopping"][0] == best and len(m["early_stopping"]) == 2  # two seeds pooled
    assert (tmp_path / "seed1" / "best" / "model.safetensors").is_file()
    assert m["validation_period"] == ["2014-11-03", "2014-12-31"]
    assert head["model_crps_over_gjr_garch_t"] == pytest.approx(head["crps"]["model"] / head["crps"]["gjr_garch_t"])
    assert 0 < m["peer_parameters"]["gjr_garch_t"]["nu"] and m["peer_parameters"]["gjr_garch_t"]["gamma[1]"] > 0
    assert set(m["stylised_facts"]) == {"real", "model", "gjr_garch_t"}
    assert set(head["energy_score"]) == {"model", "independent_garch_normal"}
    assert m["joint"]["series"] == ["sp500", "nasdaq"] and m["joint"]["correlation"]["real"] > 0.8
    assert m["scenario_risk"]["var_1_3d"] < m["scenario_risk"]["var_5_3d"] < 0
    table = (tmp_path / "backtest.md").read_text().splitlines()
    assert len(table) == 2 + len(peers) and "Kupiec p 1%" in table[0]


def test_a_series_name_is_never_read_as_a_file_even_where_one_of_that_name_exists(tmp_path, monkeypatch):
    """`demo --world market --series nasdaq --out nasdaq`: the output folder is not the series."""
    from diffworld.domains.markets.scenarios import is_csv_path, load_series

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nasdaq").mkdir()
    (tmp_path / "wti").write_text("not prices")
    assert load_series("nasdaq").name == "nasdaq" and len(load_series("wti")) > 1000
    assert [is_csv_path(s) for s in ("nasdaq", "prices.csv", "PRICES.CSV", "data/prices", "./nasdaq")] == [
        False,
        True,
        True,
        True,
        True,
    ]
    with pytest.raises(ValueError, match=r"^nasdaq: expected a CSV file .*Is a directory"):  # a path, said as one
        load_series("nasdaq/")


def test_every_series_of_the_market_demo_is_read_before_any_training(tmp_path, monkeypatch):
    """A joint series that does not exist fails at the start, not after the single-asset models trained."""
    import diffworld.domains.markets.demo as md

    monkeypatch.setattr(md, "train_market_model", lambda *a, **k: pytest.fail("trained before every series was read"))
    cfg = MarketDemoConfig(joint=("sp500", "ftse"), preset="tiny", dit={"frames": 6})
    with pytest.raises(ValueError, match="unknown market series 'ftse'"):
        run_market_demo(tmp_path / "out", cfg, progress=False, log=lambda s: None)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        ValueError, match=r"market demo output .*file: expected a folder \(or nothing yet\), found a file"
    ):
        run_market_demo(tmp_path / "file", MarketDemoConfig(), progress=False, log=lambda s: None)


def test_scenarios_refuse_sizes_and_dates_they_cannot_serve(market_model):
    from diffworld.domains.markets.scenarios import history_until, load_series

    r = GarchSimulator(assets=2, seed=0).simulate(120)
    with pytest.raises(ValueError, match=r"^scenarios n: expected an integer >= 1, found 0$"):
        scenarios(market_model, r, 3, 0)
    with pytest.raises(
        ValueError, match=r"^100000000000 scenario paths of 10 days: expected at most the .* GiB of memory"
    ):
        scenarios(market_model, r, 10, 10**11)
    with pytest.raises(ValueError, match=r"^date: expected a day YYYY-MM-DD, found '2016-13-45'$"):
        history_until(load_series("sp500"), "2016-13-45")
    assert str(history_until(load_series("sp500"), "2016-06-23").index[-1].date()) == "2016-06-23"
