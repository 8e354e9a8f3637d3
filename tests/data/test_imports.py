"""import_arrays: a user's arrays (time first) become an episode store a model trains on."""

import numpy as np
import pytest

from diffworld.data.imports import import_arrays
from diffworld.data.store import EpisodeStore


@pytest.mark.parametrize(
    "shape, layout, frame, kind",
    [
        ((50, 4), None, (4, 1), "series"),
        ((50, 4, 2), "series", (4, 2), "series"),
        ((50, 8, 8), None, (1, 8, 8), "grid"),
        ((50, 2, 8, 8), None, (2, 8, 8), "grid"),
    ],
)
def test_shapes_become_frames(tmp_path, shape, layout, frame, kind):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    store = import_arrays(tmp_path / "s.zarr", x, layout=layout, step_duration=0.5)
    assert store.spec.layout == kind and store.spec.frame_shape == frame and store.spec.step_duration == 0.5
    again = EpisodeStore.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(again.episode(0).frames, x.reshape((50, *frame)))


def test_several_trajectories_of_different_lengths(tmp_path):
    rng = np.random.default_rng(1)
    store = import_arrays(
        tmp_path / "s.zarr", [rng.standard_normal((30, 3)), rng.standard_normal((12, 3))], variables=("a", "b", "c")
    )
    assert len(store) == 2 and store.num_frames == 42 and store.spec.variables == ("a", "b", "c")


def test_duck_typed_xarray_names_the_variables(tmp_path):
    class Coord:
        values = np.array(["spx", "ndx"])

    class DataArray:  # what import_arrays reads of an xarray.DataArray
        dims = ("time", "asset")
        coords = {"asset": Coord()}

        def __array__(self, dtype=None, copy=None):
            return np.zeros((10, 2), dtype=dtype)

    store = import_arrays(tmp_path / "s.zarr", DataArray())
    assert store.spec.variables == ("spx", "ndx")


def test_bad_input_is_named_and_nothing_is_written(tmp_path):
    x = np.ones((20, 3), np.float32)
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match="trajectory 0: found NaN or inf at time index 7"):
        import_arrays(tmp_path / "a.zarr", x)
    with pytest.raises(ValueError, match=r"trajectory 1: expected frames of shape \[3\]"):
        import_arrays(tmp_path / "a.zarr", [np.ones((5, 3)), np.ones((5, 4))])
    with pytest.raises(ValueError, match="cannot read arrays of shape"):
        import_arrays(tmp_path / "a.zarr", np.ones((5, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="expected 3 variable or channel names"):
        import_arrays(tmp_path / "a.zarr", np.ones((5, 3)), variables=("a",))
    assert not (tmp_path / "a.zarr").exists()
    import_arrays(tmp_path / "b.zarr", np.ones((5, 3)))
    with pytest.raises(FileExistsError):
        import_arrays(tmp_path / "b.zarr", np.ones((5, 3)))


@pytest.mark.parametrize("step", [np.nan, np.inf, -1.0, 0.0])
def test_a_step_duration_not_finite_and_positive_is_refused_and_nothing_written(tmp_path, step):
    with pytest.raises(ValueError, match=f"step_duration: expected a finite number > 0, found {step}"):
        import_arrays(tmp_path / "s.zarr", np.ones((5, 3), np.float32), step_duration=step)
    assert not (tmp_path / "s.zarr").exists()
