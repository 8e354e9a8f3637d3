"""Layouts turn one frame of a world into tokens and back."""

from __future__ import annotations

from diffworld.layouts.grid import GridLayout
from diffworld.spec import WorldSpec

Layout = GridLayout


def make_layout(spec: WorldSpec, patch: int) -> Layout:
    """The layout for `spec` (grid now; graph and series come with their worlds)."""
    if spec.layout == "grid":
        return GridLayout(tuple(spec.frame_shape), patch)  # type: ignore[arg-type]
    raise ValueError(f"layout {spec.layout!r} is not implemented yet; expected 'grid'")


__all__ = ["GridLayout", "Layout", "make_layout"]
