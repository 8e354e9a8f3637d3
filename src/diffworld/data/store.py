"""Episode store: episodes on disk as one Zarr v3 group, appendable and crash-safe.

Layout. Flat arrays grow along axis 0, one row per frame, episodes back to back:

    frames   [N, *frame_shape]  dtype of the first appended episode, chunks of `chunk_frames` frames
    actions  [N] int64 (discrete, none) or [N, d] float32 (continuous), the action leading into each frame
    rewards  [N] float32
    dones    [N] bool

and two index arrays, one entry per episode: `episode_ends` [E] int64 (cumulative end offsets into
the flat arrays) and `seeds` [E] int64 (-1 where unknown). The group attributes hold the format
version, the world spec, free-form `meta`, the `committed` counts, running per-channel `sums`
of the committed frames (so `stats()` never reads the frames) and running CRC-32 `checksums` of
the committed rows of every other array. A lost chunk reads back as zeros, which are valid
actions, rewards, dones or seeds: the sums and checksums are what finds it, on open.

Commit protocol. Zarr's LocalStore writes every file (a chunk or a zarr.json) atomically, by a
temporary file and a rename. `append` (1) resizes the flat arrays to N + T and writes rows N..N+T,
(2) resizes and writes the index arrays, then (3) writes the group attributes `committed`, `sums`
and `checksums` in one zarr.json write: that write is the commit point. Everything reads only the committed
prefix, and rows past it (left by a killed append) are ignored and overwritten by the next append.
A process killed anywhere inside `append` therefore leaves a store holding every finished episode.

One writer at a time: `create` and `open(mode="a")` take an exclusive lock on the store's folder
(see `diffworld.data.lock`) and refuse a store another writer holds, naming it. Readers take no
lock and may open the store while it is being appended to.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import zarr
from zarr.storage import LocalStore

from diffworld.data.episodes import Episode
from diffworld.data.lock import WriterLock, WriterRecord
from diffworld.spec import NO_ACTION, WorldSpec

_DATA = ("frames", "actions", "rewards", "dones")  # one row per frame
_INDEX = ("episode_ends", "seeds")  # one entry per episode
_CHECKSUMMED = ("actions", "rewards", "dones", *_INDEX)  # the frames have their running sums
_INDEX_CHUNK = 4096  # episodes per chunk of the index arrays
_SCAN_BYTES = 64 << 20  # bytes of frames held at once while writing, validating or summing


class StoreError(ValueError):
    """A store, or data offered to one, that is not what it should be. The message is one line."""


class EpisodeStore:
    """Episodes of one world in a Zarr v3 group: append one at a time, read any, survive a kill."""

    #: Format version written to the `diffworld_store` attribute.
    FORMAT = 1

    def __init__(self, path: Path, group: zarr.Group, mode: str, lock: WriterLock | None = None) -> None:
        """Load and check the committed state of an existing group; use `create`, `open` or `from_arrays`."""
        self.path = path
        self._group = group
        self._mode = mode
        self._lock = lock
        #: One line about the writer this one took over from, which ended without closing the store; else None.
        self.took_over: str | None = None
        attrs = group.attrs.asdict()
        version = attrs.get("diffworld_store", "no such attribute")
        if type(version) is not int or version != self.FORMAT:
            self._fail(f"attribute diffworld_store = {self.FORMAT} (a diffworld episode store)", repr(version))
        try:
            self.spec = WorldSpec.from_dict(attrs["spec"])
        except Exception as e:
            self._fail("a world spec in attribute 'spec'", _describe(e))
        self.meta: dict[str, Any] = attrs.get("meta", {})
        if not isinstance(self.meta, dict):
            self._fail("a dict in attribute 'meta'", type(self.meta).__name__)
        committed = attrs.get("committed")
        if not (isinstance(committed, dict) and all(_is_count(committed.get(k)) for k in ("episodes", "frames"))):
            self._fail("attribute committed = {episodes: int >= 0, frames: int >= 0}", repr(committed))
        self._committed = {"episodes": committed["episodes"], "frames": committed["frames"]}
        self._sums = self._load_sums(attrs.get("sums"))
        self._checksums = self._load_checksums(attrs.get("checksums"))
        self._arrays = {name: self._load_array(name) for name in _DATA + _INDEX}
        e = len(self)
        ends, seeds = self._read("episode_ends", 0, e), self._read("seeds", 0, e)
        self._ends = ends.astype(np.int64)  # [E]
        self._seeds = seeds.astype(np.int64)  # [E]
        steps = np.diff(self._ends, prepend=0)
        if (steps <= 0).any():
            k = int(np.flatnonzero(steps <= 0)[0])
            found = f"{self._ends[k]} after {self._ends[k - 1] if k else 0} at episode {k}"
            self._fail("strictly increasing episode_ends, starting above 0", found, "episode_ends")
        last = int(self._ends[-1]) if e else 0
        if last != self.num_frames:
            self._fail(f"episode_ends ending at the {self.num_frames} committed frames", str(last), "episode_ends")
        if (self._seeds < -1).any():
            self._fail("seeds >= 0, or -1 where unknown", str(int(self._seeds.min())), "seeds")
        for name, values in (("episode_ends", ends), ("seeds", seeds)):  # after the checks that say more
            self._check_checksum(name, _crc32(values))

    # --- making and opening ------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | Path, spec: WorldSpec, meta: dict | None = None, chunk_frames: int = 256
    ) -> EpisodeStore:
        """A new, empty store at `path` (which must not exist), open for appending.

        Args:
            path: folder to create.
            spec: the world every episode must fit.
            meta: JSON-able provenance, e.g. {"source": "minatar:breakout", "policy": "random"}.
            chunk_frames: frames per chunk of the flat arrays.
        """
        path = Path(path)
        if chunk_frames < 1:
            raise StoreError(f"{path}: expected chunk_frames >= 1, found {chunk_frames}")
        meta = _json_meta(meta, path)
        try:
            path.mkdir(parents=True)  # atomic: of two writers creating one store, one gets FileExistsError
        except FileExistsError:
            msg = f"{path}: expected nothing there for a new store, found an existing file or folder"
            raise FileExistsError(msg) from None
        lock = WriterLock.try_acquire(path)
        if lock is None:  # another writer opened the folder the moment it was made
            raise FileExistsError(f"{path}: expected nothing there for a new store, found another writer's store")
        record = WriterRecord.mine().to_attribute()
        group = zarr.open_group(store=LocalStore(path), mode="w-", zarr_format=3, attributes={"writer": record})
        # `frames` is made by the first append, which fixes its dtype.
        action_row, action_dtype = _action_layout(spec)
        group.create_array("actions", shape=(0, *action_row), chunks=(chunk_frames, *action_row), dtype=action_dtype)
        group.create_array("rewards", shape=(0,), chunks=(chunk_frames,), dtype=np.float32)
        group.create_array("dones", shape=(0,), chunks=(chunk_frames,), dtype=bool)
        for name in _INDEX:
            group.create_array(name, shape=(0,), chunks=(_INDEX_CHUNK,), dtype=np.int64)
        # The marker goes last: a half-made folder is "not a diffworld store", never a broken one.
        channels = _channels(spec)
        group.update_attributes(
            {
                "diffworld_store": cls.FORMAT,
                "spec": spec.to_dict(),
                "meta": meta,
                "committed": {"episodes": 0, "frames": 0},
                "sums": {"count": 0, "sum": [0.0] * channels, "sumsq": [0.0] * channels},
                "checksums": dict.fromkeys(_CHECKSUMMED, 0),  # the CRC-32 of no bytes
            }
        )
        return cls(path, group, "a", lock)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", validate: bool = True) -> EpisodeStore:
        """Open an existing store: mode "r" reads, "a" also appends.

        The layout, attributes and episode index are always checked; `validate` also scans every
        committed value (NaN, inf, action ranges, running sums) block by block. Mode "a" takes the
        store's writer lock, held until `close` (or until the store object or the process ends):
        a store another writer holds is refused, naming it.
        """
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode: expected 'r' or 'a', found {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"{path}: expected an episode store, found nothing there")
        lock = _lock(path) if mode == "a" and path.is_dir() else None
        try:
            if not (path / "zarr.json").is_file():
                raise StoreError(f"{path}: expected a diffworld episode store (a folder with zarr.json), found none")
            try:
                local = LocalStore(path, read_only=mode == "r")
                group = zarr.open_group(store=local, mode="r" if mode == "r" else "r+", zarr_format=3)
            except Exception as e:
                raise StoreError(f"{path}: expected a readable zarr v3 group, found {_describe(e)}") from None
            store = cls(path, group, mode, lock)
            if validate:
                store._scan()
            if lock is not None:
                store._claim()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return store

    @classmethod
    def from_arrays(
        cls,
        path: str | Path,
        spec: WorldSpec,
        frames: list[np.ndarray] | np.ndarray,
        actions: list[np.ndarray] | np.ndarray | None = None,
        rewards: list[np.ndarray] | np.ndarray | None = None,
        dones: list[np.ndarray] | np.ndarray | None = None,
        seeds: list[int | None] | np.ndarray | None = None,
        meta: dict | None = None,
    ) -> EpisodeStore:
        """A new store holding the given episodes; everything is checked before anything is written.

        Args:
            frames: per-episode arrays [T_i, *frame_shape], or one array [E, T, *frame_shape].
            actions: same structure, per episode either T_i entries (`actions[t]` led into frame t,
                the library's convention) or T_i - 1 (the action taken at frame t), in which case
                NO_ACTION (-1, or a NaN row for continuous actions) is put in front. May be None
                only for a world without actions.
            rewards: same structure, T_i entries each; zeros when None.
            dones: same structure, T_i entries each; when None, True at the last frame only.
            seeds: one per episode (None or -1 where unknown).
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: expected nothing there for a new store, found an existing file or folder")
        meta = _json_meta(meta, path)
        kind = spec.action.kind
        frames = _per_episode(frames, len(spec.frame_shape) + 1, None, "frames", path)
        e = len(frames)
        if actions is None and kind != "none":
            raise StoreError(f"{path}: expected actions for a world with {kind} actions, found None")
        actions = _per_episode(actions, 2 if kind == "continuous" else 1, e, "actions", path)
        rewards = _per_episode(rewards, 1, e, "rewards", path)
        dones = _per_episode(dones, 1, e, "dones", path)
        seeds = [None] * e if seeds is None else list(seeds)
        if len(seeds) != e:
            raise StoreError(f"{path}: expected {e} seeds (one per episode), found {len(seeds)}")
        rows, frames_dtype = [], frames[0].dtype if e else None
        for i, f in enumerate(frames):
            t, where = len(f), f"{path}: episode[{i}]"
            no_actions = np.full(t, NO_ACTION, np.int64)
            ep = Episode(
                frames=f,
                actions=no_actions if actions is None else _lead_actions(spec, actions[i], t, where),
                rewards=np.zeros(t, np.float32) if rewards is None else rewards[i],
                dones=np.arange(t) == t - 1 if dones is None else _as_bool(dones[i], f"{where}.dones"),
                seed=None if seeds[i] is None or seeds[i] == -1 else int(seeds[i]),
            )
            rows.append((_rows(spec, ep, where, frames_dtype), ep.seed))
        store = cls.create(path, spec, meta)
        if rows:
            store._write(rows)
        return store

    def close(self) -> None:
        """Stop writing: clear this writer's record and release the lock. The store stays open for reading."""
        if self._lock is None:
            return
        self._group.update_attributes({"writer": None})
        self._lock.release()
        self._lock, self._mode = None, "r"

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _claim(self) -> None:
        """Put this writer's record in the attributes, noting the one it replaces if that writer is gone."""
        before = WriterRecord.from_attribute(self._group.attrs.get("writer"))
        mine = WriterRecord.mine()
        if before is not None and not (before.host == mine.host and before.is_running()):
            self.took_over = f"{self.path}: took over from a writer that ended without closing the store ({before})"
        self._group.update_attributes({"writer": mine.to_attribute()})

    # --- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of committed episodes."""
        return self._committed["episodes"]

    def __repr__(self) -> str:
        where, world = str(self.path), self.spec.name
        return f"EpisodeStore({where!r}, world={world!r}, episodes={len(self)}, frames={self.num_frames})"

    @property
    def num_frames(self) -> int:
        """Number of committed frames, all episodes together."""
        return self._committed["frames"]

    @property
    def seeds(self) -> np.ndarray:
        """[E] int64 seed of each committed episode, -1 where unknown."""
        return self._seeds.copy()

    @property
    def episode_ends(self) -> np.ndarray:
        """[E] int64 cumulative end offsets of the committed episodes into the flat arrays."""
        return self._ends.copy()

    def episode(self, i: int) -> Episode:
        """Committed episode `i` (negative counts from the end)."""
        e = len(self)
        if not -e <= i < e:
            raise IndexError(f"{self.path}: expected an episode index in [0, {e}), found {i}")
        i %= e
        a, b = (int(self._ends[i - 1]) if i else 0), int(self._ends[i])
        frames, actions, rewards, dones = (self._read(name, a, b) for name in _DATA)
        seed = int(self._seeds[i])
        return Episode(frames=frames, actions=actions, rewards=rewards, dones=dones, seed=None if seed < 0 else seed)

    def episodes(self) -> list[Episode]:
        """Every committed episode, in order (read in one pass)."""
        if len(self) == 0:
            return []
        frames, actions, rewards, dones, ends = self.arrays()
        cuts = ends[:-1]
        parts = zip(*(np.split(a, cuts) for a in (frames, actions, rewards, dones)), strict=True)
        return [
            Episode(frames=f, actions=a, rewards=r, dones=d, seed=None if s < 0 else int(s))
            for (f, a, r, d), s in zip(parts, self._seeds, strict=True)
        ]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The committed flat arrays: frames, actions, rewards, dones and episode_ends."""
        n = self.num_frames
        frames, actions, rewards, dones = (self._read(name, 0, n) for name in _DATA)
        return frames, actions, rewards, dones, self._ends.copy()

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (floored at 1e-6) of the committed frames, as `frame_stats` computes them."""
        count, total, total_sq = self._sums
        if count == 0:
            raise StoreError(f"{self.path}: expected at least one committed frame for stats, found none")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), 1e-6).astype(np.float32)

    # --- appending -----------------------------------------------------------------------------

    def append(self, episode: Episode) -> None:
        """Check `episode` against the spec, write it after the committed rows, then commit it."""
        if self._mode != "a":
            self._fail("a store opened with mode='a' to append", f"mode={self._mode!r}")
        frames = self._arrays["frames"]
        dtype = frames.dtype if frames is not None and self.num_frames else None
        self._write([(_rows(self.spec, episode, f"{self.path}: episode", dtype), episode.seed)])

    def _write(self, rows: list[tuple[tuple[np.ndarray, ...], int | None]]) -> None:
        """Write checked episodes (their `_rows` and seeds) after the committed prefix and commit them."""
        n, e = self.num_frames, len(self)
        lengths = [len(r[0]) for r, _ in rows]
        t = sum(lengths)
        if n == 0:
            self._make_frames(np.result_type(*(r[0].dtype for r, _ in rows)))
        arrays = [self._arrays[name] for name in _DATA]
        # 1. Data rows n..n+t, a few MB at a time. Rewriting a partly filled last chunk keeps its
        #    committed rows as they were, and each chunk file is replaced atomically.
        # A store written before arrays had checksums gets them here, from its committed rows.
        crcs = {
            name: _crc32(self._read(name, 0, e if name in _INDEX else n)) if crc is None else crc
            for name, crc in self._checksums.items()
        }
        for arr in arrays:
            arr.resize((n + t, *arr.shape[1:]))
        count, total, total_sq = self._sums
        a = n
        for batch in _batches([r for r, _ in rows]):
            values = [np.concatenate(field) for field in zip(*batch, strict=True)]
            b = a + len(values[0])
            for name, arr, value in zip(_DATA, arrays, values, strict=True):
                value = value.astype(arr.dtype, copy=False)
                arr[a:b] = value
                if name in crcs:
                    crcs[name] = _crc32(value, crcs[name])
            c, s, sq = _channel_sums(values[0])
            count, total, total_sq = count + c, total + s, total_sq + sq
            a = b
        # 2. Index entries e..e+k.
        ends = n + np.cumsum(lengths, dtype=np.int64)
        seeds = np.array([-1 if s is None else s for _, s in rows], dtype=np.int64)
        for name, value in (("episode_ends", ends), ("seeds", seeds)):
            arr = self._arrays[name]
            arr.resize((e + len(rows),))
            value = value.astype(arr.dtype, copy=False)
            arr[e:] = value
            crcs[name] = _crc32(value, crcs[name])
        # 3. The commit point: one zarr.json write makes all of the above visible at once.
        committed = {"episodes": e + len(rows), "frames": n + t}
        self._commit(committed, (count, total, total_sq), crcs)
        self._committed, self._sums, self._checksums = committed, (count, total, total_sq), crcs
        self._ends = np.concatenate([self._ends, ends])
        self._seeds = np.concatenate([self._seeds, seeds])

    def _commit(
        self, committed: dict[str, int], sums: tuple[int, np.ndarray, np.ndarray], checksums: dict[str, int]
    ) -> None:
        """Write `committed`, `sums` and `checksums` in one atomic attribute write (`attrs.update` writes per key)."""
        count, total, total_sq = sums
        self._group.update_attributes(
            {
                "committed": committed,
                "sums": {"count": count, "sum": total.tolist(), "sumsq": total_sq.tolist()},
                "checksums": checksums,
            }
        )

    def _make_frames(self, dtype: np.dtype) -> None:
        """(Re)make the empty `frames` array with `dtype`; only while nothing is committed."""
        arr = self._arrays["frames"]
        if arr is not None and arr.dtype == dtype:
            return
        chunks = (self._arrays["rewards"].chunks[0], *self.spec.frame_shape)
        self._arrays["frames"] = self._group.create_array(
            "frames", shape=(0, *self.spec.frame_shape), chunks=chunks, dtype=dtype, overwrite=True
        )

    # --- checking ------------------------------------------------------------------------------

    def _fail(self, expected: str, found: str, array: str | None = None) -> NoReturn:
        """Raise the one-line StoreError `<path>[/array]: expected ..., found ...`."""
        where = self.path if array is None else f"{self.path}/{array}"
        raise StoreError(f"{where}: expected {expected}, found {found}") from None

    def _load_sums(self, sums: Any) -> tuple[int, np.ndarray, np.ndarray]:
        """The running sums attribute as (count, sum [C], sumsq [C]), checked against the committed frames."""
        channels = _channels(self.spec)
        try:
            count = sums["count"]
            total, total_sq = (np.asarray(sums[k], dtype=np.float64) for k in ("sum", "sumsq"))
            ok = _is_count(count) and total.shape == total_sq.shape == (channels,)
        except Exception:
            ok = False
        if not ok:
            self._fail(f"attribute sums = {{count, sum, sumsq}} over {channels} channels", repr(sums)[:200])
        elements = self.num_frames * int(np.prod(self.spec.frame_shape)) // channels
        if count != elements:
            self._fail(f"sums.count = {elements} (committed frames x elements per channel)", str(count))
        return count, total, total_sq

    def _load_checksums(self, checksums: Any) -> dict[str, int | None]:
        """The checksums attribute as {array: CRC-32 of its committed rows}; None for an array it does not cover.

        A store written before arrays had checksums has none: its arrays are not checked until the
        next append gives them checksums.
        """
        if checksums is None:
            return dict.fromkeys(_CHECKSUMMED)
        ok = isinstance(checksums, dict) and all(
            type(checksums.get(k, 0)) is int and 0 <= checksums.get(k, 0) < 2**32 for k in _CHECKSUMMED
        )
        if not ok:
            self._fail(f"attribute checksums = {{array: CRC-32}} for {', '.join(_CHECKSUMMED)}", repr(checksums)[:200])
        return {name: checksums.get(name) for name in _CHECKSUMMED}

    def _check_checksum(self, name: str, crc: int) -> None:
        """Fail, naming array `name`, if `crc` of its committed rows is not the stored checksum."""
        want = self._checksums[name]
        if want is not None and crc != want:
            rows = len(self) if name in _INDEX else self.num_frames
            found = f"CRC-32 {crc:#010x} (a chunk lost or changed)"
            self._fail(f"its {rows} committed rows to match their checksum, CRC-32 {want:#010x}", found, name)

    def _load_array(self, name: str) -> zarr.Array | None:
        """Array `name`, checked against the spec and the committed counts (frames may be absent while empty)."""
        try:
            arr = self._group[name]
        except KeyError:
            if name == "frames" and self.num_frames == 0:
                return None
            self._fail(f"an array {name!r}", "none")
        except Exception as e:
            self._fail("a readable zarr array", _describe(e), name)
        if not isinstance(arr, zarr.Array):
            self._fail("an array", "a group", name)
        row = {"frames": self.spec.frame_shape, "actions": _action_layout(self.spec)[0]}.get(name, ())
        shape = tuple(arr.shape)
        if len(shape) != 1 + len(row) or shape[1:] != tuple(row):
            self._fail(f"shape [N{''.join(f', {s}' for s in row)}]", str(list(shape)), name)
        kinds, expected = {
            "frames": ("biuf", "a numeric or bool dtype"),
            "actions": ("f", "a float dtype") if row else ("iu", "an integer dtype"),
            "rewards": ("f", "a float dtype"),
            "dones": ("b", "dtype bool"),
        }.get(name, ("iu", "an integer dtype"))
        if arr.dtype.kind not in kinds:
            self._fail(expected, str(arr.dtype), name)
        need = len(self) if name in _INDEX else self.num_frames
        if shape[0] < need:
            self._fail(f"at least the {need} committed rows", f"{shape[0]}", name)
        return arr

    def _read(self, name: str, a: int, b: int) -> np.ndarray:
        """Rows a..b of array `name`, with unreadable chunks reported as a StoreError."""
        arr = self._arrays[name]
        if arr is None:  # `frames` of an empty store
            return np.zeros((0, *self.spec.frame_shape), np.float32)
        try:
            return arr[a:b]
        except Exception as e:
            self._fail(f"readable chunks for rows {a}..{b}", _describe(e), name)

    def _scan(self) -> None:
        """Check every committed value block by block, and that the running sums match the frames."""
        n = self.num_frames
        if n == 0:
            return
        starts = np.concatenate([[0], self._ends[:-1]])
        frame_bytes = 8 * int(np.prod(self.spec.frame_shape))
        chunk = self._arrays["frames"].chunks[0]
        block = max(chunk, _SCAN_BYTES // frame_bytes // chunk * chunk)
        count, total, total_sq = 0, 0.0, 0.0
        crcs = dict.fromkeys(_DATA[1:], 0)
        for a in range(0, n, block):
            b = min(n, a + block)
            is_start = np.zeros(b - a, bool)
            is_start[starts[(starts >= a) & (starts < b)] - a] = True
            for name in _DATA:
                values = self._read(name, a, b)
                problem = _bad_values(self.spec, name, values, is_start, a)
                if problem:
                    self._fail(*problem, name)
                if name == "frames":
                    c, s, sq = _channel_sums(values)
                    count, total, total_sq = count + c, total + s, total_sq + sq
                else:
                    crcs[name] = _crc32(values, crcs[name])
        want_count, want, want_sq = self._sums
        # Summation order differs, so compare within float64 rounding (|sum| <= sqrt(count * sumsq)).
        tol, tol_sq = 1e-6 * np.sqrt(count * total_sq) + 1e-12, 1e-6 * total_sq + 1e-12
        if count != want_count or (abs(total - want) > tol).any() or (abs(total_sq - want_sq) > tol_sq).any():
            found = f"sum {want.tolist()} stored, {total.tolist()} recomputed"
            self._fail("attribute sums matching the committed frames", found, "frames")
        for name, crc in crcs.items():
            self._check_checksum(name, crc)


# --- helpers -----------------------------------------------------------------------------------


def _lock(path: Path) -> WriterLock:
    """The writer lock of the store at `path`; a StoreError naming the holder if another writer has it."""
    try:
        lock = WriterLock.try_acquire(path)
    except OSError as e:
        raise StoreError(f"{path}: expected a folder that can be locked for writing, found {_describe(e)}") from None
    if lock is None:
        holder = WriterRecord.read(path)
        found = str(holder) if holder is not None else "one that has not recorded itself yet"
        raise StoreError(f"{path}: expected no other writer, found {found}; wait for it to finish or stop it")
    return lock


def _describe(e: BaseException) -> str:
    """One line naming an exception (the first line of its message, shortened)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def _crc32(values: np.ndarray, crc: int = 0) -> int:
    """The CRC-32 of the bytes of `values`, continuing from `crc` (so it runs over appends)."""
    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8), crc)


def _is_count(x: Any) -> bool:
    return type(x) is int and x >= 0


def _channels(spec: WorldSpec) -> int:
    """Number of channels `stats` reports: axis 0 of a grid frame (C, H, W), the last axis otherwise."""
    return spec.frame_shape[0] if len(spec.frame_shape) == 3 else spec.frame_shape[-1]


def _channel_sums(frames: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-channel element count, sum and sum of squares (float64) of frames [T, *frame_shape]."""
    # The channel rule of `frame_stats`: axis 1 of [T, C, H, W], the last axis otherwise.
    grid = frames.ndim == 4
    axes = tuple(i for i in range(frames.ndim) if i != 1) if grid else tuple(range(frames.ndim - 1))
    channels = frames.shape[1] if grid else frames.shape[-1]
    total, total_sq = np.zeros(channels), np.zeros(channels)
    step = max(1, _SCAN_BYTES // (8 * max(1, frames[0].size)))
    for a in range(0, len(frames), step):
        x = frames[a : a + step].astype(np.float64)
        total += x.sum(axis=axes)
        total_sq += (x * x).sum(axis=axes)
    return frames.size // channels, total, total_sq


def _batches(rows: list[tuple[np.ndarray, ...]]) -> list[list[tuple[np.ndarray, ...]]]:
    """Consecutive episodes grouped into batches of about `_SCAN_BYTES` of frames (at least one each)."""
    batches: list[list[tuple[np.ndarray, ...]]] = [[]]
    size = 0
    for r in rows:
        if batches[-1] and size + r[0].nbytes > _SCAN_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(r)
        size += r[0].nbytes
    return batches


def _action_layout(spec: WorldSpec) -> tuple[tuple[int, ...], type]:
    """Row shape and dtype of the `actions` array."""
    if spec.action.kind == "continuous":
        return (spec.action.n,), np.float32
    return (), np.int64


def _json_meta(meta: dict | None, path: Path) -> dict:
    """`meta` as it will read back from JSON (tuples become lists)."""
    if meta is not None and not isinstance(meta, dict):
        raise StoreError(f"{path}: expected meta to be a dict, found {type(meta).__name__}")
    try:
        return json.loads(json.dumps(meta or {}, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{path}: expected JSON-able meta, found {_describe(e)}") from None


def _bad_values(
    spec: WorldSpec, name: str, a: np.ndarray, is_start: np.ndarray, first_row: int
) -> tuple[str, str] | None:
    """(expected, found) for the first value of rows `a` of `name` that cannot be stored; None if all can.

    `is_start` [len(a)] marks the rows that begin an episode: the only rows where a continuous
    action may be NaN (no action led into the first frame).
    """
    kind = spec.action.kind
    if name in ("frames", "rewards") and a.dtype.kind == "f":
        bad = ~np.isfinite(a).reshape(len(a), -1).all(axis=1)
        what = f"finite {name} (no NaN or inf)"
    elif name == "actions" and kind == "continuous":
        inf = np.isinf(a).any(axis=1)
        bad = inf | (np.isnan(a).any(axis=1) & ~is_start)
        what = "finite continuous actions (NaN only at an episode's first frame)"
    elif name == "actions" and kind == "discrete":
        bad = (a < NO_ACTION) | (a >= spec.action.n)
        what = f"actions in [{NO_ACTION}, {spec.action.n})"
    elif name == "actions":
        bad = a != NO_ACTION
        what = f"only NO_ACTION ({NO_ACTION}) in a world without actions"
    else:
        return None
    if not bad.any():
        return None
    k = int(np.flatnonzero(bad)[0])
    row = np.asarray(a[k]).ravel()
    if row.dtype.kind == "f":  # the offending value: inf first (NaN may be allowed), else NaN
        row = row[np.isinf(row)] if np.isinf(row).any() else row[np.isnan(row)]
    value = "NaN" if np.isnan(row[0]) else row[0]
    return what, f"{value} at row {first_row + k}"


def _rows(spec: WorldSpec, ep: Episode, where: str, frames_dtype: np.dtype | None) -> tuple[np.ndarray, ...]:
    """The episode's (frames, actions, rewards, dones) as stored, after checking every field against `spec`."""
    try:
        ep.validate(spec, where)
    except ValueError as e:
        raise StoreError(str(e).replace("\n", " ")) from None
    t = len(ep)
    if t == 0:
        raise StoreError(f"{where}.frames: expected at least 1 frame, found 0")
    frames = np.asarray(ep.frames)
    if frames.dtype.kind not in "biuf":
        raise StoreError(f"{where}.frames: expected a numeric or bool dtype, found {frames.dtype}")
    if frames_dtype is not None and not np.can_cast(frames.dtype, frames_dtype, "safe"):
        expected = f"a dtype that casts safely to the store's {frames_dtype}"
        raise StoreError(f"{where}.frames: expected {expected}, found {frames.dtype}")
    actions = np.asarray(ep.actions)
    continuous = spec.action.kind == "continuous"
    if actions.dtype.kind not in ("iuf" if continuous else "iu"):
        expected = "a numeric dtype" if continuous else "an integer dtype"
        raise StoreError(f"{where}.actions: expected {expected}, found {actions.dtype}")
    actions = actions.astype(np.float32 if continuous else np.int64)
    rewards = np.asarray(ep.rewards)
    if rewards.dtype.kind not in "iuf":
        raise StoreError(f"{where}.rewards: expected a numeric dtype, found {rewards.dtype}")
    rewards = rewards.astype(np.float32)
    dones = np.asarray(ep.dones)
    if dones.dtype != bool:
        raise StoreError(f"{where}.dones: expected dtype bool, found {dones.dtype}")
    if ep.seed is not None and not (isinstance(ep.seed, int | np.integer) and 0 <= ep.seed < 2**63):
        raise StoreError(f"{where}.seed: expected None or an int in [0, 2**63), found {ep.seed!r}")
    is_start = np.arange(t) == 0
    for name, a in (("frames", frames), ("actions", actions), ("rewards", rewards)):
        problem = _bad_values(spec, name, a, is_start, 0)
        if problem:
            raise StoreError(f"{where}.{name}: expected {problem[0]}, found {problem[1]}")
    return frames, actions, rewards, dones


def _per_episode(x: Any, ndim: int, episodes: int | None, name: str, path: Path) -> list[np.ndarray] | None:
    """`x` (a list of per-episode arrays of `ndim` dims, or one array of ndim + 1) as a list; None stays None."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        if x.ndim != ndim + 1:
            raise StoreError(
                f"{path}: expected {name} as a list of {ndim}-d episode arrays or one {ndim + 1}-d array, "
                f"found an array of shape {list(x.shape)}"
            )
        x = list(x)
    elif not isinstance(x, list | tuple):
        raise StoreError(f"{path}: expected {name} as a list of episode arrays, found {type(x).__name__}")
    x = [np.asarray(a) for a in x]
    if episodes is not None and len(x) != episodes:
        raise StoreError(f"{path}: expected {name} for {episodes} episodes, found {len(x)}")
    for i, a in enumerate(x):
        if a.ndim != ndim:
            raise StoreError(f"{path}: episode[{i}].{name}: expected a {ndim}-d array, found shape {list(a.shape)}")
    return x


def _lead_actions(spec: WorldSpec, a: np.ndarray, t: int, where: str) -> np.ndarray:
    """Actions leading into each of `t` frames: `a` itself, or NO_ACTION put in front of T - 1 actions."""
    if len(a) == t:
        return a
    if len(a) != t - 1:
        raise StoreError(
            f"{where}.actions: expected {t} entries (leading into each frame) or {t - 1} (taken at each frame), "
            f"found {len(a)}"
        )
    if spec.action.kind == "continuous":
        return np.concatenate([np.full((1, *a.shape[1:]), np.nan, np.float32), a.astype(np.float32)])
    return np.concatenate([np.array([NO_ACTION], dtype=a.dtype), a])


def _as_bool(a: np.ndarray, where: str) -> np.ndarray:
    """`a` as bool, accepting integers 0/1."""
    if a.dtype == bool:
        return a
    if a.dtype.kind in "iu" and np.isin(a, (0, 1)).all():
        return a.astype(bool)
    raise StoreError(f"{where}: expected bool (or 0/1) values, found dtype {a.dtype}")
