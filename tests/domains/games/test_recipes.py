"""The games' recipes (evaluate, demo, heads, GIF, agent) check their inputs and outputs before any work:
a bad one fails in one line, at once."""

import pytest

import diffworld.domains.games.agents as agents
import diffworld.domains.games.demo as demo
import diffworld.domains.games.evaluation as evaluation
from diffworld.domains.games.pictures import dream_gif
from diffworld.model.world_model import WorldModel
from diffworld.worlds import make_world
from tests.conftest import tiny_model


@pytest.fixture
def checkpoint(tmp_path):
    collect = {"source": "pong", "policy": "default", "epsilon": 0.0, "max_steps": 60, "world_options": {}}
    extra = {"data": {"world": "pong", "collect": collect, "train_seeds": [0, 1]}}
    return tiny_model(make_world("pong").spec).save_pretrained(tmp_path / "ckpt", extra=extra)


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def never(what):
    return lambda *args, **kwargs: pytest.fail(f"{what} before the output was checked")


def test_an_evaluation_checks_its_output_before_computing(checkpoint, a_file, monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate", never("evaluated"))
    for out, match in (
        (a_file, r"evaluation output .*a_file: expected a folder \(or nothing yet\), found a file"),
        (a_file / "sub", r"evaluation output .*a_file/sub: expected .*a_file to be a folder, found a file"),
    ):
        with pytest.raises(ValueError, match=match):
            evaluation.evaluate_checkpoint(checkpoint, out)


def test_a_forecast_evaluation_checks_its_output_before_computing(a_file):
    from diffworld.domains.forecasting.evaluation import evaluate_forecast_checkpoint

    with pytest.raises(ValueError, match=r"evaluation output .*a_file: expected a folder"):
        evaluate_forecast_checkpoint("does-not-matter", a_file)


def test_a_demo_refuses_an_output_holding_metrics_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "train_world", never("trained"))
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"metrics.json exists"):
        demo.run_demo(tmp_path, demo.DemoConfig(preset="tiny"))


@pytest.mark.parametrize(
    "episodes, held_out, match",
    [
        (0, 5, "heads episodes: expected an integer >= 1, found 0"),
        (5, 0, "heads held_out: expected an integer >= 1, found 0"),
    ],
)
def test_heads_need_episodes_to_train_and_to_score_on(checkpoint, tmp_path, monkeypatch, episodes, held_out, match):
    monkeypatch.setattr(WorldModel, "from_pretrained", never("loaded"))
    with pytest.raises(ValueError, match=match):
        agents.train_checkpoint_heads(checkpoint, tmp_path / "heads", episodes=episodes, held_out=held_out)


def test_a_gif_checks_its_path_and_length_first_and_makes_its_folder(checkpoint, tmp_path, a_file):
    model = WorldModel.from_pretrained(checkpoint)
    for path, kwargs, match in (
        (tmp_path, {}, r"GIF .*: expected a file name, found a folder"),
        (tmp_path / "x.txt", {}, r"GIF .*x.txt: expected a file name ending in .gif, found '.txt'"),
        (a_file / "x.gif", {}, r"GIF .*: expected .*a_file to be a folder, found a file"),
        (
            tmp_path / "x.gif",
            dict(free_frames=10**8),
            r"free_frames: expected an integer in \[1, 10000\], found 100000000",
        ),
        (tmp_path / "x.gif", dict(members=0), r"members: expected an integer >= 1, found 0"),
    ):
        with pytest.raises(ValueError, match=match):
            dream_gif(model, path, **kwargs)
    out = dream_gif(
        model, tmp_path / "new" / "folder" / "d.gif", free_frames=2, members=1, cases=1, horizon=2, max_steps=60
    )
    assert out.is_file()


def test_an_agent_checks_its_output_folder_and_device_first(a_file, tmp_path):
    with pytest.raises(ValueError, match=r"agent output .*a_file: expected a folder"):
        agents.dream_agent("pong", a_file)
    with pytest.raises(ValueError, match=r"device: expected cpu, cuda, cuda:<index> or mps, found 'tpu'"):
        agents.dream_agent("pong", tmp_path / "agent", device="tpu")
