"""EpisodeStore: round trips, from_arrays, crash safety at every file write, and validation on open."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from diffworld.data.episodes import Episode, frame_stats
from diffworld.data.store import EpisodeStore, StoreError
from diffworld.spec import NO_ACTION, ActionSpace, WorldSpec
from diffworld.worlds import collect_episodes, make_world

FIELDS = ("frames", "actions", "rewards", "dones")
GRID = WorldSpec("x", "grid", (2, 4, 4), "real", ActionSpace("discrete", 3))
CONTINUOUS = WorldSpec(name="x", layout="grid", frame_shape=(1, 4, 4), action=ActionSpace("continuous", 2))
SERIES = WorldSpec("s", "series", (3, 2), "real", ActionSpace())


def _episode(spec: WorldSpec, t: int, seed: int | None) -> Episode:
    """A random episode of `t` frames fitting `spec`, float32 frames, no-action at frame 0."""
    rng = np.random.default_rng(seed)
    kind, n = spec.action.kind, spec.action.n
    if kind == "discrete":
        actions = rng.integers(0, n, t)
        actions[0] = NO_ACTION
    elif kind == "continuous":
        actions = rng.uniform(-1, 1, (t, n)).astype(np.float32)
        actions[0] = np.nan
    else:
        actions = np.full(t, NO_ACTION, np.int64)
    return Episode(
        frames=(3.0 + rng.normal(size=(t, *spec.frame_shape))).astype(np.float32),
        actions=actions,
        rewards=rng.normal(size=t).astype(np.float32),
        dones=np.arange(t) == t - 1,
        seed=seed,
    )


def _assert_same(a: Episode, b: Episode) -> None:
    """Bit for bit (NaN rows included), dtypes and seeds too."""
    for k in FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k
    assert a.seed == b.seed


@pytest.fixture(scope="module")
def pong() -> tuple[WorldSpec, list[Episode]]:
    return make_world("pong").spec, collect_episodes(lambda: make_world("pong"), [0, 1, 2])


@pytest.fixture
def grid_store(tmp_path: Path) -> Path:
    """A committed store of 3 float episodes (7, 5 and 9 frames) in chunks of 4 frames."""
    store = EpisodeStore.create(tmp_path / "s", GRID, chunk_frames=4)
    for t, seed in ((7, 0), (5, None), (9, 2)):
        store.append(_episode(GRID, t, seed))
    return store.path


# --- round trips -------------------------------------------------------------------------------


def test_pong_round_trip_is_bit_exact_with_seeds_and_stats(tmp_path: Path, pong: tuple) -> None:
    spec, eps = pong
    meta = {"source": "pong", "policy": "random", "world_options": {}}
    store = EpisodeStore.create(tmp_path / "pong", spec, meta=meta, chunk_frames=64)
    for ep in eps:
        store.append(ep)
    back = EpisodeStore.open(tmp_path / "pong")
    assert len(back) == 3 and back.num_frames == sum(len(e) for e in eps)
    assert back.spec == spec and back.meta == meta
    assert back.seeds.tolist() == [0, 1, 2] and back.seeds.dtype == np.int64
    assert back.episode_ends.tolist() == np.cumsum([len(e) for e in eps]).tolist()
    for ep, got, one in zip(eps, back.episodes(), (back.episode(i) for i in range(3)), strict=True):
        _assert_same(ep, got)
        _assert_same(ep, one)
    _assert_same(eps[-1], back.episode(-1))
    frames, actions, _, _, ends = back.arrays()
    assert frames.dtype == np.uint8 and np.array_equal(frames, np.concatenate([e.frames for e in eps]))
    assert np.array_equal(actions, np.concatenate([e.actions for e in eps])) and ends[-1] == len(frames)
    for got, want in zip(back.stats(), frame_stats(eps), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError):
        back.episode(3)


@pytest.mark.parametrize("spec", [CONTINUOUS, SERIES], ids=["continuous-grid", "none-series"])
def test_continuous_and_no_action_round_trip(tmp_path: Path, spec: WorldSpec) -> None:
    eps = [_episode(spec, t, s) for t, s in ((6, 3), (1, None), (11, 4))]
    store = EpisodeStore.create(tmp_path / "s", spec, chunk_frames=4)
    for ep in eps:
        store.append(ep)
    back = EpisodeStore.open(tmp_path / "s")
    for ep, got in zip(eps, back.episodes(), strict=True):
        _assert_same(ep, got)
    assert back.seeds.tolist() == [3, -1, 4]
    mean, std = back.stats()
    assert mean.shape == (spec.frame_shape[0] if spec.layout == "grid" else spec.frame_shape[-1],)
    for got, want in zip((mean, std), frame_stats(eps), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_store_is_readable_while_appending_and_read_only_mode_refuses_to_append(grid_store: Path) -> None:
    reader = EpisodeStore.open(grid_store)
    writer = EpisodeStore.open(grid_store, mode="a")
    writer.append(_episode(GRID, 3, 9))
    assert len(reader) == 3 and len(reader.episodes()) == 3  # its committed snapshot
    assert len(EpisodeStore.open(grid_store)) == 4
    with pytest.raises(StoreError, match="mode='a'"):
        reader.append(_episode(GRID, 3, 9))


def test_append_checks_before_writing(grid_store: Path) -> None:
    store = EpisodeStore.open(grid_store, mode="a")
    before = store.arrays()
    bad_shape = _episode(GRID, 4, 0)
    bad_shape.frames = bad_shape.frames[:, :1]
    bad_action = _episode(GRID, 4, 0)
    bad_action.actions[2] = 3
    bad_dtype = _episode(GRID, 4, 0)
    bad_dtype.frames = bad_dtype.frames.astype(np.float64)  # float64 does not fit the float32 store
    for ep, match in ((bad_shape, "frames"), (bad_action, "actions"), (bad_dtype, "float32")):
        with pytest.raises(StoreError, match=match):
            store.append(ep)
    reopened = EpisodeStore.open(grid_store)
    assert len(reopened) == 3
    for a, b in zip(before, reopened.arrays(), strict=True):
        assert a.tobytes() == b.tobytes()
    assert zarr.open_array(grid_store / "frames", mode="r").shape[0] == reopened.num_frames


# --- from_arrays -------------------------------------------------------------------------------


def test_from_arrays_prepends_no_action_to_t_minus_1_actions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 2, (2, 5, *GRID.frame_shape)).astype(np.uint8)  # [E, T, C, H, W]
    taken = rng.integers(0, 3, (2, 4))  # the action taken at each frame but the last
    store = EpisodeStore.from_arrays(tmp_path / "a", GRID, frames, taken, seeds=[7, None])
    eps = store.episodes()
    assert [len(e) for e in eps] == [5, 5] and store.seeds.tolist() == [7, -1]
    for i, ep in enumerate(eps):
        assert ep.actions.tolist() == [NO_ACTION, *taken[i].tolist()]
        assert np.array_equal(ep.frames, frames[i]) and ep.frames.dtype == np.uint8
        assert ep.rewards.tolist() == [0.0] * 5 and ep.dones.tolist() == [False] * 4 + [True]
    # Continuous, per-episode lists of different lengths: a NaN row goes in front.
    acts = [np.ones((2, 2), np.float32), np.full((4, 2), 0.5, np.float32)]
    frames = [np.zeros((3, 1, 4, 4), np.float32), np.ones((4, 1, 4, 4), np.float32)]
    dones = [np.zeros(3, int), np.ones(4, int)]  # 0/1 accepted as bool
    EpisodeStore.from_arrays(tmp_path / "c", CONTINUOUS, frames, acts, dones=dones)
    first, second = EpisodeStore.open(tmp_path / "c").episodes()
    assert np.isnan(first.actions[0]).all() and (first.actions[1:] == 1).all()
    assert np.array_equal(second.actions, acts[1]) and second.dones.all() and not first.dones.any()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda f, a: (f, [a[0], a[1][:2]]), r"episode\[1\]\.actions: expected 5 entries .* or 4 .*found 2"),
        (lambda f, a: (f, [a[0], np.full(5, 3)]), r"episode\[1\]\.actions: expected actions in \[0, 3\)"),
        (lambda f, a: ([f[0], f[1][:, :1]], a), r"episode\[1\]\.frames: expected shape \[T, 2, 4, 4\]"),
        (lambda f, a: (f, a[:1]), r"expected actions for 2 episodes, found 1"),
    ],
    ids=["action-count", "action-range", "frame-shape", "episode-count"],
)
def test_from_arrays_rejects_bad_input_before_creating_anything(tmp_path: Path, change, match: str) -> None:
    frames = [np.zeros((5, *GRID.frame_shape), np.float32)] * 2
    actions = [np.zeros(5, np.int64)] * 2
    frames, actions = change(frames, actions)
    with pytest.raises(StoreError, match=match) as err:
        EpisodeStore.from_arrays(tmp_path / "bad", GRID, frames, actions)
    assert "\n" not in str(err.value) and str(tmp_path / "bad") in str(err.value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "kind, value, match",
    [
        (
            "bounded",
            1.5,
            r"episode\[1\]\.frames: expected values in \[0, 1\] for the bounded world 'b', found 1.5 at frame 2",
        ),
        ("bounded", -0.25, r"expected values in \[0, 1\] for the bounded world 'b', found -0.25"),
        ("binary", 0.5, r"episode\[1\]\.frames: expected values 0 or 1 for the binary world 'b', found 0.5 at frame 2"),
        ("categorical", 2.0, r"expected values 0 or 1 for the categorical world 'b', found 2.0"),
    ],
)
def test_from_arrays_refuses_values_outside_the_worlds_range(
    tmp_path: Path, kind: str, value: float, match: str
) -> None:
    spec = WorldSpec("b", "grid", (2, 4, 4), kind, ActionSpace("discrete", 3), value_range=(0.0, 1.0))
    frames = [np.zeros((5, 2, 4, 4), np.float32) for _ in range(2)]
    frames[1][2, 1, 3, 0] = value
    with pytest.raises(StoreError, match=match) as err:
        EpisodeStore.from_arrays(tmp_path / "bad", spec, frames, [np.zeros(5, np.int64)] * 2)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()
    frames[1][2, 1, 3, 0] = 1.0  # the range's own ends are values of it
    EpisodeStore.from_arrays(tmp_path / "good", spec, frames, [np.zeros(5, np.int64)] * 2)


# --- crash safety ------------------------------------------------------------------------------


class Killed(Exception):
    """Stands for SIGKILL: raised at one file write and at every write after it."""


def _kill_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Let `writes` file writes or deletes through, then fail every later one.

    A failing call first waits for the writes in flight, so nothing lands after the "kill".
    """
    state = {"done": 0, "flying": 0}
    for method in ("set", "delete"):
        real = getattr(LocalStore, method)

        async def op(self, *args, _real=real, **kwargs):
            if state["done"] >= writes:
                while state["flying"]:
                    await asyncio.sleep(0.001)
                raise Killed
            state["done"] += 1
            state["flying"] += 1
            try:
                return await _real(self, *args, **kwargs)
            finally:
                state["flying"] -= 1

        monkeypatch.setattr(LocalStore, method, op)


@pytest.mark.parametrize("finished", [0, 2], ids=["first-append", "third-append"])
def test_kill_at_any_write_of_append_keeps_finished_episodes(tmp_path: Path, pong: tuple, finished: int) -> None:
    spec, eps = pong
    untouched = EpisodeStore.create(tmp_path / "untouched", spec, chunk_frames=64)
    for ep in eps[: finished + 1]:
        untouched.append(ep)
    want = untouched.arrays()
    base = EpisodeStore.create(tmp_path / "base", spec, chunk_frames=64)
    for ep in eps[:finished]:
        base.append(ep)
    before = [a.tobytes() for a in base.arrays()]
    for writes in range(100):
        path = shutil.copytree(base.path, tmp_path / f"killed{writes}")
        store = EpisodeStore.open(path, mode="a", validate=False)
        with pytest.MonkeyPatch.context() as mp:
            _kill_after(mp, writes)
            try:
                store.append(eps[finished])
            except Killed:
                killed = True
            else:
                killed = False
        if not killed:
            break
        store._lock.release()  # as kill -9 does: the lock goes with the process, the writer's record stays
        back = EpisodeStore.open(path, mode="a")  # checks every committed value and the sums
        assert len(back) == finished and [a.tobytes() for a in back.arrays()] == before
        back.append(eps[finished])
        for a, b in zip(want, back.arrays(), strict=True):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert back.seeds.tolist() == untouched.seeds.tolist()
        assert [s.tobytes() for s in back.stats()] == [s.tobytes() for s in untouched.stats()]
    assert not killed and writes >= 10, f"append finished after only {writes} writes"
    _assert_same(EpisodeStore.open(path).episode(-1), eps[finished])  # the append that ran to the end


# --- validation on open ------------------------------------------------------------------------


def _set(path: Path, name: str, index: tuple, value) -> None:
    arr = zarr.open_array(path / name, mode="r+")
    arr[index] = value


def _corrupt_json(path: Path) -> None:
    (path / "zarr.json").write_bytes(b"\x00\xff garbage {{{")


def _plain_group(path: Path) -> None:
    shutil.rmtree(path)
    zarr.open_group(path, mode="w", zarr_format=3).attrs["hello"] = 1


def _shorten(path: Path, name: str) -> None:
    arr = zarr.open_array(path / name, mode="r+")
    arr.resize((arr.shape[0] - 1, *arr.shape[1:]))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda p: _set(p, "frames", (8, 1, 2, 3), np.nan), r"/frames: expected finite frames .*found NaN at row 8"),
        (lambda p: _set(p, "rewards", (20,), np.inf), r"/rewards: expected finite rewards .*found inf at row 20"),
        (lambda p: _set(p, "actions", (5,), 7), r"/actions: expected actions in \[-1, 3\), found 7 at row 5"),
        (lambda p: _set(p, "episode_ends", (2,), 30), r"/episode_ends: expected episode_ends ending at the 21"),
        (lambda p: _set(p, "episode_ends", (1,), 7), r"/episode_ends: expected strictly increasing"),
        (lambda p: _shorten(p, "dones"), r"/dones: expected at least the 21 committed rows, found 20"),
        (lambda p: shutil.rmtree(p / "rewards"), r"expected an array 'rewards', found none"),
        (_corrupt_json, r"expected a readable zarr v3 group, found"),
        (lambda p: (p / "frames" / "zarr.json").write_bytes(b"\x93junk"), r"/frames: expected a readable zarr array"),
        (lambda p: (p / "frames" / "c" / "0" / "0" / "0" / "0").write_bytes(b"junk"), r"/frames: expected readable"),
        (_plain_group, r"expected attribute diffworld_store = 1 .*found 'no such attribute'"),
    ],
    ids=[
        "nan-frame",
        "inf-reward",
        "action-range",
        "ends-total",
        "ends-order",
        "short-array",
        "missing-array",
        "corrupt-group-json",
        "corrupt-array-json",
        "corrupt-chunk",
        "not-a-store",
    ],
)
def test_open_rejects_a_corrupt_store_in_one_line(grid_store: Path, corrupt, match: str) -> None:
    EpisodeStore.open(grid_store)  # fine before
    corrupt(grid_store)
    with pytest.raises(StoreError, match=match) as err:
        EpisodeStore.open(grid_store)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(grid_store))
    assert err.value.__suppress_context__ or err.value.__context__ is None  # no zarr traceback above it


@pytest.mark.parametrize(
    "name, chunk",
    [("frames", "1/0/0/0"), ("actions", "1"), ("rewards", "1"), ("dones", "1"), ("episode_ends", "0"), ("seeds", "0")],
)
def test_a_lost_chunk_of_any_array_is_named_on_open(grid_store: Path, name: str, chunk: str) -> None:
    # A missing chunk reads back as zeros, which are valid actions, rewards, dones and seeds.
    (grid_store / name / "c" / chunk).unlink()
    with pytest.raises(StoreError, match=rf"^{re.escape(str(grid_store))}/{name}: expected ") as err:
        EpisodeStore.open(grid_store)
    assert "\n" not in str(err.value)


def test_a_store_without_checksums_still_opens_and_is_protected_from_its_next_append(grid_store: Path) -> None:
    group = zarr.open_group(LocalStore(grid_store), mode="r+")
    group.update_attributes({"checksums": None})
    del group.attrs["checksums"]  # as a store written before arrays had checksums
    store = EpisodeStore.open(grid_store, mode="a")
    assert len(store) == 3
    store.append(_episode(GRID, 3, 9))
    store.close()
    assert EpisodeStore.open(grid_store).seeds.tolist() == [0, -1, 2, 9]
    (grid_store / "rewards" / "c" / "0").unlink()
    with pytest.raises(StoreError, match="/rewards: expected "):
        EpisodeStore.open(grid_store)


def test_value_checks_skip_uncommitted_rows_and_can_be_turned_off(grid_store: Path) -> None:
    arr = zarr.open_array(grid_store / "frames", mode="r+")
    arr.resize((25, *arr.shape[1:]))  # rows 21.. as a killed append leaves them
    arr[21:] = np.nan
    assert EpisodeStore.open(grid_store).num_frames == 21
    _set(grid_store, "frames", (0, 0, 0, 0), np.nan)
    with pytest.raises(StoreError, match="NaN at row 0"):
        EpisodeStore.open(grid_store)
    assert len(EpisodeStore.open(grid_store, validate=False)) == 3


def test_nan_continuous_action_allowed_only_at_episode_start(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "c", CONTINUOUS)
    for t in (4, 3):
        store.append(_episode(CONTINUOUS, t, t))
    _set(store.path, "actions", (4, 1), np.nan)  # row 4 starts episode 1: allowed
    EpisodeStore.open(store.path)
    _set(store.path, "actions", (5, 0), np.nan)
    with pytest.raises(StoreError, match=r"/actions: expected finite continuous actions .*found NaN at row 5"):
        EpisodeStore.open(store.path)
    bad = _episode(CONTINUOUS, 3, 0)
    bad.actions[2, 1] = np.inf
    store.close()
    with pytest.raises(StoreError, match="inf"):
        EpisodeStore.open(store.path, mode="a", validate=False).append(bad)


def test_missing_and_existing_paths(tmp_path: Path, grid_store: Path) -> None:
    with pytest.raises(FileNotFoundError, match="found nothing there"):
        EpisodeStore.open(tmp_path / "nope")
    with pytest.raises(FileExistsError, match="found an existing"):
        EpisodeStore.create(grid_store, GRID)
    with pytest.raises(FileExistsError):
        EpisodeStore.from_arrays(grid_store, GRID, [np.zeros((2, 2, 4, 4))], [np.zeros(1, np.int64)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="folder with zarr.json"):
        EpisodeStore.open(tmp_path / "empty")


def test_collect_refuses_a_store_whose_spec_differs_and_names_the_difference(tmp_path: Path) -> None:
    # A store written before `fields` declared its grid periodic holds the same world under an
    # older spec: appending to it would mix two specs, so collection stops and says which field differs.
    from dataclasses import replace

    from diffworld.data.collect import CollectConfig, collect

    cfg = CollectConfig(source="fields", episodes=1, policy="default", world_options={"size": 8}, max_steps=5)
    out = tmp_path / "f.zarr"
    collect(cfg, out)
    group = zarr.open_group(LocalStore(out), mode="r+")
    old = {k: v for k, v in group.attrs.asdict()["spec"].items() if k != "periodic"}
    group.update_attributes({"spec": old})
    assert EpisodeStore.open(out).spec.periodic is False
    with pytest.raises(ValueError, match="periodic False vs True"):
        collect(replace(cfg, episodes=2), out)
    assert len(EpisodeStore.open(out)) == 1


# --- one writer at a time ----------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first_until_it_closes(grid_store: Path) -> None:
    first = EpisodeStore.open(grid_store, mode="a")
    holder = rf"found pid {os.getpid()} on {re.escape(socket.gethostname())}, writing since \d{{4}}-"
    with pytest.raises(StoreError, match=rf"^{re.escape(str(grid_store))}: expected no other writer, {holder}") as err:
        EpisodeStore.open(grid_store, mode="a")
    assert "\n" not in str(err.value)
    with pytest.raises(FileExistsError):
        EpisodeStore.create(grid_store, GRID)
    assert len(EpisodeStore.open(grid_store)) == 3  # readers are never refused
    first.append(_episode(GRID, 3, 9))
    first.close()
    with pytest.raises(StoreError, match="mode='a'"):
        first.append(_episode(GRID, 3, 11))  # a closed writer reads on, appends no more
    second = EpisodeStore.open(grid_store, mode="a")
    assert second.took_over is None  # the first closed the store: nothing to take over
    second.append(_episode(GRID, 2, 10))
    del second  # a writer dropped without closing lets go of the lock too
    assert EpisodeStore.open(grid_store, mode="a").seeds.tolist() == [0, -1, 2, 9, 10]


def test_a_killed_writer_blocks_nothing_and_the_next_one_says_it_takes_over(grid_store: Path) -> None:
    code = (
        "import sys, time; from diffworld.data.store import EpisodeStore; "
        f"s = EpisodeStore.open({str(grid_store)!r}, mode='a'); print('ready', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=rf"expected no other writer, found pid {proc.pid} on "):
            EpisodeStore.open(grid_store, mode="a")
    finally:
        proc.kill()
        proc.wait()
    store = EpisodeStore.open(grid_store, mode="a")  # kill -9 released the lock; its record is left
    assert store.took_over is not None and f"pid {proc.pid} on " in store.took_over and "\n" not in store.took_over
    store.append(_episode(GRID, 2, 10))
    assert EpisodeStore.open(grid_store).seeds.tolist() == [0, -1, 2, 10]
