"""Play a learned world in the browser: `diffworld play CHECKPOINT`, or `serve(checkpoint)` from Python.

The server (`create_app`, `serve`; needs `pip install 'diffworld[play]'`) serves one page at `/`
and one session per WebSocket at `/ws`. A session is a dream of batch 1 (a `Dreamer`) and,
beside it where the model's world can run (`make_world(model.spec.name)`), the true game under
the same actions. It starts from a real start: the true game from a fresh seed, stepped
frames − 1 times with random actions; those frames and actions are the dream's context.

Protocol (version 1)
--------------------

Client → server, JSON text, an object with one or more of these keys:

- `{"action": 2}` or `{"action": "down"}`: the action applied from the next frame on, until
  another one comes (an index in [0, n) or one of the world's action names). Worlds without
  actions accept no action message.
- `{"settings": {"steps": 3, "sigma_ctx": 0.05, "guidance": 1.5, "fps": 30}}`: any of the live
  settings (sampler steps, context noise σ_ctx, action guidance, target frames per second);
  bounds in `protocol.LIMITS`. The server replaces the session's `dreamer.sampler` and answers
  `{"type": "settings", "settings": {...}}` with all four.
- `{"reset": true}`: restart from a fresh real start. The server answers
  `{"type": "reset", "seed": <episode seed>}` before the first frame of the new start.

Server → client:

- `{"type": "hello", "protocol": 1, "session": id, "world": name, "frame_shape": [...],
  "image": [H, W], "panels": ["dream", "truth"] (or ["dream"]), "actions": {"kind", "names",
  "idle"}, "keys": {DOM key: action}, "settings": {...}, "limits": {name: [lo, hi]},
  "message_rate": per second}`: first, once.
- Frames, binary: a 16-byte little-endian header (uint32 frame index since the last reset,
  uint16 height, uint16 width, uint8 panels, uint8 flags (1: the true episode ended and a new
  one started), int16 action applied, float32 true reward), then each panel's H·W·3 RGB bytes,
  the dream first (`protocol.encode_frame` / `decode_frame`). Pushed at up to the session's fps.
- `{"type": "error", "message": "... expected ..., found ..."}`: the session broke the protocol
  (not JSON, an unknown key, an unknown action, a setting out of bounds, more than
  `message_rate` messages per second sustained) or the server is full; the socket is then
  closed (code 1008, or 1013 when full). Other sessions are not affected.
"""

from __future__ import annotations

from typing import Any

from diffworld.play.protocol import (
    PROTOCOL_VERSION,
    ClientMessage,
    Frame,
    PlaySettings,
    ProtocolError,
    decode_frame,
    encode_frame,
)

__all__ = [
    "PROTOCOL_VERSION", "ClientMessage", "Frame", "PlayConfig", "PlaySettings", "ProtocolError",
    "create_app", "decode_frame", "encode_frame", "serve",
]  # fmt: skip

_SERVER = ("PlayConfig", "create_app", "serve")


def __getattr__(name: str) -> Any:
    """The server's names, imported on first use: only they need fastapi and uvicorn."""
    if name in _SERVER:
        from diffworld.play import server

        return getattr(server, name)
    raise AttributeError(f"module 'diffworld.play' has no attribute {name!r}")
