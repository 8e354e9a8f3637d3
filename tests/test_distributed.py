"""Multi-process training under torchrun, and training runs killed with SIGKILL and resumed.

Each test runs tests/scripts/train_tiny.py in subprocesses: a real torchrun with two gloo ranks,
and real SIGKILLs (between checkpoints, and in the middle of a checkpoint swap).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffworld.data.store import EpisodeStore
from diffworld.model.world_model import WorldModel
from diffworld.worlds import collect_episodes, default_policy, make_world

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
#: DDP averages the two halves' gradients where one process sums the whole batch: the order of
#: float additions differs, nothing else. Measured: max |Δparam| 3e-8 and loss 7e-8 relative after 10 steps.
PARAM_TOLERANCE = 1e-5
LOSS_TOLERANCE = 1e-5  # relative, per logged step


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "pong.zarr"
    world = make_world("pong")
    episodes = collect_episodes(lambda: world, range(3), default_policy("pong"), max_steps=60)
    created = EpisodeStore.create(path, world.spec)
    for e in episodes:
        created.append(e)
    return path


def run(*args, torchrun=False, check=True):
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        if torchrun
        else [sys.executable]
    )
    proc = subprocess.run([*prefix, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def params(path):
    return load_file(str(path))


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process(store, tmp_path):
    run(store, tmp_path / "one")
    run(store, tmp_path / "two", torchrun=True)
    rank0, rank1 = params(tmp_path / "two/params_rank0.safetensors"), params(tmp_path / "two/params_rank1.safetensors")
    assert max_diff(rank0, rank1) == 0.0  # DDP keeps the ranks bit-identical
    one = params(tmp_path / "one/params_rank0.safetensors")
    assert max_diff(one, rank0) < PARAM_TOLERANCE
    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) == 10
    assert all(abs(a - b) <= LOSS_TOLERANCE * abs(a) for a, b in zip(l1, l2)), (l1, l2)
    # Only rank 0 wrote the log and the checkpoint, once.
    assert json.loads((tmp_path / "two/checkpoint/train_state.json").read_text())["processes"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill", [["--kill-at-step", 7], ["--kill-in-swap", 2]], ids=["between-checkpoints", "mid-swap"]
)
def test_sigkilled_run_resumes_to_the_same_parameters(store, tmp_path, kill):
    run(store, tmp_path / "full")
    killed = run(store, tmp_path / "cut", *kill, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run(store, tmp_path / "cut", "--resume")
    full, cut = params(tmp_path / "full/params_rank0.safetensors"), params(tmp_path / "cut/params_rank0.safetensors")
    assert max_diff(full, cut) == 0.0
    ema_full = WorldModel.from_pretrained(tmp_path / "full/checkpoint").state_dict()
    ema_cut = WorldModel.from_pretrained(tmp_path / "cut/checkpoint").state_dict()
    assert all(torch.equal(ema_full[k], ema_cut[k]) for k in ema_full)
    assert not (tmp_path / "cut/checkpoint.tmp").exists() and not (tmp_path / "cut/checkpoint.old").exists()
