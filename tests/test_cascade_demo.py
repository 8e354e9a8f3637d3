"""The cascade demo end to end at tiny size: files, headline numbers, learned diffusion times."""

import json

import pytest

pytest.importorskip("networkx")

from diffworld.cascade_demo import CascadeDemoConfig, held_out_cases, run_cascade_demo  # noqa: E402
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
    for key in ("node_brier_model", "node_brier_oracle", "node_brier_ratio", "infected_skill_vs_oracle", "hub_kendall_tau"):
        assert key in head, key
    assert len(head["infected_skill_vs_oracle"]) == cfg.horizon
    assert set(head["hub_kendall_tau"]) == {"model", "simulator_at_budget", "degree", "eigenvector"}
    assert set(saved["scores"]) == {"model", "oracle", "persistence", "mean_field"}
    assert len(saved["diffusion_times"]) == 2 and all(t > 0 for row in saved["diffusion_times"] for t in row)
    assert m["train_seconds"] > 0
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert config["sampler"]["method"] == "marginal"  # the cascade world's SAMPLER_DEFAULTS
