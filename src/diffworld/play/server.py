"""The play server: a FastAPI app that serves the page at `/` and one session per WebSocket at `/ws`.

Every session steps on one shared worker thread (torch is not oversubscribed on a small CPU):
each session's sender submits one step at a time, and the worker's queue is first come, first
served, so the sessions take turns (round-robin). Reading the socket, pacing and sending stay
on the event loop. A session ends when its client leaves or breaks the protocol; its tasks are
cancelled and its slot freed, and nothing else is touched.

Who may connect: a request whose Host header is none of the server's own names is refused (a page
whose domain was rebound to this machine sends its own), and so is a WebSocket whose Origin is
another site's, unless allowed (`PlayConfig.allow_origins`): any page open in the browser could
otherwise take every session. The API docs routes are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from diffworld.checks import check_int
from diffworld.dreamer import Dreamer
from diffworld.model.world_model import WorldModel
from diffworld.play.protocol import (
    LIMITS,
    PROTOCOL_VERSION,
    ProtocolError,
    encode_frame,
    key_bindings,
    parse_message,
)
from diffworld.play.session import DreamerFactory, Session, check_playable, settings_of
from diffworld.worlds import check_recorded_world, imported_module, make_world
from diffworld.worlds.base import World

#: WebSocket close codes: a protocol violation, and a server at its session limit.
CLOSE_POLICY, CLOSE_BUSY = 1008, 1013


@dataclass(frozen=True)
class PlayConfig:
    """How the play server runs."""

    #: Default target frames per second of every session (each client may change its own).
    fps: float = 30.0
    #: Sessions at once; one more gets an error message and is closed.
    max_sessions: int = 32
    #: Client messages per second a session may send, sustained (a token bucket refilled at this rate).
    message_rate: float = 100.0
    #: Messages a session may send at once beyond the sustained rate (the bucket's size).
    message_burst: int = 100
    #: Longest client message, in characters.
    max_message_chars: int = 1024
    #: Seed of the first session (session k gets seed + k); None: fresh entropy for each.
    seed: int | None = None
    #: Names the server answers to, "host" or "host:port" (without a port: any port); a request with
    #: another Host header is refused. `serve` puts its own here: the loopback names and the bind
    #: address, with its port.
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    #: Origins ("scheme://host[:port]") besides the server's own whose pages may open sessions; the
    #: server answers to their host names too (as behind a proxy).
    allow_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        lo, hi = LIMITS["fps"]
        if not lo <= self.fps <= hi:
            raise ValueError(f"fps: expected a value in [{lo:g}, {hi:g}], got {self.fps}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions: expected >= 1, got {self.max_sessions}")
        if self.message_rate <= 0 or self.message_burst < 1:
            raise ValueError(
                f"message_rate and message_burst: expected > 0 and >= 1, got {self.message_rate}, {self.message_burst}"
            )
        for host in self.hosts:
            if _host_name(host) is None:
                raise ValueError(f"hosts: expected host[:port] (e.g. localhost:8000), found {host!r}")
        for origin in self.allow_origins:
            if _origin(origin) is None:
                expected = "scheme://host[:port] (e.g. http://example.com:8080)"
                raise ValueError(f"allow_origins: expected {expected}, found {origin!r}")

    def refusal(self, headers: Mapping[str, str], websocket: bool) -> str | None:
        """Why a request with these headers is refused, in one line; None if it is not.

        Its Host must be one of `hosts` (or an allowed origin's host); a WebSocket's Origin, where it
        sends one (browsers always do), must be this server's own or one of `allow_origins`.
        """
        host_header = headers.get("host", "")
        host = _host_name(host_header)
        allowed = [_origin(o) for o in self.allow_origins]
        names = [_host_name(h) for h in self.hosts] + [(o[1], o[2]) for o in allowed if o]
        if host is None or not any(n and n[0] == host[0] and n[1] in (None, host[1] or 80) for n in names):
            known = [*self.hosts, *(urlsplit(o).netloc for o in self.allow_origins)]
            return f"expected Host one of {', '.join(known)}, found {host_header or 'none'}"
        origin_header = headers.get("origin")
        if not websocket or origin_header is None:
            return None
        origin = _origin(origin_header)
        if origin is not None and _same(origin) in {_same(o) for o in allowed if o}:
            return None
        if origin is not None and origin[1] == host[0] and host[1] in (None, _same(origin)[2]):
            return None  # same origin: a page this server served
        others = f" or one of {', '.join(self.allow_origins)}" if self.allow_origins else ""
        return f"expected Origin http://{host_header} (this server's){others}, found {origin_header}"


def _host_name(text: str) -> tuple[str, int | None] | None:
    """(name, port or None) of a Host header or a `hosts` entry ("[::1]:8000" -> ("::1", 8000)); None if not one."""
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.hostname, port


def _origin(text: str) -> tuple[str, str, int | None] | None:
    """(scheme, name, port or None) of an origin "http(s)://host[:port]"; None if it is not one."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    if parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname, port


def _same(origin: tuple[str, str, int | None]) -> tuple[str, str, int]:
    """An origin as compared: its port made explicit (the scheme's default where it names none)."""
    scheme, name, port = origin
    return scheme, name, port if port is not None else 443 if scheme == "https" else 80


class TokenBucket:
    """`rate` tokens per second, at most `burst` held; `take()` spends one if there is one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def true_world(
    model: WorldModel, options: dict[str, Any] | None = None, world: str | None = None
) -> Callable[[], World] | None:
    """A factory of the model's true world if `make_world` can build it with frames of the model's shape, else None.

    A world whose name imports a module (gym:<module>:<env>) is built only if `world` is that name.
    """
    if imported_module(model.spec.name) is not None and world != model.spec.name:
        return None
    try:
        world = make_world(model.spec.name, **(options or {}))
    except Exception:  # any world that cannot be built (unknown, a missing package) is shown without truth
        return None
    if tuple(world.spec.frame_shape) != tuple(model.spec.frame_shape):
        return None
    return lambda: make_world(model.spec.name, **(options or {}))


class Hub:
    """The live sessions of one app and the worker thread they step on."""

    def __init__(
        self, model: WorldModel, config: PlayConfig, world: Callable[[], World] | None, dreamer_factory: DreamerFactory
    ) -> None:
        self.model, self.config, self.world, self.dreamer_factory = model, config, world, dreamer_factory
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffworld-play")
        #: Session id -> Session (None while it is being built).
        self.sessions: dict[int, Session | None] = {}
        self.ids = itertools.count()

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def new_session(self, sid: int) -> Session:
        seed = None if self.config.seed is None else self.config.seed + sid
        world = None if self.world is None else self.world()
        settings = settings_of(self.model.sampler, self.config.fps)
        return Session(self.model, settings, world, seed, self.dreamer_factory)

    def hello(self, sid: int, session: Session) -> dict[str, Any]:
        spec = self.model.spec
        h, w = spec.frame_shape[-2:]
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "session": sid,
            "world": spec.name,
            "frame_shape": list(spec.frame_shape),
            "image": [h, w],
            "panels": ["dream", "truth"] if session.world is not None else ["dream"],
            "actions": {"kind": spec.action.kind, "names": list(session.names), "idle": 0 if session.names else None},
            "keys": key_bindings(session.names),
            "settings": session.settings.to_dict(),
            "limits": {k: list(v) for k, v in LIMITS.items()},
            "message_rate": self.config.message_rate,
        }

    async def serve_socket(self, ws: WebSocket) -> None:
        """One WebSocket's whole session: hello, then frames and messages until either side ends it."""
        problem = self.config.refusal(ws.headers, websocket=True)
        if problem is not None:  # closed before the handshake completes: the client sees HTTP 403
            await ws.close(code=CLOSE_POLICY, reason=problem[:120])
            return
        await ws.accept()
        cap = self.config.max_sessions
        if len(self.sessions) >= cap:
            await _fail(
                ws,
                f"server busy: expected at most {cap} sessions at once, found {len(self.sessions)} playing; "
                "try again later",
                CLOSE_BUSY,
            )
            return
        sid = next(self.ids)
        self.sessions[sid] = None  # hold the slot while the session is built off the loop
        try:
            try:
                session = await self.run(lambda: self.new_session(sid))
            except Exception as e:  # reported to this client only
                await _fail(ws, f"session failed to start: {type(e).__name__}: {e}", 1011)
                return
            self.sessions[sid] = session
            lock = anyio.Lock()
            await ws.send_json(self.hello(sid, session))
            failures: list[BaseException] = []
            async with anyio.create_task_group() as tasks:

                async def until_done(part: Callable[..., Any]) -> None:
                    """Run one half of the session; when either half ends, so does the other."""
                    try:
                        await part(ws, session, lock)
                    except Exception as e:  # reported to this client below
                        if not _is_disconnect(e):
                            failures.append(e)
                    finally:
                        tasks.cancel_scope.cancel()

                tasks.start_soon(until_done, self._send_frames)
                tasks.start_soon(until_done, self._receive)
            for err in failures:  # a failed step (not a client leaving) is reported to that client only
                await _fail(ws, f"session failed: {type(err).__name__}: {err}", 1011)
        finally:
            del self.sessions[sid]

    async def _send_frames(self, ws: WebSocket, session: Session, lock: anyio.Lock) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if session.reset_requested:
                session.reset_requested = False
                seed = await self.run(session.reset)
                async with lock:
                    await ws.send_json({"type": "reset", "seed": seed})
            frame = await self.run(session.step)
            async with lock:
                await ws.send_bytes(encode_frame(frame))
            due += 1.0 / session.settings.fps
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                due = now  # behind: no burst to catch up
                await asyncio.sleep(0)

    async def _receive(self, ws: WebSocket, session: Session, lock: anyio.Lock) -> None:
        cfg = self.config
        bucket = TokenBucket(cfg.message_rate, cfg.message_burst)
        start = time.monotonic()
        for count in itertools.count(1):
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if not bucket.take():
                    raise ProtocolError(
                        f"too many messages: expected at most {cfg.message_rate:g} per second sustained "
                        f"(bursts of {cfg.message_burst}), found {count} in {time.monotonic() - start:.2f} s"
                    )
                text = message.get("text")
                if text is not None and len(text) > cfg.max_message_chars:
                    raise ProtocolError(
                        f"expected a message of at most {cfg.max_message_chars} characters, found {len(text)}"
                    )
                parsed = parse_message(
                    text if text is not None else message.get("bytes"), session.names, session.settings
                )
            except ProtocolError as e:
                async with lock:
                    await _fail(ws, str(e), CLOSE_POLICY)
                return
            if parsed.settings is not None:
                applied = session.apply_settings(parsed.settings)
                async with lock:
                    await ws.send_json({"type": "settings", "settings": applied.to_dict()})
            if parsed.reset:
                session.reset_requested = True
            if parsed.action is not None:
                session.action = parsed.action


def _is_disconnect(err: BaseException) -> bool:
    """Whether `err` is the client going away (in any of the forms the ASGI servers raise it)."""
    return isinstance(err, (WebSocketDisconnect, OSError)) or type(err).__name__ == "ConnectionClosed"


async def _fail(ws: WebSocket, message: str, code: int) -> None:
    """Send an error message and close the socket (if the client is still there)."""
    with contextlib.suppress(Exception):
        if ws.application_state == WebSocketState.CONNECTED:
            await ws.send_json({"type": "error", "message": message})
            await ws.close(code=code, reason=message[:120])


def page() -> str:
    """The play page's HTML."""
    return resources.files("diffworld.play").joinpath("page.html").read_text(encoding="utf-8")


def create_app(
    model: WorldModel,
    config: PlayConfig | None = None,
    world: Callable[[], World] | None | Literal["auto"] = "auto",
    dreamer_factory: DreamerFactory = Dreamer,
) -> FastAPI:
    """The play app of `model`: the page at `/`, sessions at `/ws` (protocol: `diffworld.play`).

    Args:
        model: the world model to dream with.
        config: server settings (default `PlayConfig()`).
        world: a factory of the true world shown beside the dream; "auto" builds the model's
            world with `make_world` where it can, None shows the dream alone.
        dreamer_factory: builds each session's Dreamer (tests inject fakes).
    """
    check_playable(model)
    config = config or PlayConfig()
    try:
        settings_of(model.sampler, config.fps)
    except ValueError as e:
        raise ValueError(f"the model's sampler is outside what play can set live: {e}") from None
    world_factory = true_world(model) if world == "auto" else world
    hub = Hub(model, config, world_factory, dreamer_factory)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        hub.executor.shutdown(wait=False, cancel_futures=True)

    # No /docs, /redoc or /openapi.json: the page and the socket are the whole interface.
    title = f"diffworld play: {model.spec.name}"
    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    html = page()

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Any:
        problem = config.refusal(request.headers, websocket=False)
        return html if problem is None else PlainTextResponse(problem, status_code=403)

    @app.websocket("/ws")
    async def play(ws: WebSocket) -> None:
        await hub.serve_socket(ws)

    return app


def serve(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    fps: float = 30.0,
    device: str = "cpu",
    max_sessions: int = 32,
    threads: int | None = 1,
    log: Callable[[str], None] = print,
    world: str | None = None,
    allow_origins: tuple[str, ...] = (),
) -> None:
    """Load `checkpoint` (a directory or a shipped model's name) and serve its play page until interrupted.

    The server answers to its own names (`server_names`) and, for sessions, to pages it served and
    to those of `allow_origins` ("scheme://host[:port]").

    `world`: the checkpoint's world name, which allows building it when that imports a module
    (`diffworld.worlds.check_recorded_world`); otherwise such a checkpoint is refused.

    `threads` sets torch's CPU threads for the whole process (None leaves them). Steps of batch 1
    of a small model gain nothing from more; on the 2-core machine, with another job running,
    the reference pong model served 57 fps with 1 thread and 47 with 2 (cap 60).
    """
    import torch
    import uvicorn

    from diffworld.model.world_model import read_config, resolve_pretrained

    check_int("port", port, 0, 65535)  # 0: any free port
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        torch.set_num_threads(threads)
    config = PlayConfig(fps=fps, max_sessions=max_sessions, allow_origins=tuple(allow_origins))
    directory = resolve_pretrained(checkpoint)
    model = WorldModel.from_pretrained(directory, device=device)
    check_recorded_world(model.spec.name, str(directory), world)
    options = ((read_config(directory).get("data") or {}).get("collect") or {}).get("world_options")
    sock = listen(host, port)
    port = sock.getsockname()[1]  # the one chosen, for port 0
    app = create_app(model, replace(config, hosts=server_names(host, port)), true_world(model, options, world))
    log(f"playing {model.spec.name} from {checkpoint} at http://{host}:{port}/  (Ctrl-C to stop)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=64 * 1024))
    server.run(sockets=[sock])


def server_names(host: str, port: int) -> tuple[str, ...]:
    """The Host header values of a server bound to host:port: the loopback names and the bind address
    (for a wildcard address, every interface: the machine's name and addresses), with the port."""
    names = ["127.0.0.1", "localhost", "::1"]
    if host in ("0.0.0.0", "::", ""):
        machine = socket.gethostname()
        names += [machine, socket.getfqdn()]
        with contextlib.suppress(OSError):
            names += [str(info[4][0]) for info in socket.getaddrinfo(machine, None)]
    else:
        names.append(host)
    return tuple(dict.fromkeys(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names if "%" not in n))


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening, or ValueError saying why it cannot be."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
