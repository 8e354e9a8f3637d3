"""The command line end to end, at tiny size, through a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_DEMO = ["--preset", "tiny", "--steps", "20", "--episodes", "3", "--cases", "4", "--members", "2"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "diffworld", *map(str, args)], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    cli("demo", "--out", out, *TINY_DEMO)
    return out


def test_worlds_lists_pong():
    assert "pong" in cli("worlds").stdout


def test_demo_writes_everything(demo_dir):
    for name in (
        "metrics.json",
        "horizon.png",
        "rollout.gif",
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
    ):
        assert (demo_dir / name).is_file(), name
    m = json.loads((demo_dir / "metrics.json").read_text())
    assert m["world"] == "pong" and m["horizons"] == list(range(1, 17))
    assert set(m["metrics"]) == {"model", "persistence", "climatology", "oracle"}
    for key in ("state_skill_vs_oracle", "valid_frac", "action_fidelity", "train_seconds", "rollout_fps"):
        assert key in m, key
    assert len(m["state_skill_vs_oracle"]) == 16


def test_eval_and_rollout_on_the_demo_checkpoint(demo_dir, tmp_path):
    proc = cli(
        "eval", demo_dir / "checkpoint", "--out", tmp_path / "ev", "--cases", "4", "--members", "2", "--steps", "2"
    )
    assert "state skill vs oracle" in proc.stdout
    m = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert m["sampler"]["steps"] == 2
    cli(
        "rollout",
        demo_dir / "checkpoint",
        "--out",
        tmp_path / "d.gif",
        "--frames",
        "6",
        "--members",
        "1",
        "--sigma-max",
        "2",
    )
    assert (tmp_path / "d.gif").stat().st_size > 1000
    one_line_error(
        cli("eval", demo_dir / "checkpoint", "--out", tmp_path / "e1", "--members", "1", check=False),
        "--members must be at least 2, got 1",
    )
    one_line_error(
        cli("eval", demo_dir / "checkpoint", "--out", tmp_path / "e0", "--cases", "0", check=False),
        "--cases must be at least 1, got 0",
    )
    one_line_error(
        cli("eval", demo_dir / "checkpoint", "--out", tmp_path / "ev", "--validation", check=False),
        "--validation is for lorenz96 and fields",
    )
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e0").exists()
    before = (demo_dir / "metrics.json").read_bytes()  # the demo's own scores: an eval must not replace them
    one_line_error(
        cli("eval", demo_dir / "checkpoint", "--out", demo_dir, "--cases", "4", check=False),
        "metrics.json exists",
        "choose another --out",
    )
    assert (demo_dir / "metrics.json").read_bytes() == before


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_unknown_world(tmp_path):
    one_line_error(
        cli("train", "--out", tmp_path / "x", "--world", "nope", check=False), "unknown world 'nope'", "pong"
    )
    assert not (tmp_path / "x").exists()


def test_missing_checkpoint(tmp_path):
    one_line_error(cli("eval", tmp_path / "nothing", check=False), "no checkpoint", "config.json")


def test_corrupt_checkpoints(demo_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(demo_dir / "checkpoint", bad)
    weights = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    one_line_error(cli("rollout", bad, "--out", tmp_path / "x.gif", check=False), "corrupt or unreadable")
    (bad / "model.safetensors").write_bytes(weights)
    (bad / "config.json").write_text("{not json")
    one_line_error(cli("eval", bad, "--out", tmp_path / "e", check=False), "not valid JSON")
    (bad / "config.json").unlink()
    one_line_error(cli("eval", bad, "--out", tmp_path / "e", check=False), "config.json is missing")


def test_refuses_to_overwrite_a_run(demo_dir):
    before = (demo_dir / "checkpoint/model.safetensors").read_bytes()
    one_line_error(cli("demo", "--out", demo_dir, *TINY_DEMO, check=False), "already holds")
    one_line_error(
        cli("train", "--out", demo_dir, "--preset", "tiny", "--steps", "2", "--episodes", "2", check=False),
        "already holds",
    )
    assert (demo_dir / "checkpoint/model.safetensors").read_bytes() == before


def test_a_run_whose_state_is_lost_is_refused_not_started_over(demo_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_dir / "checkpoint", run / "checkpoint")
    (run / "checkpoint/train_state.json").unlink()
    before = (run / "checkpoint/model.safetensors").read_bytes()
    train = ["train", "--out", run, "--preset", "tiny", "--steps", "2", "--episodes", "2"]
    one_line_error(
        cli(*train, "--resume", check=False),
        f"{run / 'checkpoint/train_state.json'}: expected the run's training state",
    )
    one_line_error(cli(*train, check=False), "already holds a training run")
    one_line_error(cli(*train, "--resume", "--overwrite", check=False), "choose one")
    assert (run / "checkpoint/model.safetensors").read_bytes() == before
    cli(*train, "--overwrite")  # asked for: a new model in its place
    assert (run / "checkpoint/model.safetensors").read_bytes() != before
    assert json.loads((run / "checkpoint/train_state.json").read_text())["step"] == 2


def test_nan_or_inf_sampler_settings_end_in_one_line(tmp_path):
    for command, option, value in (
        ("rollout", "--sigma-ctx", "nan"),
        ("rollout", "--guidance", "inf"),
        ("eval", "--sigma-max", "inf"),
        ("eval", "--event-shift", "nan"),
    ):
        proc = cli(command, "pong", "--out", tmp_path / "x", option, value, check=False)
        one_line_error(proc, f"sampler {option[2:].replace('-', '_')}: expected a finite number", f"found {value}")
    assert not (tmp_path / "x").exists()


def test_bad_options(tmp_path):
    one_line_error(
        cli("train", "--out", tmp_path / "x", "--preset", "huge", check=False), "unknown model preset 'huge'"
    )
    one_line_error(
        cli("train", "--out", tmp_path / "x", "--dit", "{patch: 8}", check=False), "--dit must be a JSON object"
    )


def test_scenarios_prints_risk_and_writes_paths(tmp_path):
    import numpy as np

    from diffworld.worlds import make_world
    from diffworld.worlds.market import market_spec
    from tests.conftest import tiny_model

    ckpt = tiny_model(market_spec(("return",)), frames=6).save_pretrained(tmp_path / "market")
    out = cli(
        "scenarios", ckpt, "--date", "2016-06-23", "--horizon", "3", "--n", "50", "--out", tmp_path / "paths.npy"
    ).stdout
    assert "50 paths of 3 days after 2016-06-23 (sp500)" in out and "var_1_3d" in out and "es_5_1d" in out
    assert np.load(tmp_path / "paths.npy").shape == (50, 3)
    one_line_error(cli("scenarios", ckpt, "--out", tmp_path / "paths.npy", check=False), "exists")
    one_line_error(cli("scenarios", ckpt, "--series", "ftse", check=False), "unknown market series 'ftse'")
    pong = tiny_model(make_world("pong").spec).save_pretrained(tmp_path / "pong")
    one_line_error(cli("scenarios", pong, check=False), "expected a one-asset market model, found world 'pong'")
    one_line_error(
        cli("demo", "--out", tmp_path / "d", "--series", "sp500", check=False), "--series is for --world market"
    )
    one_line_error(
        cli("demo", "--out", tmp_path / "d", "--hub-members", "9", check=False), "--hub-members is for --world cascade"
    )
    one_line_error(
        cli("demo", "--out", tmp_path / "d", "--validate-every", "9", check=False),
        "--validate-every is for --world lorenz96 or fields",
    )


def test_heads_then_an_agent_in_the_dream(demo_dir, tmp_path):
    """`heads` trains and scores reward/end heads for a checkpoint; `agent` trains PPO in its dream
    and on the real game and scores both beside a random policy; neither overwrites."""
    ckpt, heads = demo_dir / "checkpoint", tmp_path / "heads"
    missing = cli("agent", ckpt, "--out", tmp_path / "a0", check=False)
    assert missing.returncode == 2 and "expected heads" in missing.stderr and "diffworld heads" in missing.stderr
    out = cli("heads", ckpt, "--out", heads, "--episodes", "3", "--held-out", "2", "--steps", "5").stdout
    assert "held out, real new frames" in out and "held out, dreamed new frames" in out
    scores = json.loads((heads / "config.json").read_text())["held_out_scores"]
    assert set(scores) == {"real", "dreamed"} and scores["real"]["events"]["ends"] == 2
    again = cli("heads", ckpt, "--out", heads, "--steps", "5", check=False)
    assert again.returncode == 2 and "already holds heads" in again.stderr

    agent = tmp_path / "agent"
    cli(
        "agent",
        ckpt,
        "--heads",
        heads,
        "--out",
        agent,
        "--steps",
        "64",
        "--envs",
        "2",
        "--episodes",
        "2",
        "--dream-steps",
        "10",
    )
    report = json.loads((agent / "metrics.json").read_text())
    returns = report["held_out_real_returns"]
    assert set(returns) == {"random", "dream_agent", "real_agent"} and all(r["episodes"] == 2 for r in returns.values())
    assert all(-3 <= r["mean"] <= 3 for r in returns.values())
    assert (agent / "dream_agent.safetensors").is_file() and (agent / "real_agent.safetensors").is_file()


def test_train_compile_without_a_cpp_compiler_is_one_line(tmp_path):
    env_cxx = {"CXX": "no-such-compiler++"}
    proc = subprocess.run(
        [sys.executable, "-m", "diffworld", "train", "--out", str(tmp_path / "run"), "--compile",
         "--preset", "tiny", "--steps", "1"],
        capture_output=True, text=True, env={**os.environ, **env_cxx},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "C++ compiler" in proc.stderr, (
        proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


#: A module a checkpoint may name: it leaves a file behind when imported, and another when its policy is called.
MARKER_MODULE = """
import os, pathlib
pathlib.Path(os.environ["DIFFWORLD_TEST_MARKERS"], "imported").touch()

def policy(world, frame, rng):
    pathlib.Path(os.environ["DIFFWORLD_TEST_MARKERS"], "called").touch()
    return 0
"""


def test_a_checkpoint_naming_a_module_runs_none_of_its_code(tmp_path, monkeypatch):
    """A checkpoint is data: a policy `module:function` or a world `gym:<module>:<env>` in its config
    is imported only when the command line passes that name for the run."""
    from diffworld.spec import ActionSpace, WorldSpec
    from diffworld.worlds import make_world
    from tests.conftest import tiny_model

    modules, markers = tmp_path / "modules", tmp_path / "markers"
    modules.mkdir()
    markers.mkdir()
    (modules / "evilmod.py").write_text(MARKER_MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DIFFWORLD_TEST_MARKERS", str(markers))
    collect = {"source": "pong", "policy": "evilmod:policy", "epsilon": 0.0, "max_steps": 60, "world_options": {}}
    data = {"data": {"world": "pong", "collect": collect, "train_seeds": [0, 1]}}
    by_policy = tiny_model(make_world("pong").spec).save_pretrained(tmp_path / "policy", extra=data)
    gym = WorldSpec(
        "gym:evilmod:Evil-v0", "grid", (3, 16, 16), "bounded", ActionSpace("discrete", 2), value_range=(0.0, 255.0)
    )
    gym_data = {
        "data": {
            "world": gym.name,
            "collect": {**collect, "source": gym.name, "policy": "random"},
            "train_seeds": [0, 1],
        }
    }
    by_world = tiny_model(gym).save_pretrained(tmp_path / "gym", extra=gym_data)
    commands = {
        "rollout": ["--out", tmp_path / "r.gif", "--frames", "4", "--members", "1"],
        "eval": ["--out", tmp_path / "ev", "--cases", "1", "--members", "2", "--horizon", "1"],
        "heads": ["--out", tmp_path / "heads", "--episodes", "2", "--held-out", "1", "--steps", "1"],
        "agent": ["--out", tmp_path / "agent", "--steps", "16", "--envs", "2", "--episodes", "1"],
    }
    for command, args in commands.items():
        one_line_error(cli(command, by_policy, *args, check=False), "'evilmod:policy'", "--policy evilmod:policy")
        one_line_error(cli(command, by_world, *args, check=False), "'evilmod'", "--world gym:evilmod:Evil-v0")
    play = [sys.executable, "-m", "diffworld", "play", str(by_world), "--port", "0"]
    proc = subprocess.run(play, capture_output=True, text=True, timeout=120)
    one_line_error(proc, "--world gym:evilmod:Evil-v0")
    assert list(markers.iterdir()) == []
    one_line_error(
        cli("rollout", by_world, *commands["rollout"], "--world", "gym:other:Env-v0", check=False),
        "--world gym:evilmod:Evil-v0",
    )
    assert list(markers.iterdir()) == []
    # Passed on the command line, the same names are used: the module is imported, the policy called.
    cli("rollout", by_policy, *commands["rollout"], "--policy", "evilmod:policy")
    assert sorted(p.name for p in markers.iterdir()) == ["called", "imported"]


def test_a_model_trained_with_a_chance_code_dreams_with_it_and_others_refuse_the_chance_sampler(demo_dir, tmp_path):
    run, demo = tmp_path / "chance", demo_dir / "checkpoint"
    train = ["train", "--out", run, "--steps", "3", "--episodes", "2", "--init", demo, "--dit", '{"chance": 4}']
    one_line_error(cli(*train, "--preset", "tiny", check=False), "drop --preset")
    one_line_error(cli(*train[:-4], "--fresh", "denoiser.net.chance", check=False), "give --init too")
    assert "fresh: denoiser.net.chance" in cli(*train).stdout  # the demo's model, with a chance code added
    config, before = (json.loads((d / "config.json").read_text()) for d in (run / "checkpoint", demo))
    assert config["model"]["dit"] == {**before["model"]["dit"], "chance": 4}
    assert config["sampler"]["method"] == "chance" and config["init"] == str(demo)
    cli("rollout", run / "checkpoint", "--out", tmp_path / "dream.gif", "--frames", "4")
    assert (tmp_path / "dream.gif").is_file()
    refused = cli("rollout", demo_dir / "checkpoint", "--out", tmp_path / "x.gif", "--method", "chance", check=False)
    one_line_error(refused, "needs a model trained with a chance code")
    assert not (tmp_path / "x.gif").exists()
