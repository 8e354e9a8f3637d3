"""Staged recipes: parsing and its refusals, a tiny three-stage run, resuming it, the shipped recipe."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffworld.model.dit import DiTConfig
from diffworld.model.world_model import ModelConfig, WorldModel, read_config, resolve_pretrained
from diffworld.stages import read_recipe, run_recipe

TINY = """
world = "pong"
episodes = 3
[[stage]]
name = "backbone"
preset = "tiny"
steps = 3
batch_size = 2
[[stage]]
name = "chance"
steps = 2
batch_size = 2
lr = 5e-4
dit = { chance = 4, chance_decoder = true, chance_prior = "decoder" }
[[stage]]
name = "event"
steps = 2
batch_size = 2
train_only = ["denoiser.net.chance.event"]
[sampler]
event_shift = -1.5
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("stages")
    out = tmp / "run"
    run_recipe(read_recipe(write(tmp, TINY)), out, log=lambda _: None, progress=False)
    return out


def test_tiny_recipe_chains_its_stages(tiny_run):
    stages = tiny_run / "stages"
    assert read_config(stages / "chance" / "checkpoint")["init"] == str(stages / "backbone" / "checkpoint")
    assert read_config(stages / "event" / "checkpoint")["init"] == str(stages / "chance" / "checkpoint")
    first = WorldModel.from_pretrained(stages / "backbone" / "checkpoint").state_dict()
    chance = WorldModel.from_pretrained(stages / "chance" / "checkpoint").state_dict()
    event = WorldModel.from_pretrained(stages / "event" / "checkpoint").state_dict()
    final = WorldModel.from_pretrained(tiny_run / "checkpoint")
    # The chance stage trained what it started from; the event stage touched only its head.
    shared = [k for k in first if k in chance and first[k].is_floating_point()]
    assert any(not torch.equal(first[k], chance[k]) for k in shared)
    final = WorldModel.from_pretrained(tiny_run / "checkpoint")
    for name, _ in final.named_parameters():
        same = torch.equal(event[name], chance[name])
        assert same != name.startswith("denoiser.net.chance.event"), name
    # The final model is the last stage's, with the recipe's sampler settings and stages recorded.
    assert all(torch.equal(v, event[k]) for k, v in final.state_dict().items())
    assert final.sampler.event_shift == -1.5 and final.sampler.method == "chance"
    held = read_config(tiny_run / "checkpoint")
    assert [s["name"] for s in held["recipe"]["stages"]] == ["backbone", "chance", "event"]
    assert held["recipe"]["stages"][1]["lr"] == 5e-4
    assert held["step"] == 2 and held["train"]["train_only"] == ["denoiser.net.chance.event"]


def test_a_finished_recipe_is_refused_then_resumed_without_training(tiny_run, tmp_path):
    recipe = read_recipe(write(tmp_path, TINY))
    with pytest.raises(FileExistsError, match="already holds a training run"):
        run_recipe(recipe, tiny_run, log=lambda _: None, progress=False)
    before = (tiny_run / "stages" / "event" / "checkpoint" / "model.safetensors").read_bytes()
    lines: list[str] = []
    run_recipe(recipe, tiny_run, resume=True, log=lines.append, progress=False)
    assert [line for line in lines if "trained already" in line] == [
        f"stage {i}/3 {n}: trained already ({tiny_run / 'stages' / n})"
        for i, n in enumerate(("backbone", "chance", "event"), 1)
    ]
    assert (tiny_run / "stages" / "event" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_a_stage_cut_short_resumes_to_its_end(tmp_path):
    recipe, out = read_recipe(write(tmp_path, TINY)), tmp_path / "run"
    run_recipe(recipe, out, log=lambda _: None, progress=False)
    # A process killed after the chance stage's checkpoint at step 1: no event stage, no final model yet.
    shutil.rmtree(out / "stages" / "event")
    shutil.rmtree(out / "checkpoint")
    state = out / "stages" / "chance" / "checkpoint" / "train_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "step": 1}))
    lines: list[str] = []
    run_recipe(recipe, out, resume=True, log=lines.append, progress=False)
    assert lines[0] == f"stage 1/3 backbone: trained already ({out / 'stages' / 'backbone'})"
    assert "stage 2/3 chance: 2 steps" in lines[1] and "stage 3/3 event: 2 steps" in "\n".join(lines)
    assert read_config(out / "stages" / "chance" / "checkpoint")["step"] == 2
    # The stage not begun before the cut starts from the stage before (it trains the event head alone).
    chance = WorldModel.from_pretrained(out / "stages" / "chance" / "checkpoint").state_dict()
    event = WorldModel.from_pretrained(out / "stages" / "event" / "checkpoint").state_dict()
    assert all(torch.equal(v, chance[k]) for k, v in event.items() if not k.startswith("denoiser.net.chance.event"))
    assert read_config(out / "checkpoint")["recipe"]["stages"][2]["name"] == "event"


@pytest.mark.parametrize(
    "change, message",
    [
        (("episodes = 3", "episodes = 3\nseed = 1"), "unknown top-level key 'seed'"),
        (('world = "pong"', ""), "exactly one of world"),
        (('world = "pong"', 'world = "pong"\ndata = "x.zarr"'), "exactly one of world"),
        (('name = "event"', 'name = "chance"'), "distinct stage names"),
        (('name = "chance"\nsteps = 2', 'name = "chance"\nsteps = 2\npreset = "base"'), "preset is for the first"),
        (('preset = "tiny"', 'preset = "tiny"\nfresh = ["denoiser"]'), "first stage has none"),
        (('name = "event"\nsteps = 2', 'name = "event"'), "expected steps"),
        (('name = "event"\nsteps = 2', 'name = "event"\nsteps = 0'), "steps"),
        (("lr = 5e-4", "learning_rate = 5e-4"), "unknown stage 'chance' key 'learning_rate'"),
        (('train_only = ["denoiser.net.chance.event"]', 'train_only = "denoiser"'), "list of parameter-name"),
        (('name = "chance"', 'name = "a b"'), "letters, digits"),
        (("event_shift = -1.5", "event_shfit = -1.5"), "unknown sampler setting 'event_shfit'"),
        (("event_shift = -1.5", "steps = 0"), "sampler"),
        (('preset = "tiny"', 'preset = "huge"'), "huge"),
        (("[sampler]", "[sampler"), "expected TOML"),
    ],
)
def test_bad_recipes_are_refused_in_one_line(tmp_path, change, message):
    old, new = change
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ValueError, match=message) as err:
        read_recipe(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_recipe_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=r"no recipe at 'nope'.*pong"):
        read_recipe("nope")


def test_the_shipped_pong_recipe_builds_the_shipped_model():
    """The recipe kept beside the shipped weights composes to the model and settings they hold."""
    recipe = read_recipe("pong")
    held = read_config(resolve_pretrained("pong"))
    config = ModelConfig.preset(recipe.stages[0].preset or "small")
    for stage in recipe.stages:
        config = config.with_dit(**stage.dit)
    assert DiTConfig(**held["model"]["dit"]) == config.dit  # a setting newer than the shipped file: its default
    last = recipe.stages[-1]
    assert held["train"]["train_only"] == list(last.train_only)
    assert (held["train"]["steps"], held["train"]["lr"]) == (last.steps, last.lr)
    assert held["data"]["episodes"] == recipe.episodes
    assert all(held["sampler"][k] == v for k, v in recipe.sampler.items())


def test_cli_recipe_refuses_a_bad_file_in_one_line(tmp_path):
    path = write(tmp_path, TINY.replace("episodes = 3", "episodes = 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "diffworld", "recipe", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "episodes: expected an integer >= 1, found 0" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_resuming_with_a_changed_stage_is_refused(tiny_run, tmp_path):
    changed = read_recipe(write(tmp_path, TINY.replace("lr = 5e-4", "lr = 4e-4")))
    with pytest.raises(ValueError, match="holds stage 'chance' trained with other settings"):
        run_recipe(changed, tiny_run, resume=True, log=lambda _: None, progress=False)


def test_a_stage_from_before_a_new_setting_resumes_as_with_its_default(tiny_run):
    state = tiny_run / "stages" / "chance" / "checkpoint" / "train_state.json"
    held = json.loads(state.read_text())
    del held["train"]["loss"]["chance_prior_detached"]  # a run written before the setting existed
    state.write_text(json.dumps(held))
    lines: list[str] = []
    run_recipe(read_recipe(tiny_run.parent / "recipe.toml"), tiny_run, resume=True, log=lines.append, progress=False)
    assert sum("trained already" in line for line in lines) == 3
