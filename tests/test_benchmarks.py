"""The benchmark scripts run end to end at tiny sizes and print the tables the README quotes.

Their figures are not checked (speed belongs in the scripts, not in timed tests); what is checked
is that each script runs, prints its machine line and a row per setting, and — for the KV cache —
that the cached and recomputed dreams are the same, which the README's speed-ups presuppose.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("CPU "), proc.stdout[:200]  # the machine line: model, ISA, bf16 support
    return proc.stdout


def test_rollout_cache_dreams_the_same_with_and_without_the_cache():
    out = bench(
        "rollout_cache.py",
        "--contexts",
        "4",
        "--configs",
        "demo",
        "--members",
        "1",
        "2",
        "--frames",
        "2",
        "--repeats",
        "1",
    )
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["demo"]]
    assert [r[3] for r in rows] == ["1", "2"], out  # one row per member count
    assert all(r[-1] == "0.0%" for r in rows), out  # share of dreamed pixels that differ
    assert all(float(r[4]) > 0 and r[6].endswith("x") for r in rows), out


def test_train_throughput_reports_mfu_against_the_measured_peak():
    # Eager only: the compiled step has its own test (tests/test_train.py), and compiling costs ~40 s cold.
    out = bench(
        "train_throughput.py",
        "--preset",
        "tiny",
        "--episodes",
        "2",
        "--windows",
        "1",
        "--rounds",
        "1",
        "--modes",
        "eager",
    )
    fp32 = next(line.split() for line in out.splitlines() if line.split()[:1] == ["fp32"])
    mode, peak, steps_per_s, mfu = fp32[1], float(fp32[2]), float(fp32[4]), fp32[-1]
    assert mode == "eager" and peak > 0 and steps_per_s > 0 and re.fullmatch(r"\d+\.\d%", mfu), out


def test_sampler_steps_scores_each_setting():
    out = bench(
        "sampler_steps.py",
        "--cases",
        "2",
        "--members",
        "2",
        "--steps",
        "1",
        "2",
        "--methods",
        "euler",
        "--repeats",
        "1",
    )
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in out.splitlines() if line.split()[:1] == ["euler"]}
    assert list(rows) == ["euler 1", "euler 2"], out
    assert [r[0] for r in rows.values()] == ["1", "2"], out  # network evaluations per frame
    assert all(len(r) == 7 and float(r[-1]) > 0 for r in rows.values()), out  # 4 scores, valid share, frames/s
    assert "persist." in out and "oracle" in out


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason='needs diffusers (pip install -e ".[bench]")')
def test_vs_diffusers_times_both_networks():
    out = bench("vs_diffusers.py", "--configs", "demo", "--modes", "image", "--batch", "2", "--repeats", "1")
    row = next(line.split() for line in out.splitlines() if line.split()[:2] == ["demo", "image"])
    assert len(row) == 10 and float(row[5]) > 0, out


def test_chance_toy_scores_each_sampler_and_knows_a_whole_ball():
    out = bench("chance_toy.py", "--steps", "2", "--draws", "8", "--samplers", "1", "4")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 1 ") or line.startswith("| 4 ")]
    assert [r[0].strip() for r in rows] == ["1", "4"], out
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("chance_toy", BENCHMARKS / "chance_toy.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    frames = torch.zeros(4, 32, 32, dtype=torch.bool)
    frames[0, 10:12, 15:17] = True  # a whole ball at the serve columns
    frames[1, 10:12, 15] = True  # half a ball
    frames[2, 10:12, 20:22] = True  # a whole ball elsewhere
    valid, empty = toy.valid_and_empty(frames)
    assert valid.tolist() == [True, False, False, False] and empty.tolist() == [False, False, False, True]
    windows = toy.serve_windows(64, torch.Generator().manual_seed(0), toy.NORMALIZATION["pong"])
    on = windows[:, :, 0] / 0.5 * toy.NORMALIZATION["pong"][1] + toy.NORMALIZATION["pong"][0] > 0.5
    assert toy.valid_and_empty(on.flatten(0, 1))[0].all()  # every true frame is a valid serve


def test_step_errors_splits_a_pong_models_draws_by_kind():
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "step_errors.py"), "--moments", "300"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {
        m[1]: (int(m[2]), m[3])
        for m in re.finditer(r"(ordinary|serve|first move)\s+(\d+) moments: exact ([\d.]+|-)", proc.stdout)
    }
    assert list(rows) == ["ordinary", "serve", "first move"] and sum(n for n, _ in rows.values()) == 300, proc.stdout
    assert float(rows["ordinary"][1]) > 0.9, proc.stdout  # the shipped model's ordinary frames are nearly all exact
    assert "inexact ordinary frames:" in proc.stdout


def test_graph_attention_measures_both_attentions_at_each_size():
    out = bench("graph_attention.py", "--nodes", "200", "--repeats", "1", "--train-nodes", "60", "--frames", "2")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["200"]]
    assert [r[1] for r in rows] == ["dense", "sparse"], out
    assert all(float(v) > 0 for r in rows for v in r[2:6]), out  # build, forward, train seconds and peak memory
    assert rows[1][-1].endswith("x") and rows[1][-2].endswith("x"), out  # sparse ÷ dense
