"""Observed cascades on a user's graph as an episode store: binning, states, and bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffworld.cli import app
from diffworld.data.cascades import import_cascades
from diffworld.data.store import EpisodeStore
from diffworld.worlds.cascade import I, R, S, node_states

GRAPH = "source,target\nann,bob\nbob,cid\ncid,dan\nann,dan\n"


def files(tmp_path: Path, table: str) -> tuple[Path, Path]:
    (tmp_path / "g.csv").write_text(GRAPH)
    (tmp_path / "c.csv").write_text(table)
    return tmp_path / "c.csv", tmp_path / "g.csv"


def test_cascades_become_episodes_of_infected_then_removed_nodes(tmp_path: Path) -> None:
    table, graph = files(tmp_path, "time,cascade,node\n10.0,a,bob\n12.5,a,ann\n13,a,cid\n17.9,a,dan\n0,b,dan\n")
    store = import_cascades(tmp_path / "s.zarr", table, graph, step=2.5)
    assert len(store) == 2 and store.spec.frame_shape == (4, 3) and store.spec.step_duration == 2.5
    states = node_states(store.episode(0).frames)[0]  # nodes ann, bob, cid, dan; steps of 2.5 from 10
    assert states.tolist() == [[S, I, S, S], [I, R, I, S], [R, R, R, S], [R, R, R, I], [R, R, R, R]]
    assert node_states(store.episode(1).frames)[0].tolist() == [[S, S, S, I], [S, S, S, R]]
    assert store.meta["nodes"] == ["ann", "bob", "cid", "dan"] and store.meta["cascades"] == ["a", "b"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("cascade,node\na,ann\n", "expected a header with columns cascade, node, time"),
        ("cascade,node,time\na,eve,1\n", r"c.csv, line 2: node 'eve' is not in the graph"),
        ("cascade,node,time\na,ann,1\na,ann,2\n", r"line 3: node 'ann' is reached twice in cascade 'a' \(line 2\)"),
        ("cascade,node,time\na,ann,noon\n", r"line 2: expected a number as the time, found 'noon'"),
        ("cascade,node,time\na,ann,5\nb,bob,1\na,cid,4\n", r"line 4: cascade 'a' goes back in time \(4 after 5\)"),
        ("cascade,node,time\na,ann\n", "line 2: expected 3 fields, found 2"),
        ("cascade,node,time\n", "expected rows after the header"),
    ],
)
def test_bad_rows_end_in_one_line_and_nothing_is_written(tmp_path: Path, table: str, message: str) -> None:
    table_path, graph = files(tmp_path, table)
    with pytest.raises(ValueError, match=message) as info:
        import_cascades(tmp_path / "s.zarr", table_path, graph, step=1.0)
    assert "\n" not in str(info.value) and not (tmp_path / "s.zarr").exists()


def test_the_command_writes_a_store_and_refuses_a_bad_step(tmp_path: Path) -> None:
    table, graph = files(tmp_path, "cascade,node,time\nx,ann,0\nx,bob,1\n")
    ok = CliRunner().invoke(
        app, ["import-cascades", str(table), "--graph", str(graph), "--step", "1", "--out", str(tmp_path / "s.zarr")]
    )
    assert ok.exit_code == 0, ok.output
    assert len(EpisodeStore.open(tmp_path / "s.zarr")) == 1
    bad = CliRunner().invoke(
        app, ["import-cascades", str(table), "--graph", str(graph), "--step", "0", "--out", str(tmp_path / "t.zarr")]
    )
    assert bad.exit_code != 0 and "step: expected a positive number" in bad.output
    assert not (tmp_path / "t.zarr").exists()


def test_a_model_trains_on_observed_cascades_and_is_scored_on_held_out_ones(tmp_path: Path) -> None:
    rows = "".join(f"c{i},ann,0\nc{i},bob,1\nc{i},cid,{2 + i % 2}\n" for i in range(8))
    table, graph = files(tmp_path, "cascade,node,time\n" + rows)
    import_cascades(tmp_path / "s.zarr", table, graph, step=1.0)
    (tmp_path / "h.csv").write_text("cascade,node,time\nh1,ann,0\nh1,dan,1\nh1,cid,2\nh2,bob,5\nh2,ann,6\n")
    import_cascades(tmp_path / "h.zarr", tmp_path / "h.csv", graph, step=1.0)
    run = CliRunner().invoke(
        app,
        ["train", "--data", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "m"), "--preset", "tiny",
         "--steps", "2", "--batch-size", "2", "--dit", '{"frames": 3}'],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    ckpt = str(tmp_path / "m" / "checkpoint")
    missing = CliRunner().invoke(app, ["eval", ckpt, "--out", str(tmp_path / "e")])
    assert missing.exit_code != 0 and "give the store of held-out ones with --data" in missing.output
    own = CliRunner().invoke(app, ["eval", ckpt, "--out", str(tmp_path / "e"), "--data", str(tmp_path / "s.zarr")])
    assert own.exit_code != 0 and "is the store the model trained on" in own.output
    scored = CliRunner().invoke(
        app, ["eval", ckpt, "--out", str(tmp_path / "e"), "--data", str(tmp_path / "h.zarr"), "--members", "2"]
    )
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics["headline"]["node_brier"]) == {"model", "fitted_ic", "fitted_mean_field", "persistence"}
    assert metrics["cases"]["cascades"] == 2 and "model / fitted independent cascade" in scored.output
    assert (tmp_path / "e" / "spread.gif").is_file() and "hubs.png" not in scored.output
