"""Your own environment through the command line: collect into a store, train on it, evaluate, dream."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from diffworld.data.store import EpisodeStore
from tests.test_cli import cli, one_line_error

pytest.importorskip("minatar")

TINY_TRAIN = ["--preset", "tiny", "--steps", "6", "--batch-size", "4"]


@pytest.fixture(scope="module")
def breakout(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("data") / "breakout.zarr"
    cli("collect", "minatar:breakout", "--out", store, "--episodes", "6", "--policy", "default", "--workers", "2")
    return store


def test_collect_resumes_and_refuses_a_different_collection(breakout, tmp_path):
    copy = tmp_path / "b.zarr"
    shutil.copytree(breakout, copy)
    proc = cli("collect", "minatar:breakout", "--out", copy, "--episodes", "8", "--policy", "default")
    assert "8 episodes" in proc.stdout
    store = EpisodeStore.open(copy)
    assert sorted(store.seeds.tolist()) == list(range(8))  # 6 kept, 2 added, none twice
    first = EpisodeStore.open(breakout).episode(0)
    assert (store.episode(0).frames == first.frames).all()
    one_line_error(cli("collect", "minatar:breakout", "--out", copy, "--episodes", "8", check=False), "collected with")


def test_train_eval_rollout_on_a_store(breakout, tmp_path):
    cli("train", "--data", breakout, "--out", tmp_path / "run", *TINY_TRAIN)
    config = json.loads((tmp_path / "run/checkpoint/config.json").read_text())
    assert config["spec"]["name"] == "minatar:breakout" and config["model"]["dit"]["patch"] == 2
    assert config["data"]["collect"]["policy"] == "default" and config["data"]["train_seeds"] == [0, 5]
    proc = cli(
        "eval",
        tmp_path / "run/checkpoint",
        "--out",
        tmp_path / "ev",
        "--cases",
        "4",
        "--members",
        "2",
        "--horizon",
        "4",
    )
    assert "cell-F1 skill vs oracle" in proc.stdout
    m = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert len(m["cell_f1_skill_vs_oracle"]) == 4
    assert set(m["metrics"]["model"]["cell_f1_by_channel"]) == {"paddle", "ball", "trail", "brick"}
    assert m["held_out"]["seeds"][0] >= 1_000_000
    cli("rollout", tmp_path / "run/checkpoint", "--out", tmp_path / "d.gif", "--frames", "4", "--members", "1")
    assert (tmp_path / "d.gif").stat().st_size > 1000


def test_bad_data_fails_before_training_and_overwrites_nothing(breakout, tmp_path):
    run = tmp_path / "run"
    one_line_error(
        cli("train", "--data", tmp_path / "nope.zarr", "--out", run, *TINY_TRAIN, check=False), "no episode store"
    )
    assert not run.exists()
    corrupt = tmp_path / "corrupt.zarr"
    shutil.copytree(breakout, corrupt)
    (corrupt / "zarr.json").write_text("{not json")
    one_line_error(cli("train", "--data", corrupt, "--out", run, *TINY_TRAIN, check=False), str(corrupt))
    assert not run.exists()
    # A layout that does not fit the store's 10×10 frames, asked for explicitly, is an error.
    one_line_error(
        cli("train", "--data", breakout, "--out", run, "--dit", '{"patch": 3}', *TINY_TRAIN, check=False),
        "patch size 3",
    )
    assert not run.exists()
    # A run on breakout cannot be resumed on pong frames: refused before a step, the checkpoint intact.
    cli("train", "--data", breakout, "--out", run, *TINY_TRAIN)
    before = (run / "checkpoint/model.safetensors").read_bytes()
    pong = tmp_path / "pong.zarr"
    cli("collect", "pong", "--out", pong, "--episodes", "2", "--max-steps", "40")
    proc = cli("train", "--data", pong, "--out", run, "--resume", *TINY_TRAIN, check=False)
    one_line_error(proc, "resuming it needs the same")
    assert (run / "checkpoint/model.safetensors").read_bytes() == before


def test_collect_bad_source(tmp_path):
    one_line_error(cli("collect", "minatar:nope", "--out", tmp_path / "x.zarr", check=False), "unknown MinAtar game")
    one_line_error(cli("collect", "pong", "--out", tmp_path / "x.zarr", "--size", "3", check=False), "takes no options")
    assert not (tmp_path / "x.zarr").exists()


def test_collection_killed_midway_resumes_without_duplicates(tmp_path):
    """A real SIGKILL of `diffworld collect` mid-run: the store opens with what was finished, and
    the same command completes it with every seed exactly once."""
    import os
    import signal
    import sys
    import time

    store = tmp_path / "pong.zarr"
    args = ["collect", "pong", "--out", str(store), "--episodes", "300", "--max-steps", "200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffworld", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some episodes are committed, then kill
        time.sleep(0.2)
        try:
            if len(EpisodeStore.open(store, validate=False)) >= 20:
                break
        except (FileNotFoundError, ValueError):
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = EpisodeStore.open(store)  # validates: every committed episode is whole
    assert 20 <= len(partial) < 300, len(partial)
    cli(*args)
    done = EpisodeStore.open(store)
    assert sorted(done.seeds.tolist()) == list(range(300))
    assert (done.episode(0).frames == partial.episode(0).frames).all()


def test_a_second_collection_into_one_store_is_refused_while_the_first_writes(tmp_path):
    """Two `diffworld collect` into one store at once: the second is refused naming the first; once
    the first is killed, the next one says it takes over and finishes with every seed exactly once."""
    import os
    import signal
    import sys
    import time

    store = tmp_path / "pong.zarr"
    args = ["collect", "pong", "--out", str(store), "--episodes", "3000", "--max-steps", "200"]
    first = subprocess.Popen(
        [sys.executable, "-m", "diffworld", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the first is writing episodes
            time.sleep(0.2)
            try:
                if len(EpisodeStore.open(store, validate=False)) >= 2:
                    break
            except (FileNotFoundError, ValueError):
                continue
        second = cli(*args, check=False)
        one_line_error(second, f"{store}: expected no other writer, found pid {first.pid} on ")
        assert first.poll() is None, "the first collection ended before the second started"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    held = len(EpisodeStore.open(store))  # the refused collection broke nothing
    assert 2 <= held < 3000
    proc = cli(*args[:-4], "--episodes", str(held + 2), "--max-steps", "200")
    note = f"note: {store}: took over from a writer that ended without closing the store (pid {first.pid} on "
    assert note in proc.stderr
    done = EpisodeStore.open(store)
    assert sorted(done.seeds.tolist()) == list(range(held + 2))
    assert cli(*args[:-4], "--episodes", str(held + 2), "--max-steps", "200").stderr == ""  # closed: no note
