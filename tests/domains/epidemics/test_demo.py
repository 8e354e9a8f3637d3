"""The cascade demo end to end at tiny size: files, headline numbers, learned diffusion times."""

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("networkx")

from diffworld.domains.epidemics.demo import run_cascade_demo  # noqa: E402
from diffworld.domains.epidemics.evaluation import CascadeDemoConfig, held_out_cases  # noqa: E402
from diffworld.train import TrainConfig  # noqa: E402
from diffworld.worlds import make_world  # noqa: E402
from tests.conftest import DEVICES  # noqa: E402


def test_held_out_cases_start_at_the_epidemic_and_hold_finished_ones():
    world = make_world("cascade", graph="karate")
    cases = held_out_cases(world, context=3, horizon=30, n_cases=5)
    assert cases["context"].shape == (5, 3, 34, 3) and cases["truth"].shape == (5, 30, 34, 3)
    assert (cases["context"][:, 0, :, 1].sum(-1) == 1).all()  # one patient zero, at the first frame
    # 30 steps outlast most karate epidemics: once nobody is infected, the truth is held.
    ended = 0
    for truth in cases["truth"]:
        over = truth[..., 1].sum(-1) == 0  # [H]
        if over.any():
            h = int(over.argmax())
            assert (truth[h:] == truth[h]).all()
            ended += 1
    assert ended >= 1


@pytest.mark.parametrize("device", DEVICES)
def test_demo_writes_metrics_and_pictures(tmp_path, device):
    cfg = CascadeDemoConfig(
        world_options={"graph": "karate", "model": "sir"}, episodes=12, preset="tiny",
        train=TrainConfig(steps=4, batch_size=4, warmup=1, device=device), cases=3, members=2,
        oracle_runs=50, hub_runs=20, hub_members=1, hub_horizon=4,
    )  # fmt: skip
    m = run_cascade_demo(tmp_path, cfg, progress=False, log=lambda s: None)
    for name in ("metrics.json", "spread.gif", "curves.png", "hubs.png", "checkpoint/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    head = saved["headline"]
    for key in (
        "node_brier_model",
        "node_brier_oracle",
        "node_brier_ratio",
        "infected_skill_vs_oracle",
        "hub_kendall_tau",
    ):
        assert key in head, key
    assert len(head["infected_skill_vs_oracle"]) == cfg.horizon
    assert set(head["hub_kendall_tau"]) == {"model", "simulator_at_budget", "degree", "eigenvector"}
    assert set(saved["scores"]) == {"model", "oracle", "persistence", "mean_field"}
    assert len(saved["diffusion_times"]) == 2 and all(t > 0 for row in saved["diffusion_times"] for t in row)
    assert m["train_seconds"] > 0
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert config["sampler"]["method"] == "marginal"  # the cascade world's SAMPLER_DEFAULTS


def test_demo_command_passes_training_and_hub_budgets(tmp_path, monkeypatch):
    """`diffworld demo --world cascade` hands --batch-size, --episodes and --hub-members to the demo's config."""
    from typer.testing import CliRunner

    import diffworld.domains.epidemics.demo as cd
    from diffworld.cli import app

    seen = {}

    def fake_run(out, cfg, log=print):
        seen["cfg"] = cfg
        head = {
            "node_brier_model": 0.03,
            "node_brier_oracle": 0.03,
            "node_brier_ratio": 1.0,
            "infected_skill_vs_oracle": [0.9],
            "hub_kendall_tau": {"model": 0.8},
        }
        return {"headline": head, "total_seconds": 1.0}

    monkeypatch.setattr(cd, "run_cascade_demo", fake_run)
    args = [
        "demo",
        "--world",
        "cascade",
        "--out",
        str(tmp_path / "d"),
        "--steps",
        "9",
        "--batch-size",
        "32",
        "--episodes",
        "50",
        "--hub-members",
        "256",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.train.steps, cfg.train.batch_size, cfg.episodes, cfg.hub_members, cfg.members) == (
        9,
        32,
        50,
        256,
        CascadeDemoConfig().members,
    )
    assert "hub Kendall tau: model 0.80" in result.output
    # Without --hub-members, --members caps the hub dreams at the default 64 as before.
    CliRunner().invoke(app, ["demo", "--world", "cascade", "--out", str(tmp_path / "e"), "--members", "8"])
    assert seen["cfg"].hub_members == 8


def test_a_graph_from_a_file_trains_evaluates_and_keeps_its_labels(tmp_path):
    """A user's edge list through the whole demo: its labels name the hubs in the metrics."""
    import networkx as nx

    path = tmp_path / "club.csv"
    path.write_text("source,target\n" + "".join(f"m{u},m{v}\n" for u, v in nx.karate_club_graph().edges))
    cfg = CascadeDemoConfig(
        world_options={"graph": str(path), "model": "ic", "beta": 0.3}, episodes=8, preset="tiny",
        train=TrainConfig(steps=2, batch_size=4, warmup=1), cases=2, members=2,
        oracle_runs=20, hub_runs=10, hub_members=1, hub_horizon=3,
    )  # fmt: skip
    run_cascade_demo(tmp_path / "demo", cfg, progress=False, log=lambda s: None)
    hub = json.loads((tmp_path / "demo" / "metrics.json").read_text())["hub"]
    assert len(hub["nodes"]) == 34 and hub["nodes"][:3] == ["m0", "m1", "m10"]  # labels sort as text
    top = hub["top_spreaders"]
    assert len(top) == 10 and all(t["node"] in hub["nodes"] for t in top)
    reach = hub["expected_reach"]["model"]
    assert [t["model"] for t in top] == sorted(reach, reverse=True)[:10]


def test_frontier_evaluation_scores_reach_and_the_top_spreaders(tmp_path):
    """The evaluation dreams on the frontier when asked (by default for sparse attention) and reports
    the reach CRPS and the top spreaders' overlap for every forecaster."""
    cfg = CascadeDemoConfig(
        world_options={"graph": "karate", "model": "ic"}, episodes=8, preset="tiny",
        train=TrainConfig(steps=2, batch_size=4, warmup=1), cases=3, members=2,
        oracle_runs=20, hub_runs=10, hub_members=2, hub_horizon=3, frontier=True, hub_nodes=9,
    )  # fmt: skip
    m = run_cascade_demo(tmp_path, cfg, progress=False, log=lambda s: None)
    head = m["headline"]
    assert m["frontier"] is True and head["hub_top_k"] == 3 and head["hub_seeds_dreamed"] == 9
    assert set(head["hub_top_overlap"]) == {"model", "simulator_at_budget", "degree", "eigenvector"}
    assert all(0.0 <= v <= 1.0 for v in head["hub_top_overlap"].values())
    assert set(head["reach_crps"]) == {"model", "oracle", "persistence", "mean_field"}
    # the model dreamed from the 9 best-linked seeds only; the others are not ranked by it
    degree = np.array(m["hub"]["expected_reach"]["degree"])
    dreamed = np.array([r is not None for r in m["hub"]["expected_reach"]["model"]])
    assert dreamed.sum() == 9 and degree[dreamed].min() >= degree[~dreamed].max()
    top = m["hub"]["top_spreaders"]
    assert len(top) == 9 and all(t["node"] in np.array(m["hub"]["nodes"])[dreamed] for t in top)
    assert (tmp_path / "spread.gif").is_file() and (tmp_path / "hubs.png").is_file()
    skipped = run_cascade_demo(tmp_path / "nohub", replace(cfg, hub_nodes=0), progress=False, log=lambda s: None)
    assert "hub" not in skipped and "hub_kendall_tau" not in skipped["headline"]
    assert not (tmp_path / "nohub" / "hubs.png").exists()


def test_spread_of_a_large_graph_is_drawn_where_it_is(tmp_path):
    import networkx as nx
    import numpy as np

    from diffworld.domains.epidemics.pictures import GIF_NODES, graph_heatmap_gif, spread_nodes
    from diffworld.domains.epidemics.scores import CascadeForecast

    n, h = GIF_NODES + 200, 2
    truth = np.zeros((h, n), np.int8)
    truth[0, 5], truth[1, [5, 7]] = 1, (2, 1)
    p = np.zeros((1, h, n))
    p[0, 1, [7, 9, 11]] = (0.9, 0.2, 0.01)
    assert spread_nodes(truth, [p[0]], 3).tolist() == [5, 7, 9]  # reached first, then the likeliest
    assert spread_nodes(truth, [p[0]], 10).tolist() == [5, 7, 9, 11]  # never a node nothing touches
    fc = CascadeForecast(p, p[:, -1], np.zeros((1, 1, h, 3)))
    labels = [f"n{v}" for v in range(n)]
    path = graph_heatmap_gif(
        nx.barabasi_albert_graph(n, 2, seed=0), truth, {"model": fc}, tmp_path / "s.gif", labels=labels
    )
    assert path.stat().st_size > 0
