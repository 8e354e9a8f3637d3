"""The domains' one interface: every world has one domain, and `diffworld eval` and `demo` reach
each domain through it alone (cascade and market checkpoints included)."""

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import diffworld
from diffworld.cli import app
from diffworld.domains import DOMAIN_MODULES, DemoOptions, Domain, EvalOptions, domain_of, domains
from diffworld.domains.base import OPTIONAL_DEMO, OPTIONAL_EVAL
from diffworld.worlds import ADAPTERS, list_worlds, make_world
from diffworld.worlds.market import market_spec
from tests.conftest import tiny_model

SRC = Path(diffworld.__file__).parent


def test_every_domain_offers_the_interface_and_reads_only_known_options():
    names = [d.name for d in domains()]
    assert names == ["games", "epidemics", "forecasting", "markets"] and len(DOMAIN_MODULES) == 4
    for domain in domains():
        assert isinstance(domain, Domain), domain.name
        assert domain.eval_options <= set(OPTIONAL_EVAL) and domain.demo_options <= set(OPTIONAL_DEMO), domain.name
        for world in domain.demo_worlds:
            assert domain_of(world) is domain
            assert domain.outputs(world, demo=True)[0] == "metrics.json" and "checkpoint/" in domain.outputs(
                world, demo=True
            )
            assert domain.outputs(world, demo=False)[0] == "metrics.json"


def test_every_listed_world_maps_to_exactly_one_domain():
    listed = [name for d in domains() for name, _ in d.worlds()]
    registry = list_worlds() + [f"{prefix}:some-game" for prefix in ADAPTERS]
    assert set(list_worlds()) <= set(listed) and "market" in listed
    for world in listed + registry:
        serving = [d.name for d in domains() if d.serves(world)]
        assert len(serving) == 1, (world, serving)
        assert domain_of(world).name == serving[0]
    for domain in domains():  # a spec given is the world's own
        for name, spec in domain.worlds():
            assert spec is None or spec.name == name
    with pytest.raises(
        ValueError, match=r"no domain serves world 'nope'; expected one of \(games: pong, .*markets: market\)"
    ):
        domain_of("nope")


def test_the_worlds_command_lists_every_world_with_its_domain():
    result = CliRunner().invoke(app, ["worlds"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.output.splitlines()
        if line.count("│") > 2
    }
    expected = {name: d.name for d in domains() for name, _ in d.worlds()}
    assert rows == expected and rows["market"] == "markets" and rows["cascade"] == "epidemics"


def test_generic_packages_never_import_a_domain_or_the_cli():
    """Imports go one way: the command line -> domains -> the generic pieces, never back."""
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if relative.parts[0] in ("domains", "cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert not name.startswith(("diffworld.domains", "diffworld.cli")), f"{relative} imports {name}"
    for path in (SRC / "domains").rglob("*.py"):
        assert "diffworld.cli" not in path.read_text(), path


@pytest.fixture
def cascade_checkpoint(tmp_path):
    """An untrained tiny model of the karate-club cascade, saved as a collected run's checkpoint."""
    options = {"graph": "karate", "model": "sir"}
    collect = {"source": "cascade", "policy": "random", "epsilon": 0.0, "max_steps": 60, "world_options": options}
    extra = {"data": {"world": "cascade", "collect": collect, "train_seeds": [0, 11]}}
    model = tiny_model(make_world("cascade", **options).spec, frames=4)
    return model.save_pretrained(tmp_path / "cascade", extra=extra)


@pytest.fixture
def market_checkpoint(tmp_path):
    """An untrained tiny one-asset market model, saved as the market demo saves its own."""
    extra = {"data": {"world": "market", "validation_start": "2014-11-01"}}
    return tiny_model(market_spec(("return",)), frames=6).save_pretrained(tmp_path / "market", extra=extra)


def test_eval_dispatches_a_cascade_checkpoint_to_the_epidemic_protocol(cascade_checkpoint, tmp_path, monkeypatch):
    """`diffworld eval` on a cascade checkpoint: the epidemics domain scores it (for real, at tiny size)."""
    import diffworld.domains.epidemics.evaluation as evaluation

    seen = {}
    real = evaluation.evaluate_cascade_checkpoint

    def spy(path, out, sampler=None, **kwargs):
        seen.update(kwargs, sampler=sampler)
        return real(path, out, sampler, **kwargs, oracle_runs=20, hub_runs=10, hub_horizon=3)

    monkeypatch.setattr(evaluation, "evaluate_cascade_checkpoint", spy)
    out = tmp_path / "eval"
    args = [
        "eval",
        str(cascade_checkpoint),
        "--out",
        str(out),
        "--cases",
        "2",
        "--members",
        "2",
        "--horizon",
        "3",
        "--steps",
        "2",
        "--seed-offset",
        "500000",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen["cases"], seen["members"], seen["horizon"], seen["hub_members"], seen["seed"]) == (2, 2, 3, 2, 0)
    assert seen["seed_offset"] == 500000
    assert seen["sampler"].steps == 2
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["world"] == "cascade" and saved["world_options"] == {"graph": "karate", "model": "sir"}
    assert saved["cases"]["seeds_from"] == 1_500_000  # the validation epidemics
    assert saved["sampler"]["steps"] == 2 and len(saved["headline"]["infected_skill_vs_oracle"]) == 3
    for name in ("spread.gif", "curves.png", "hubs.png"):
        assert (out / name).is_file(), name
    assert "node Brier: model" in result.output and "hub Kendall tau" in result.output
    assert f"wrote {out}/metrics.json, spread.gif, curves.png and hubs.png in" in result.output
    # An option of another domain is refused, naming the domain that reads it.
    refused = CliRunner().invoke(
        app, ["eval", str(cascade_checkpoint), "--out", str(tmp_path / "e2"), "--series", "sp500"]
    )
    assert refused.exit_code == 2 and "error: --series is for market; got a cascade model" in refused.output


def test_eval_dispatches_a_market_checkpoint_to_the_backtest(market_checkpoint, tmp_path, monkeypatch):
    """`diffworld eval` on a market checkpoint: the markets domain backtests it (for real, on a short test period)."""
    pytest.importorskip("arch")
    import diffworld.domains.markets.evaluation as evaluation

    seen = {}
    real = evaluation.evaluate_market_checkpoint
    short = dict(train_end="2015-01-01", test_end="2015-02-15", free_paths=2, fan_paths=16)

    def spy(path, out, sampler=None, **kwargs):
        seen.update(kwargs, sampler=sampler)
        return real(path, out, sampler, **kwargs, **short)

    monkeypatch.setattr(evaluation, "evaluate_market_checkpoint", spy)
    out = tmp_path / "eval"
    args = [
        "eval",
        str(market_checkpoint),
        "--out",
        str(out),
        "--members",
        "4",
        "--horizon",
        "3",
        "--series",
        "sp500",
        "--steps",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen["members"], seen["horizon"], seen["series"], seen["sampler"].steps) == (4, 3, "sp500", 2)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["world"] == "market" and saved["test_period"] == ["2015-01-02", "2015-02-13"]
    assert set(saved["headline"]["crps"]) == {"model", "garch_normal", "gjr_garch_t", "historical_250d", "climatology"}
    for name in ("backtest.md", "fan_chart.png", "var_backtest.png"):
        assert (out / name).is_file(), name
    assert "model CRPS / GJR-GARCH-t" in result.output
    assert f"wrote {out}/metrics.json, backtest.md, fan_chart.png and var_backtest.png in" in result.output
    for option, reader in (
        ("--cases 3", "game worlds or cascade or lorenz96 and fields"),
        ("--validation", "lorenz96 and fields"),
    ):
        refused = CliRunner().invoke(
            app, ["eval", str(market_checkpoint), "--out", str(tmp_path / "e2"), *option.split()]
        )
        assert (
            refused.exit_code == 2
            and f"error: {option.split()[0]} is for {reader}; got a market model" in refused.output
        )


def test_demo_reaches_every_domain_through_its_interface(tmp_path, monkeypatch):
    """`diffworld demo --world W` calls W's domain with the options given, and prints what it returned."""
    calls = []
    for domain in domains():
        monkeypatch.setattr(
            type(domain), "demo", lambda self, world, out, options: calls.append((self.name, world, options)) or {}
        )
        monkeypatch.setattr(type(domain), "print_summary", lambda self, metrics: None)
    for world in ("pong", "cascade", "lorenz96", "fields", "market"):
        result = CliRunner().invoke(app, ["demo", "--world", world, "--out", str(tmp_path / world), "--steps", "3"])
        assert result.exit_code == 0, result.output
        assert f"wrote {tmp_path / world}/metrics.json" in result.output
    assert [(name, world) for name, world, _ in calls] == [
        ("games", "pong"), ("epidemics", "cascade"), ("forecasting", "lorenz96"), ("forecasting", "fields"),
        ("markets", "market"),
    ]  # fmt: skip
    assert all(isinstance(o, DemoOptions) and o.steps == 3 and o.given() == {"steps": 3} for _, _, o in calls)
    refused = CliRunner().invoke(app, ["demo", "--world", "pong", "--out", str(tmp_path / "x"), "--series", "sp500"])
    assert refused.exit_code == 2 and "error: --series is for --world market, got --world pong" in refused.output


def test_options_given_count_zero_and_ignore_what_was_not_given():
    assert EvalOptions().given() == {} and EvalOptions(validation=False, cases=0).given() == {"cases": 0}
    assert EvalOptions(members=4, series="sp500").sizes("cases", "members", "series") == {
        "members": 4,
        "series": "sp500",
    }
    assert DemoOptions(steps=0, series="sp500").given() == {"steps": 0, "series": "sp500"}
