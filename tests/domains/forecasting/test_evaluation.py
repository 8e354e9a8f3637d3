"""The forecast demo (Lorenz-96) end to end at tiny size: files and headline numbers."""

import json
import shutil

import numpy as np
import pytest

from diffworld.domains.forecasting.demo import run_forecast_demo
from diffworld.domains.forecasting.evaluation import ForecastDemoConfig, true_run
from diffworld.train import TrainConfig
from tests.conftest import DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_demo_writes_metrics_and_pictures(tmp_path, device):
    cfg = ForecastDemoConfig(
        world_options={"k": 8, "spinup": 1.0}, episodes=3, preset="tiny",
        train=TrainConfig(steps=3, batch_size=4, warmup=1, device=device), cases=3, members=2, horizon=6,
        headline_time=0.2, climate_episodes=2, free_runs=2, free_factor=2,
    )  # fmt: skip
    run_forecast_demo(tmp_path, cfg, progress=False, log=lambda s: None)
    for name in ("metrics.json", "scores.png", "spectra.png", "hovmoller.png", "checkpoint/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    head = saved["headline"]
    assert set(head["crps_by_lead"]) == {"model", "persistence", "climatology", "ar1", "oracle"}
    assert all(len(c) == 6 for c in head["crps_by_lead"].values())
    assert head["headline_leads"] == 4  # 0.2 time units of 0.05
    assert isinstance(head["beats_persistence_and_ar1"], bool)
    if not head["beats_persistence_and_ar1"]:
        assert 1 <= head["first_lead_not_beating"] <= 4
    assert saved["oracle"].startswith("twin ensemble")  # Lorenz-96 without noise is deterministic
    assert saved["events"] is None  # Lorenz-96 has no discrete chance events
    free = saved["free_run"]
    assert free["frames"] == 2 * 4 and free["finite"] and free["var"]["truth"] > 0
    assert np.isclose(
        head["free_run_var_rel_error"], abs(free["var"]["model"] - free["var"]["truth"]) / free["var"]["truth"]
    )
    assert len(saved["scores"]["model"]["rank_histogram"]) == 3
    assert np.asarray(saved["forecast_spectrum_ratio_by_lead"]).shape == (6, 4)  # leads × wavenumbers 1..K/2
    assert 1 <= head["oracle_saturation_lead"] <= 6
    lo, hi = head["spread_skill_range_to_saturation"]
    assert 0 < lo <= hi
    oracle = np.asarray(saved["scores"]["oracle"]["spread_skill"])[: head["oracle_saturation_lead"]]
    assert head["oracle_spread_skill_range_to_saturation"] == [oracle.min(), oracle.max()]


@pytest.mark.parametrize("device", DEVICES)
def test_fields_demo_writes_a_forecast_gif(tmp_path, device):
    cfg = ForecastDemoConfig.for_world(
        "fields", world_options={"size": 16, "spinup": 20}, episodes=2, preset="tiny", dit={"patch": 4},
        train=TrainConfig(steps=2, batch_size=2, warmup=1, device=device), cases=2, members=2, horizon=4,
        climate_episodes=2, free_runs=1, free_factor=2,
    )  # fmt: skip
    m = run_forecast_demo(tmp_path, cfg, progress=False, log=lambda s: None)
    for name in ("metrics.json", "scores.png", "spectra.png", "forecast.gif"):
        assert (tmp_path / name).is_file(), name
    assert m["oracle"] == "the true simulator branched with fresh noise"
    assert np.asarray(m["forecast_spectrum_ratio_by_lead"]).shape == (4, 8)
    assert m["headline"]["headline_leads"] == m["headline"]["oracle_saturation_lead"]  # fields: bar to saturation
    events = m["events"]  # the model's and the oracle's, from the same starts
    assert set(events) == {"source_births", "wind", "field"}
    assert all(set(e) == {"model", "oracle"} for e in events.values())
    assert len(events["source_births"]["oracle"]["rate"]) == 4 and len(events["wind"]["model"]["turned_by_lead"]) == 4


def test_demo_refuses_other_worlds(tmp_path):
    with pytest.raises(ValueError, match="forecast demo serves"):
        run_forecast_demo(tmp_path, ForecastDemoConfig(world="pong"), progress=False)
    with pytest.raises(ValueError, match="forecast demo serves"):
        ForecastDemoConfig.for_world("pong")


def test_true_runs_go_on_past_the_episode_cut():
    from diffworld.worlds.lorenz96 import Lorenz96

    run = true_run(Lorenz96(k=8, spinup=0.0, max_steps=5), seed=0, frames=12)
    assert run.shape == (12, 8, 1) and np.isfinite(run).all()
    assert not np.allclose(run[-1], run[5])  # no frame held after the cut


def test_cli_demo_passes_options_and_prints_the_headline(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import diffworld.domains.forecasting.demo as fd
    from diffworld.cli import app

    seen = {}

    def fake_run(out, cfg, log=print):
        seen["cfg"] = cfg
        head = {
            "crps_by_lead": {n: [0.1] * cfg.horizon for n in ("model", "persistence", "ar1", "oracle")},
            "headline_leads": 40, "beats_persistence_and_ar1": False, "first_lead_not_beating": 33,
            "free_run_mean_rel_error": 0.04, "free_run_var_rel_error": 0.12, "oracle_saturation_lead": 48,
            "skill_vs_oracle_min_to_saturation": 0.58, "spread_skill_range_to_saturation": [0.6, 1.1],
            "oracle_spread_skill_range_to_saturation": [0.85, 1.3],
            "spectrum_ratio_range": [0.7, 1.9],
        }  # fmt: skip
        return {"headline": head, "lead_time": [0.05 * (i + 1) for i in range(cfg.horizon)], "total_seconds": 1.0}

    monkeypatch.setattr(fd, "run_forecast_demo", fake_run)
    args = [
        "demo",
        "--world",
        "fields",
        "--out",
        str(tmp_path / "d"),
        "--steps",
        "7",
        "--cases",
        "30",
        "--batch-size",
        "12",
        "--validate-every",
        "5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.world == "fields" and cfg.train.steps == 7 and cfg.cases == 30 and cfg.dit == {"patch": 4, "refine": 4}
    assert cfg.train.batch_size == 12 and cfg.validate_every == 5
    assert cfg.train.loss.motion_weight == 0.0  # the fields world's own loss settings survive the override
    assert "first miss at lead 33" in result.output and "variance by 12.0%" in result.output
    assert "spread/skill to saturation: 0.60..1.10 (the oracle's 0.85..1.30)" in result.output
    assert "forecast.gif" in result.output


def test_demo_can_stop_early_on_the_climate_of_validation_free_runs(tmp_path):
    cfg = ForecastDemoConfig(
        world_options={"k": 8, "spinup": 1.0}, episodes=3, preset="tiny",
        train=TrainConfig(steps=4, batch_size=4, warmup=1), cases=2, members=2, horizon=4,
        headline_time=0.1, climate_episodes=2, free_runs=1, free_factor=2,
        validate_every=2, validation_runs=2, validation_frames=5,
    )  # fmt: skip
    lines = []
    m = run_forecast_demo(tmp_path, cfg, progress=False, log=lines.append)
    assert sum("validation free runs" in x for x in lines) == 2  # steps 2 and 4
    best = json.loads((tmp_path / "best" / "config.json").read_text())["best"]
    assert m["early_stopping"] == best and best["step"] in (2, 4) and best["validation"] >= 0


def test_cli_eval_scores_a_fields_checkpoint_like_the_demo(tmp_path):
    """`diffworld eval` on a forecast world's checkpoint: the demo's weather-centre scores, with
    the world options its data was collected with and the sampler the command line names."""
    from typer.testing import CliRunner

    from diffworld.cli import app

    cfg = ForecastDemoConfig.for_world(
        "fields", world_options={"size": 16, "spinup": 20}, episodes=2, preset="tiny", dit={"patch": 4, "refine": 2},
        train=TrainConfig(steps=2, batch_size=2, warmup=1), cases=2, members=2, horizon=4,
        climate_episodes=2, free_runs=1, free_factor=2,
    )  # fmt: skip
    run_forecast_demo(tmp_path / "demo", cfg, progress=False, log=lambda s: None)
    out = tmp_path / "eval"
    args = [
        "eval",
        str(tmp_path / "demo" / "checkpoint"),
        "--out",
        str(out),
        "--cases",
        "3",
        "--members",
        "2",
        "--horizon",
        "5",
    ]
    result = CliRunner().invoke(app, args + ["--sigma-max", "3", "--steps", "2", "--churn", "0.5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["world"] == "fields" and saved["config"]["world_options"] == {"size": 16, "spinup": 20}
    assert (saved["sampler"]["sigma_max"], saved["sampler"]["steps"], saved["sampler"]["churn"]) == (3.0, 2, 0.5)
    assert saved["cases"]["cases"] == 3 and saved["cases"]["members"] == 2 and saved["leads"] == [1, 2, 3, 4, 5]
    assert np.asarray(saved["forecast_spectrum_ratio_by_lead"]).shape == (5, 8)  # the 16×16 grid it was trained on
    for name in ("scores.png", "spectra.png", "forecast.gif"):
        assert (out / name).is_file(), name
    assert "spread/skill to saturation" in result.output
    assert "events, model / oracle" in result.output and "source births a step" in result.output

    refused = CliRunner().invoke(app, args + ["--seed-offset", "500000"])
    assert refused.exit_code == 2 and "--seed-offset is for game worlds" in refused.output
    refused = CliRunner().invoke(app, args + ["--guide-weight", "2", "--out", str(tmp_path / "unguided")])
    assert refused.exit_code == 2 and "--guide-weight needs --guide" in refused.output

    # Autoguided by itself, D₀ + w·(D₁ − D₀) is D₁: the same forecasts, the guide named in metrics.json.
    self_guided = tmp_path / "self-guided"
    guide = ["--guide", args[1], "--guide-weight", "3", "--out", str(self_guided)]
    result = CliRunner().invoke(app, args + ["--sigma-max", "3", "--steps", "2", "--churn", "0.5"] + guide)
    assert result.exit_code == 0, result.output
    guided = json.loads((self_guided / "metrics.json").read_text())
    assert guided["guide"] == {"checkpoint": args[1], "weight": 3.0} and saved["guide"] is None
    crps = [np.asarray(m["headline"]["crps_by_lead"]["model"]) for m in (saved, guided)]
    assert np.allclose(crps[0], crps[1], rtol=1e-3), crps
    # A guide trained on the start dates' trajectories would leak them: refused, nothing written.
    leaky = tmp_path / "leaky"
    shutil.copytree(args[1], leaky)
    config = json.loads((leaky / "config.json").read_text())
    config["data"]["train_seeds"] = [0, 1_000_010]
    (leaky / "config.json").write_text(json.dumps(config))
    refused = CliRunner().invoke(app, args + ["--guide", str(leaky), "--out", str(tmp_path / "leaky-eval")])
    assert (
        refused.exit_code == 2
        and "guide trained on seeds 0..1000010, which reach the start dates' seeds from 1000000" in refused.output
    )
    assert not (tmp_path / "leaky-eval").exists()

    # --validation: the same scores from the validation trajectories, the split named in metrics.json.
    val = tmp_path / "val"
    result = CliRunner().invoke(
        app, ["eval", args[1], "--out", str(val), "--cases", "3", "--members", "2", "--horizon", "5", "--validation"]
    )
    assert result.exit_code == 0, result.output
    checked = json.loads((val / "metrics.json").read_text())
    assert (saved["cases"]["split"], saved["cases"]["seeds_from"]) == ("held-out", 1_000_000)
    assert (checked["cases"]["split"], checked["cases"]["seeds_from"]) == ("validation", 200_000)
    persistence = [m["headline"]["crps_by_lead"]["persistence"] for m in (saved, checked)]
    assert persistence[0] != persistence[1]  # other trajectories (persistence ignores the sampler)


def test_forecast_evaluation_refuses_a_game_checkpoint(tmp_path):
    from diffworld.domains.forecasting.evaluation import evaluate_forecast_checkpoint

    with pytest.raises(
        ValueError,
        match="needs a checkpoint trained on lorenz96 or fields trajectories, got one trained on world 'pong'",
    ):
        evaluate_forecast_checkpoint("pong", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
