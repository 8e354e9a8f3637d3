"""Every command, given bad input of each kind an option has (a wrong type, a value out of range,
a missing file, a file where a folder is expected, a folder where a file is expected, an unknown
name), ends in one `error: ...` line and exit code 2, before any work: never a traceback.

The commands run in this process (typer's CliRunner), so the many cases take seconds.
"""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffworld.cli import app
from diffworld.data.collect import CollectConfig, collect
from diffworld.worlds import make_world
from diffworld.worlds.market import market_spec
from tests.conftest import tiny_model

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine --device cuda is valid")
TRAIN = ["--preset", "tiny", "--episodes", "2", "--steps", "1", "--batch-size", "2"]

#: (id, arguments): {ckpt} a tiny pong checkpoint, {market} a tiny market one, {store} a tiny pong
#: store, {file} a file, {dir} an empty folder, {new} a path where nothing is yet.
CASES = [
    # Usage errors, as typer reports them: now one line too.
    ("unknown-command", ["nosuch"]),
    ("wrong-type", ["collect", "pong", "--out", "{new}", "--episodes", "abc"]),
    ("unknown-option", ["train", "--out", "{new}", "--bogus"]),
    ("missing-argument", ["eval"]),
    ("missing-option", ["agent", "{ckpt}"]),
    ("float-for-int", ["rollout", "{ckpt}", "--frames", "2.5"]),
    # collect
    ("collect-unknown-world", ["collect", "nope", "--out", "{new}"]),
    ("collect-episodes-0", ["collect", "pong", "--out", "{new}", "--episodes", "0"]),
    ("collect-epsilon-nan", ["collect", "pong", "--out", "{new}", "--epsilon", "nan"]),
    ("collect-workers-0", ["collect", "pong", "--out", "{new}", "--workers", "0"]),
    ("collect-seed-offset-negative", ["collect", "pong", "--out", "{new}", "--seed-offset", "-1"]),
    ("collect-options-list", ["collect", "pong", "--out", "{new}", "--options", "[1]"]),
    ("collect-unknown-policy", ["collect", "pong", "--out", "{new}", "--policy", "nope"]),
    ("collect-out-file", ["collect", "pong", "--out", "{file}"]),
    ("collect-out-under-file", ["collect", "pong", "--out", "{file}/x.zarr"]),
    # train
    ("train-depth-0", ["train", "--out", "{new}", *TRAIN, "--dit", '{"depth": 0}']),
    ("train-frames-1", ["train", "--out", "{new}", *TRAIN, "--dit", '{"frames": 1}']),
    ("train-heads-3", ["train", "--out", "{new}", *TRAIN, "--dit", '{"heads": 3}']),
    ("train-depth-str", ["train", "--out", "{new}", *TRAIN, "--dit", '{"depth": "two"}']),
    ("train-mlp-nan", ["train", "--out", "{new}", *TRAIN, "--dit", '{"mlp_ratio": NaN}']),
    ("train-patch-7", ["train", "--out", "{new}", *TRAIN, "--dit", '{"patch": 7}']),
    ("train-steps-0", ["train", "--out", "{new}", *TRAIN, "--steps", "0"]),
    ("train-batch-0", ["train", "--out", "{new}", *TRAIN, "--batch-size", "0"]),
    ("train-lr-nan", ["train", "--out", "{new}", *TRAIN, "--lr", "nan"]),
    ("train-lr-0", ["train", "--out", "{new}", *TRAIN, "--lr", "0"]),
    ("train-seed-negative", ["train", "--out", "{new}", *TRAIN, "--seed", "-1"]),
    ("train-episodes-0", ["train", "--out", "{new}", *TRAIN, "--episodes", "0"]),
    ("train-device-tpu", ["train", "--out", "{new}", *TRAIN, "--device", "tpu"]),
    pytest.param("train-device-cuda", ["train", "--out", "{new}", *TRAIN, "--device", "cuda"], marks=NO_CUDA),
    ("train-precision", ["train", "--out", "{new}", *TRAIN, "--precision", "fp16"]),
    ("train-loss-nan", ["train", "--out", "{new}", *TRAIN, "--loss", '{"event_weight": NaN}']),
    ("train-unknown-world", ["train", "--out", "{new}", *TRAIN, "--world", "nope"]),
    ("train-subgraphs-of-pong", ["train", "--out", "{new}", *TRAIN, "--subgraph-nodes", "100"]),
    ("train-subgraph-nodes-negative", ["train", "--out", "{new}", *TRAIN, "--subgraph-nodes", "-1"]),
    ("train-graph-attention", ["train", "--out", "{new}", *TRAIN, "--dit", '{"graph_attention": "fast"}']),
    ("train-data-and-world", ["train", "--out", "{new}", "--data", "{store}", "--world", "pong"]),
    ("train-data-and-episodes", ["train", "--out", "{new}", "--data", "{store}", "--episodes", "3"]),
    ("train-data-missing", ["train", "--out", "{new}", "--data", "{new}"]),
    ("train-data-file", ["train", "--out", "{new}", "--data", "{file}"]),
    ("train-data-folder", ["train", "--out", "{new}", "--data", "{dir}"]),
    ("train-out-file", ["train", "--out", "{file}", *TRAIN]),
    # eval
    ("eval-missing-checkpoint", ["eval", "{new}"]),
    ("eval-checkpoint-file", ["eval", "{file}"]),
    ("eval-checkpoint-empty-folder", ["eval", "{dir}"]),
    ("eval-out-file", ["eval", "{ckpt}", "--out", "{file}"]),
    ("eval-out-under-file", ["eval", "{ckpt}", "--out", "{file}/sub"]),
    ("eval-members-1", ["eval", "{ckpt}", "--out", "{new}", "--members", "1"]),
    ("eval-adaptive-real-world", ["eval", "{market}", "--out", "{new}", "--adaptive-steps", "4"]),
    ("eval-horizon-0", ["eval", "{ckpt}", "--out", "{new}", "--horizon", "0"]),
    ("eval-seed-negative", ["eval", "{ckpt}", "--out", "{new}", "--seed", "-1"]),
    ("eval-seed-offset-negative", ["eval", "{ckpt}", "--out", "{new}", "--seed-offset", "-1"]),
    ("eval-sampler-steps-0", ["eval", "{ckpt}", "--out", "{new}", "--steps", "0"]),
    ("eval-method", ["eval", "{ckpt}", "--out", "{new}", "--method", "nope"]),
    ("eval-churn-negative", ["eval", "{ckpt}", "--out", "{new}", "--churn", "-1"]),
    ("eval-device-tpu", ["eval", "{ckpt}", "--out", "{new}", "--device", "tpu"]),
    pytest.param("eval-device-cuda", ["eval", "{ckpt}", "--out", "{new}", "--device", "cuda"], marks=NO_CUDA),
    ("eval-unknown-policy", ["eval", "{ckpt}", "--out", "{new}", "--policy", "nope"]),
    ("eval-other-world", ["eval", "{ckpt}", "--out", "{new}", "--world", "nope"]),
    # rollout
    ("rollout-frames-huge", ["rollout", "{ckpt}", "--out", "{new}.gif", "--frames", "100000000"]),
    ("rollout-frames-0", ["rollout", "{ckpt}", "--out", "{new}.gif", "--frames", "0"]),
    ("rollout-members-0", ["rollout", "{ckpt}", "--out", "{new}.gif", "--members", "0"]),
    ("rollout-out-folder", ["rollout", "{ckpt}", "--out", "{dir}"]),
    ("rollout-out-under-file", ["rollout", "{ckpt}", "--out", "{file}/x.gif"]),
    ("rollout-out-not-gif", ["rollout", "{ckpt}", "--out", "{new}.txt"]),
    ("rollout-device-tpu", ["rollout", "{ckpt}", "--out", "{new}.gif", "--device", "tpu"]),
    pytest.param("rollout-device-cuda", ["rollout", "{ckpt}", "--out", "{new}.gif", "--device", "cuda"], marks=NO_CUDA),
    ("rollout-sigma-ctx-nan", ["rollout", "{ckpt}", "--out", "{new}.gif", "--sigma-ctx", "nan"]),
    ("rollout-adaptive-negative", ["rollout", "{ckpt}", "--out", "{new}.gif", "--adaptive-steps", "-1"]),
    # demo: 0 is a value, checked, never "not given"
    ("demo-unknown-world", ["demo", "--out", "{new}", "--world", "nope"]),
    ("demo-steps-0", ["demo", "--out", "{new}", "--steps", "0"]),
    ("demo-episodes-0", ["demo", "--out", "{new}", "--episodes", "0"]),
    ("demo-cases-0", ["demo", "--out", "{new}", "--cases", "0"]),
    ("demo-members-1", ["demo", "--out", "{new}", "--members", "1"]),
    ("demo-batch-0", ["demo", "--out", "{new}", "--batch-size", "0"]),
    ("demo-preset", ["demo", "--out", "{new}", "--preset", "huge"]),
    ("demo-device-tpu", ["demo", "--out", "{new}", "--device", "tpu"]),
    ("demo-out-file", ["demo", "--out", "{file}"]),
    ("demo-series-not-market", ["demo", "--out", "{new}", "--series", "sp500"]),
    ("demo-forecast-validate-negative", ["demo", "--out", "{new}", "--world", "lorenz96", "--validate-every", "-1"]),
    ("demo-forecast-members-1", ["demo", "--out", "{new}", "--world", "fields", "--members", "1"]),
    ("demo-forecast-device-tpu", ["demo", "--out", "{new}", "--world", "lorenz96", "--device", "tpu"]),
    ("demo-cascade-hub-0", ["demo", "--out", "{new}", "--world", "cascade", "--hub-members", "0"]),
    ("demo-cascade-steps-0", ["demo", "--out", "{new}", "--world", "cascade", "--steps", "0"]),
    ("demo-market-unknown-series", ["demo", "--out", "{new}", "--world", "market", "--series", "nope"]),
    ("demo-market-series-folder", ["demo", "--out", "{new}", "--world", "market", "--series", "{dir}"]),
    ("demo-market-series-missing", ["demo", "--out", "{new}", "--world", "market", "--series", "{new}.csv"]),
    ("demo-market-steps-0", ["demo", "--out", "{new}", "--world", "market", "--steps", "0"]),
    ("demo-market-device-tpu", ["demo", "--out", "{new}", "--world", "market", "--device", "tpu"]),
    ("demo-market-out-file", ["demo", "--out", "{file}", "--world", "market"]),
    # scenarios
    ("scenarios-missing-checkpoint", ["scenarios", "{new}"]),
    ("scenarios-not-market", ["scenarios", "{ckpt}"]),
    ("scenarios-bad-date", ["scenarios", "{market}", "--date", "2016-13-45"]),
    ("scenarios-date-words", ["scenarios", "{market}", "--date", "yesterday"]),
    ("scenarios-horizon-0", ["scenarios", "{market}", "--horizon", "0"]),
    ("scenarios-n-0", ["scenarios", "{market}", "--n", "0"]),
    ("scenarios-n-huge", ["scenarios", "{market}", "--n", "100000000000"]),
    ("scenarios-out-folder", ["scenarios", "{market}", "--out", "{dir}"]),
    ("scenarios-out-not-npy", ["scenarios", "{market}", "--out", "{new}.txt"]),
    ("scenarios-out-under-file", ["scenarios", "{market}", "--out", "{file}/x.npy"]),
    ("scenarios-unknown-series", ["scenarios", "{market}", "--series", "ftse"]),
    ("scenarios-series-folder", ["scenarios", "{market}", "--series", "{dir}"]),
    # play (each fails before the server starts)
    ("play-port-70000", ["play", "{ckpt}", "--port", "70000"]),
    ("play-port-negative", ["play", "{ckpt}", "--port", "-1"]),
    ("play-fps-nan", ["play", "{ckpt}", "--fps", "nan"]),
    ("play-sessions-0", ["play", "{ckpt}", "--max-sessions", "0"]),
    ("play-threads-0", ["play", "{ckpt}", "--threads", "0"]),
    ("play-device-tpu", ["play", "{ckpt}", "--device", "tpu"]),
    pytest.param("play-device-cuda", ["play", "{ckpt}", "--device", "cuda"], marks=NO_CUDA),
    ("play-origin", ["play", "{ckpt}", "--allow-origin", "nope"]),
    ("play-checkpoint-file", ["play", "{file}"]),
    # heads
    ("heads-held-out-0", ["heads", "{ckpt}", "--out", "{new}", "--held-out", "0"]),
    ("heads-episodes-0", ["heads", "{ckpt}", "--out", "{new}", "--episodes", "0"]),
    ("heads-steps-0", ["heads", "{ckpt}", "--out", "{new}", "--steps", "0"]),
    ("heads-batch-0", ["heads", "{ckpt}", "--out", "{new}", "--batch-size", "0"]),
    ("heads-out-file", ["heads", "{ckpt}", "--out", "{file}"]),
    ("heads-device-tpu", ["heads", "{ckpt}", "--out", "{new}", "--device", "tpu"]),
    # agent
    ("agent-no-heads", ["agent", "{ckpt}", "--out", "{new}"]),
    ("agent-heads-missing", ["agent", "pong", "--out", "{new}", "--heads", "{new}"]),
    ("agent-steps-0", ["agent", "pong", "--out", "{new}", "--steps", "0"]),
    ("agent-envs-0", ["agent", "pong", "--out", "{new}", "--envs", "0"]),
    ("agent-dream-steps-0", ["agent", "pong", "--out", "{new}", "--dream-steps", "0"]),
    ("agent-episodes-0", ["agent", "pong", "--out", "{new}", "--episodes", "0"]),
    ("agent-out-file", ["agent", "pong", "--out", "{file}"]),
    ("agent-device-tpu", ["agent", "pong", "--out", "{new}", "--device", "tpu"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    collect_cfg = {"source": "pong", "policy": "default", "epsilon": 0.0, "max_steps": 60, "world_options": {}}
    extra = {"data": {"world": "pong", "collect": collect_cfg, "train_seeds": [0, 1]}}
    places = {
        "ckpt": tiny_model(make_world("pong").spec).save_pretrained(root / "ckpt", extra=extra),
        "market": tiny_model(market_spec(("return",)), frames=6).save_pretrained(root / "market"),
        "store": collect(CollectConfig(source="pong", episodes=2, max_steps=40), root / "store.zarr").path,
        "file": root / "a_file",
        "dir": root / "a_folder",
    }
    places["file"].write_text("not a folder, not a checkpoint")
    places["dir"].mkdir()
    return places


def fill(arg: str, places: dict[str, Path]) -> str:
    """`arg` with each {place} replaced by its path (JSON braces left alone)."""
    for name, path in places.items():
        arg = arg.replace("{" + name + "}", str(path))
    return arg


def _param(case):
    """A case as a pytest parameter named by its id."""
    values, marks = (case.values, case.marks) if hasattr(case, "marks") else (case, ())
    return pytest.param(*values, marks=marks, id=values[0])


@pytest.mark.parametrize("name, args", [_param(c) for c in CASES])
def test_bad_input_ends_in_one_error_line_and_exit_code_2(places, tmp_path, name, args):
    filled = [fill(a, {"new": tmp_path / "new", **places}) for a in args]
    result = CliRunner().invoke(app, filled, env={"COLUMNS": "200"})
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "new").exists() or name.startswith("rollout-out"), "an output was written"


def test_a_name_that_is_also_a_folder_is_still_a_name(places, tmp_path, monkeypatch):
    """`demo --world market --series nasdaq --out nasdaq` reads nasdaq by name, not the output folder;
    its first failure here (a bad --members) comes before any training, from the config."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nasdaq").mkdir()
    result = CliRunner().invoke(
        app, ["demo", "--world", "market", "--series", "nasdaq", "--out", "nasdaq", "--members", "1"]
    )
    assert (
        result.exit_code == 2
        and result.stderr.strip() == "error: market demo members: expected an integer >= 2, found 1"
    ), result.stderr
