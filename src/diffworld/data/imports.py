"""Import a user's own gridded fields or series (NumPy or xarray arrays, time first) as an episode store.

    from diffworld.data.imports import import_arrays
    import_arrays("runs/sst.zarr", sst, name="sst", step_duration=1.0)      # sst: [T, H, W]
    diffworld train --data runs/sst.zarr --out runs/sst-model

One array is one trajectory; a list of arrays is several (different lengths are fine; no
training window ever spans two). Frames are inferred from each array's shape after the time axis:

    [T, V]        series of V variables, frames (V, 1)
    [T, H, W]     a single-channel grid, frames (1, H, W)
    [T, C, H, W]  a C-channel grid, frames (C, H, W)

and `layout="series"` reads [T, V, F] as V variables of F features each. An xarray DataArray
works as it is (it is read through `numpy.asarray`); for a series its second dimension's
coordinate names the variables. NaN or inf anywhere is refused with the trajectory and frame
named, and nothing is written unless every array fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.data.store import EpisodeStore
from diffworld.spec import WorldSpec


def import_arrays(
    path: str | Path,
    data: Any | Sequence[Any],
    *,
    name: str = "imported",
    layout: str | None = None,
    variables: Sequence[str] = (),
    step_duration: float = 1.0,
    meta: dict | None = None,
) -> EpisodeStore:
    """A new episode store at `path` holding `data` (one trajectory, or a list of them), time first."""
    trajectories = list(data) if isinstance(data, (list, tuple)) else [data]
    if not trajectories:
        raise ValueError("import_arrays needs at least one trajectory, got an empty list")
    if not variables:
        variables = _coordinate_names(trajectories[0])
    arrays = [np.asarray(t, dtype=np.float32) for t in trajectories]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape[1:] != shape[1:]:
            raise ValueError(
                f"trajectory {i}: expected frames of shape {list(shape[1:])} like trajectory 0, got {list(a.shape[1:])}"
            )
        if len(a) < 2:
            raise ValueError(f"trajectory {i}: expected at least 2 time steps, got {len(a)}")
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"trajectory {i}: found NaN or inf at time index {int(np.flatnonzero(bad)[0])}; fill or drop it first"
            )
    layout, frame_shape = _frames(shape, layout)
    frames = [a.reshape((len(a), *frame_shape)) for a in arrays]
    names = tuple(str(v) for v in variables)
    expected = frame_shape[0]
    if names and len(names) != expected:
        raise ValueError(
            f"expected {expected} variable or channel names for frames {list(frame_shape)}, got {len(names)}"
        )
    spec = WorldSpec(name=name, layout=layout, frame_shape=frame_shape, step_duration=step_duration, variables=names)  # type: ignore[arg-type]
    provenance = {"source": "import_arrays", "trajectories": len(frames), **(meta or {})}
    return EpisodeStore.from_arrays(path, spec, frames, meta=provenance)


def _frames(shape: tuple[int, ...], layout: str | None) -> tuple[str, tuple[int, ...]]:
    """(layout, frame shape) for arrays of `shape` = [T, ...]."""
    rest = tuple(int(n) for n in shape[1:])
    if layout not in (None, "grid", "series"):
        raise ValueError(f"layout must be 'grid' or 'series' for imported arrays, got {layout!r}")
    if layout == "series" and len(rest) in (1, 2):
        return "series", rest if len(rest) == 2 else (rest[0], 1)
    if layout in (None, "series") and len(rest) == 1:
        return "series", (rest[0], 1)
    if layout in (None, "grid") and len(rest) == 2:
        return "grid", (1, *rest)
    if layout in (None, "grid") and len(rest) == 3:
        return "grid", rest
    raise ValueError(
        f"cannot read arrays of shape {list(shape)} as {layout or 'any layout'}; expected [T, V] or [T, V, F] "
        "(series), or [T, H, W] or [T, C, H, W] (grid)"
    )


def _coordinate_names(array: Any) -> tuple[str, ...]:
    """The second dimension's coordinate values of an xarray DataArray (variable names), else ()."""
    dims, coords = getattr(array, "dims", None), getattr(array, "coords", None)
    if not dims or coords is None or len(dims) < 2 or dims[1] not in coords:
        return ()
    return tuple(str(v) for v in np.asarray(coords[dims[1]].values).ravel())


__all__ = ["import_arrays"]
