"""Pong's serve as a chance event: is the ball served, on a valid frame, in a uniformly drawn row?"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffworld.evaluate.events import uniform_draws


def serve_report(valid: np.ndarray, no_ball: np.ndarray, outcome: np.ndarray, outcomes: int) -> dict[str, Any]:
    """A drawn object's appearance (pong's serve): shares of valid frames, of frames with the object
    drawn (outcome ≥ 0) and without it, and the drawn outcomes against the uniform law (`uniform_draws`)."""
    return {
        "valid": float(np.mean(valid)),
        "served": float(np.mean(np.asarray(outcome) >= 0)),
        "no_ball": float(np.mean(no_ball)),
        "frames": int(np.size(valid)),
        **uniform_draws(outcome, outcomes),
    }


__all__ = ["serve_report"]
