"""The play protocol's messages: parsing what a client sends, encoding what the server sends.

The protocol itself is described in the package docstring (`diffworld.play`). This module is
pure Python and numpy, so a client or a test can decode frames without fastapi installed.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

#: Protocol version, sent in the hello message.
PROTOCOL_VERSION = 1

#: Inclusive bounds of every live setting; a value outside them is a protocol error.
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 32),
    "sigma_ctx": (0.001, 1.0),
    "guidance": (0.0, 10.0),
    "fps": (1.0, 120.0),
}

#: Keys a client message may hold.
MESSAGE_KEYS = ("action", "settings", "reset")

#: Binary frame header (little endian): frame index (uint32), height, width (uint16 each),
#: panels (uint8), flags (uint8), action applied (int16), true reward (float32).
HEADER = struct.Struct("<IHHBBhf")

#: Header flag: the true game's episode ended on this frame and a new one started.
FLAG_TRUTH_RESTARTED = 1

#: Keys bound to a discrete action whose name contains the word (besides the digit keys 1..n).
KEYS_BY_WORD: dict[str, tuple[str, ...]] = {
    "up": ("ArrowUp", "w", "W"),
    "down": ("ArrowDown", "s", "S"),
    "left": ("ArrowLeft", "a", "A"),
    "right": ("ArrowRight", "d", "D"),
    "fire": (" ",),
}


class ProtocolError(ValueError):
    """A client message the protocol does not allow; the message says what was expected and found."""


@dataclass(frozen=True)
class PlaySettings:
    """The live settings of one session."""

    #: Denoising steps per frame.
    steps: int
    #: Noise level at which dreamed frames are fed back as context (σ_ctx).
    sigma_ctx: float
    #: Classifier-free guidance weight on the action (1 is none).
    guidance: float
    #: Target frames per second the server pushes.
    fps: float

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            lo, hi = LIMITS[key]
            if not lo <= value <= hi:
                raise ValueError(f"{key}: expected a value in [{lo:g}, {hi:g}], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ClientMessage:
    """One parsed client message; the fields it did not hold are None (reset: False)."""

    action: int | None = None
    settings: PlaySettings | None = None
    reset: bool = False


@dataclass(frozen=True)
class Frame:
    """One step of a session as sent to its client: the dream, and the truth beside it if any."""

    #: Frames stepped since the session's last reset (the first is 1).
    index: int
    #: The action applied to both the dream and the truth (−1: a world without actions).
    action: int
    #: [H, W, 3] uint8 pictures, the dream first, then the true game if it runs.
    panels: tuple[np.ndarray, ...]
    #: Reward the true game gave on this step (0 without a true game).
    reward: float = 0.0
    #: The true game's episode ended on this step and a fresh one started.
    truth_restarted: bool = False


def action_names(n: int, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of n discrete actions: the world's own, else "0".."n−1"."""
    return tuple(names) if names else tuple(str(i) for i in range(n))


def key_bindings(names: tuple[str, ...]) -> dict[str, int]:
    """Keyboard key (a DOM `KeyboardEvent.key`) -> discrete action: digits 1..n, then arrows/WASD by name."""
    keys = {str(i + 1): i for i in range(min(len(names), 9))}
    for i, name in enumerate(names):
        for word, bound in KEYS_BY_WORD.items():
            if word in name.lower().replace("-", "_").split("_"):
                keys.update({key: i for key in bound if key not in keys})
    return keys


def parse_message(text: str | bytes | None, names: tuple[str, ...], settings: PlaySettings) -> ClientMessage:
    """Parse one client message; `names` are the discrete action names (empty: no actions), `settings` the current ones.

    Raises ProtocolError naming what was expected and what was found.
    """
    if not isinstance(text, str):
        size = 0 if text is None else len(text)
        raise ProtocolError(
            f'expected a JSON text message such as {{"action": 1}}, found a binary message of {size} bytes'
        )
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        raise ProtocolError(
            f'expected a JSON object such as {{"action": 1}}, found text that is not JSON: {_clip(text)!r}'
        ) from None
    if not isinstance(message, dict) or not message:
        raise ProtocolError(
            f"expected a JSON object with some of the keys {', '.join(MESSAGE_KEYS)}, found {_clip(text)!r}"
        )
    unknown = sorted(set(message) - set(MESSAGE_KEYS))
    if unknown:
        raise ProtocolError(
            f"unknown key(s) {', '.join(map(repr, unknown))}: expected some of {', '.join(MESSAGE_KEYS)}"
        )
    action = _parse_action(message["action"], names) if "action" in message else None
    new_settings = _parse_settings(message["settings"], settings) if "settings" in message else None
    if "reset" in message and message["reset"] is not True:
        raise ProtocolError(f"reset: expected true, found {json.dumps(message['reset'])}")
    return ClientMessage(action, new_settings, "reset" in message)


def _parse_action(value: Any, names: tuple[str, ...]) -> int:
    if not names:
        raise ProtocolError(f"action: this world takes no actions, found {json.dumps(value)}")
    expected = f"an integer in [0, {len(names)}) or one of {', '.join(map(repr, names))}"
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    raise ProtocolError(f"action: expected {expected}, found {_clip(json.dumps(value))}")


def _parse_settings(value: Any, current: PlaySettings) -> PlaySettings:
    if not isinstance(value, dict) or not value:
        raise ProtocolError(
            f"settings: expected an object with some of {', '.join(LIMITS)}, found {_clip(json.dumps(value))}"
        )
    unknown = sorted(set(value) - set(LIMITS))
    if unknown:
        raise ProtocolError(
            f"settings: unknown key(s) {', '.join(map(repr, unknown))}: expected some of {', '.join(LIMITS)}"
        )
    changes: dict[str, Any] = {}
    for key, v in value.items():
        lo, hi = LIMITS[key]
        want_int = key == "steps"
        kind = "an integer" if want_int else "a number"
        ok_type = isinstance(v, int) if want_int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not math.isfinite(v) or not lo <= v <= hi:
            raise ProtocolError(f"settings.{key}: expected {kind} in [{lo:g}, {hi:g}], found {_clip(json.dumps(v))}")
        changes[key] = int(v) if want_int else float(v)
    return replace(current, **changes)


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "…"


def encode_frame(frame: Frame) -> bytes:
    """A frame as one binary message: the header, then every panel's RGB bytes."""
    h, w = frame.panels[0].shape[:2]
    flags = FLAG_TRUTH_RESTARTED if frame.truth_restarted else 0
    header = HEADER.pack(frame.index, h, w, len(frame.panels), flags, frame.action, frame.reward)
    return header + b"".join(np.ascontiguousarray(p, dtype=np.uint8).tobytes() for p in frame.panels)


def decode_frame(data: bytes) -> Frame:
    """The inverse of `encode_frame` (for Python clients and tests)."""
    if len(data) < HEADER.size:
        raise ValueError(f"a frame message has at least {HEADER.size} bytes, got {len(data)}")
    index, h, w, n, flags, action, reward = HEADER.unpack_from(data)
    size = h * w * 3
    if len(data) != HEADER.size + n * size:
        raise ValueError(f"a frame of {n} panels of {h}x{w} RGB has {HEADER.size + n * size} bytes, got {len(data)}")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=HEADER.size).reshape(n, h, w, 3)
    return Frame(index, action, tuple(pixels), reward, bool(flags & FLAG_TRUTH_RESTARTED))
