"""diffworld.play: the protocol, a session, and the server through fastapi's TestClient (tiny pong model)."""

import gc
import json
import os
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.play.protocol import (
    LIMITS,
    ClientMessage,
    Frame,
    PlaySettings,
    ProtocolError,
    decode_frame,
    encode_frame,
    key_bindings,
    parse_message,
)
from diffworld.play.session import Session, settings_of
from diffworld.worlds import make_world
from diffworld.worlds.pong import PADDLE_MAX, PADDLE_MIN, PADDLE_SPEED, SPEC, decode
from tests.conftest import tiny_model

fastapi = pytest.importorskip("fastapi", reason="the play server needs fastapi: pip install 'diffworld[play]'")
from fastapi.testclient import TestClient  # noqa: E402

from diffworld.play.server import PlayConfig, TokenBucket, create_app  # noqa: E402

NAMES = ("none", "up", "down")
#: Where the TestClient says it is: a name the server answers to (its default "testserver" is not;
#: `websocket_connect` ignores `base_url`, so sockets take the full address).
BASE, WS = "http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws"
SETTINGS = PlaySettings(steps=3, sigma_ctx=0.05, guidance=1.0, fps=30.0)


# --- helpers shared with test_play_browser.py -------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """What `serve` does: one torch thread (two spinning threads on a busy 2-core machine are 50× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pong_model():
    return tiny_model(SPEC, frames=8)


def paddle_top(picture: np.ndarray) -> float:
    """The player's paddle top row in a pong picture (H, W, 3) uint8."""
    frame = (picture[..., 0] > 127).astype(np.float32)[None]  # (1, 32, 32)
    return float(decode(frame)[0][2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MarkerDreamer:
    """Stands in for a Dreamer: its frame lights the pixel (row = action, column 0), so the dream shows the action
    it got."""

    def __init__(self, model, batch, sampler, generator):
        self.sampler, self.shape, self.actions, self.contexts = sampler, tuple(model.spec.frame_shape), [], []

    def reset(self, context, context_actions=None, rows=None):
        self.contexts.append((context, context_actions))

    def step(self, actions=None):
        a = int(actions[0])
        self.actions.append(a)
        frame = torch.zeros((1,) + self.shape)
        frame[0, 0, a, 0] = 1.0
        return frame


def receive(ws):
    """The next server message: a Frame, a JSON dict, or ("close", code, reason)."""
    msg = ws.receive()
    if msg["type"] == "websocket.close":
        return ("close", msg.get("code"), msg.get("reason"))
    if msg.get("bytes") is not None:
        return decode_frame(msg["bytes"])
    return json.loads(msg["text"])


def next_frame(ws, where=lambda f: True, limit=300) -> Frame:
    for _ in range(limit):
        m = receive(ws)
        if isinstance(m, Frame):
            if where(m):
                return m
            continue
        assert isinstance(m, dict) and m["type"] != "error", m
    raise AssertionError(f"no matching frame in {limit} messages")


def next_message(ws, kind: str, limit=300) -> dict:
    for _ in range(limit):
        m = receive(ws)
        if isinstance(m, dict) and m["type"] == kind:
            return m
        assert not isinstance(m, tuple) and (isinstance(m, Frame) or m["type"] != "error"), m
    raise AssertionError(f"no {kind!r} message in {limit} messages")


def wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# --- protocol -----------------------------------------------------------------------------------


def test_messages_parse_to_actions_settings_and_reset():
    assert parse_message('{"action": "down"}', NAMES, SETTINGS) == ClientMessage(action=2)
    assert parse_message('{"action": 1}', NAMES, SETTINGS) == ClientMessage(action=1)
    got = parse_message('{"settings": {"steps": 5, "guidance": 2}, "reset": true}', NAMES, SETTINGS)
    assert got == ClientMessage(settings=replace(SETTINGS, steps=5, guidance=2.0), reset=True)


BAD_MESSAGES = [
    ("hello", "found text that is not JSON: 'hello'"),
    ("[1, 2]", "expected a JSON object with some of the keys action, settings, reset, found '[1, 2]'"),
    ('{"jump": 1}', "unknown key(s) 'jump': expected some of action, settings, reset"),
    ('{"action": "left"}', "action: expected an integer in [0, 3) or one of 'none', 'up', 'down', found \"left\""),
    ('{"action": 3}', "action: expected an integer in [0, 3)"),
    ('{"action": true}', "found true"),
    ('{"settings": {"steps": 0}}', "settings.steps: expected an integer in [1, 32], found 0"),
    ('{"settings": {"steps": 2.5}}', "settings.steps: expected an integer in [1, 32], found 2.5"),
    ('{"settings": {"fps": 1000}}', "settings.fps: expected a number in [1, 120], found 1000"),
    ('{"settings": {"sigma_ctx": 0}}', "settings.sigma_ctx: expected a number in [0.001, 1], found 0"),
    ('{"settings": {"colour": 1}}', "settings: unknown key(s) 'colour'"),
    ('{"reset": 1}', "reset: expected true, found 1"),
    (b"\x00\x01", "found a binary message of 2 bytes"),
]


@pytest.mark.parametrize("text,expected", BAD_MESSAGES)
def test_bad_messages_say_what_was_expected_and_found(text, expected):
    with pytest.raises(ProtocolError) as e:
        parse_message(text, NAMES, SETTINGS)
    assert expected in str(e.value)


def test_a_world_without_actions_takes_no_action_message():
    with pytest.raises(ProtocolError, match="this world takes no actions, found 1"):
        parse_message('{"action": 1}', (), SETTINGS)


def test_keys_bind_digits_then_arrows_and_wasd_by_name():
    keys = key_bindings(NAMES)
    assert {k: keys[k] for k in ("1", "2", "3", "ArrowUp", "w", "ArrowDown", "S")} == {
        "1": 0,
        "2": 1,
        "3": 2,
        "ArrowUp": 1,
        "w": 1,
        "ArrowDown": 2,
        "S": 2,
    }
    assert (
        key_bindings(("noop", "fire", "move_left", "right"))[" "] == 1
        and key_bindings(("noop", "fire", "move_left"))["ArrowLeft"] == 2
    )


def test_frames_round_trip_through_bytes():
    rng = np.random.default_rng(0)
    panels = tuple(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(2))
    frame = Frame(12, 2, panels, -1.0, True)
    data = encode_frame(frame)
    assert len(data) == 16 + 2 * 5 * 7 * 3
    got = decode_frame(data)
    assert (got.index, got.action, got.reward, got.truth_restarted) == (12, 2, -1.0, True)
    assert all(np.array_equal(a, b) for a, b in zip(got.panels, panels, strict=True))


def test_token_bucket_allows_the_burst_then_the_rate():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.25  # 2.5 tokens back
    assert [bucket.take() for _ in range(3)] == [True, True, False]


# --- session ------------------------------------------------------------------------------------


def test_reset_starts_the_dream_from_the_true_game(pong_model):
    """The context is the true game from the returned seed under the recorded actions, and the truth goes on from its
    last frame."""
    session = Session(pong_model, SETTINGS, make_world("pong"), seed=3)
    seed = session.reset()
    context, actions = session.dreamer.history[0], session.dreamer.history_actions[0]  # (7, 1, 32, 32), (7,)
    assert context.shape == (7, 1, 32, 32) and session.index == 0
    replay = make_world("pong")
    replay.reset(seed)
    frames = [replay.step(int(a))[0] for a in actions]
    assert torch.equal(context, torch.as_tensor(np.stack(frames), dtype=torch.float32))
    assert len(set(actions.tolist())) > 1  # random actions, not a constant
    frame = session.step()
    assert np.array_equal(frame.panels[1], np.repeat(replay.step(0)[0][0][..., None] * 255, 3, axis=-1))
    assert frame.index == 1 and frame.panels[0].shape == (32, 32, 3)


def test_actions_drive_the_dream_and_the_true_paddle(pong_model):
    """Same seed, up vs down: the true paddle moves 2 rows per step each way, and the dreams differ."""
    runs = {}
    for action in (1, 2):
        session = Session(pong_model, SETTINGS, make_world("pong"), seed=7)
        start = session.world.py
        session.action = action
        frames = [session.step() for _ in range(3)]
        assert [f.action for f in frames] == [action] * 3
        runs[action] = (start, [paddle_top(f.panels[1]) for f in frames], np.stack([f.panels[0] for f in frames]))
    (start, up, dream_up), (start_down, down, dream_down) = runs[1], runs[2]
    assert start == start_down
    assert up == [max(start - PADDLE_SPEED * k, PADDLE_MIN) for k in (1, 2, 3)]
    assert down == [min(start + PADDLE_SPEED * k, PADDLE_MAX) for k in (1, 2, 3)]
    assert not np.array_equal(dream_up, dream_down)  # same draws, different actions


def test_settings_replace_the_dreamers_sampler(pong_model):
    session = Session(pong_model, SETTINGS, make_world("pong"), seed=0)
    session.apply_settings(PlaySettings(steps=5, sigma_ctx=0.1, guidance=2.0, fps=10.0))
    assert session.dreamer.sampler == replace(pong_model.sampler, steps=5, sigma_ctx=0.1, guidance=2.0)
    session.step()  # guidance 2 evaluates the unconditional branch too: it must run


def test_the_chance_sampler_keeps_one_step_and_no_guidance_in_play():
    model = tiny_model(SPEC, frames=8, chance=4)
    model.sampler = SamplerConfig(method="chance", sigma_ctx=0.05)
    assert settings_of(model.sampler, 30.0) == PlaySettings(steps=1, sigma_ctx=0.05, guidance=1.0, fps=30.0)
    session = Session(model, settings_of(model.sampler, 30.0), make_world("pong"), seed=0)
    applied = session.apply_settings(PlaySettings(steps=5, sigma_ctx=0.1, guidance=2.0, fps=10.0))
    assert applied == session.settings == PlaySettings(steps=1, sigma_ctx=0.1, guidance=1.0, fps=10.0)
    assert session.dreamer.sampler == replace(model.sampler, steps=1, sigma_ctx=0.1)
    session.step()


def test_without_a_true_world_the_dream_starts_blank_and_plays_alone(pong_model):
    session = Session(pong_model, SETTINGS, None, seed=0)
    assert torch.allclose(session.dreamer.history, pong_model.mean.expand(1, 7, 1, 32, 32))
    frame = session.step()
    assert len(frame.panels) == 1 and frame.reward == 0.0


def test_play_refuses_worlds_it_cannot_show_or_drive():
    from diffworld.worlds.lorenz96 import Lorenz96

    lorenz = tiny_model(Lorenz96().spec, frames=5, patch=1)
    with pytest.raises(ValueError, match="play shows grid worlds"):
        create_app(lorenz)


# --- server -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(pong_model):
    app = create_app(pong_model, PlayConfig(seed=0, fps=60))
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def marker_client(pong_model):
    app = create_app(pong_model, PlayConfig(seed=0, fps=60), dreamer_factory=MarkerDreamer)
    with TestClient(app, base_url=BASE) as c:
        yield c


def hub(client):
    return client.app.state.hub


def test_page_and_hello(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="dream"' in page.text and 'id="fps"' in page.text
    with client.websocket_connect(WS) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello" and hello["world"] == "pong" and hello["protocol"] == 1
        assert hello["actions"] == {"kind": "discrete", "names": list(NAMES), "idle": 0}
        assert hello["panels"] == ["dream", "truth"] and hello["image"] == [32, 32]
        assert hello["keys"]["ArrowUp"] == 1 and hello["keys"]["s"] == 2
        assert hello["settings"] == {"steps": 3, "sigma_ctx": 0.05, "guidance": 1.0, "fps": 60.0}
        assert hello["limits"] == {k: list(v) for k, v in LIMITS.items()}


def test_frames_arrive_with_the_right_shape(client):
    with client.websocket_connect(WS) as ws:
        receive(ws)
        frames = [next_frame(ws) for _ in range(4)]
    assert [f.index for f in frames] == [1, 2, 3, 4]
    for f in frames:
        assert len(f.panels) == 2 and all(p.shape == (32, 32, 3) and p.dtype == np.uint8 for p in f.panels)
        assert set(np.unique(f.panels[1])) <= {0, 255} and f.action == 0
        assert not np.isnan(paddle_top(f.panels[1]))  # the truth is a valid pong frame


def test_the_latest_action_drives_dream_and_truth(marker_client):
    """The dream shows the action it was given (marker pixel), and the true paddle moves 2 rows its way per frame."""
    with marker_client.websocket_connect(WS) as ws:
        receive(ws)
        for name, action, sign in (("up", 1, -1), ("down", 2, 1)):
            ws.send_text(json.dumps({"action": name}))
            prev = next_frame(ws, lambda f, action=action: f.action == action)
            for _ in range(3):
                f = next_frame(ws)
                assert f.action == action
                dream = f.panels[0][:, 0, 0]
                assert dream[action] == 255 and dream.sum() == 255  # only the marker of this action
                if not f.truth_restarted:
                    expected = min(max(paddle_top(prev.panels[1]) + sign * PADDLE_SPEED, PADDLE_MIN), PADDLE_MAX)
                    assert paddle_top(f.panels[1]) == expected
                prev = f
        dreamer = next(iter(hub(marker_client).sessions.values())).dreamer
        assert (
            1 in dreamer.actions and dreamer.actions[-1] == 2 and dreamer.actions == sorted(dreamer.actions)
        )  # none, up, down


def test_settings_change_the_sessions_sampler_and_rate(client, pong_model):
    with client.websocket_connect(WS) as ws:
        sid = receive(ws)["session"]
        ws.send_text(json.dumps({"settings": {"steps": 2, "sigma_ctx": 0.2, "guidance": 1.5, "fps": 20}}))
        ack = next_message(ws, "settings")
        assert ack["settings"] == {"steps": 2, "sigma_ctx": 0.2, "guidance": 1.5, "fps": 20.0}
        session = hub(client).sessions[sid]
        assert session.dreamer.sampler == replace(pong_model.sampler, steps=2, sigma_ctx=0.2, guidance=1.5)
        next_frame(ws)
        start = time.monotonic()
        for _ in range(8):
            next_frame(ws)
        assert time.monotonic() - start >= 7 / 20 * 0.9  # never faster than the session's fps


def test_reset_restarts_from_a_fresh_true_start(marker_client):
    """After a reset the dream's context is the true game of the announced seed, and the truth goes on from there."""
    with marker_client.websocket_connect(WS) as ws:
        sid = receive(ws)["session"]
        next_frame(ws, lambda f: f.index >= 3)
        dreamer = hub(marker_client).sessions[sid].dreamer
        ws.send_text('{"reset": true}')
        seed = next_message(ws, "reset")["seed"]
        first = next_frame(ws)
        assert first.index == 1  # counting restarts
    context, actions = dreamer.contexts[-1]  # (1, 7, 1, 32, 32), (1, 7)
    assert len(dreamer.contexts) == 2
    replay = make_world("pong")
    replay.reset(seed)
    frames = [replay.step(int(a))[0] for a in actions[0]]
    assert torch.equal(context[0], torch.as_tensor(np.stack(frames), dtype=torch.float32))
    truth = replay.step(first.action)[0][0] * 255  # (32, 32)
    assert np.array_equal(first.panels[1][..., 0], truth)


@pytest.mark.parametrize("text,expected", BAD_MESSAGES[::3] + [("x" * 2000, "at most 1024 characters, found 2000")])
def test_bad_input_closes_only_that_session(client, text, expected):
    with client.websocket_connect(WS) as good, client.websocket_connect(WS) as bad:
        receive(good), receive(bad)
        next_frame(bad)
        bad.send_bytes(text) if isinstance(text, bytes) else bad.send_text(text)
        error = next_message(bad, "error")
        assert expected in error["message"]
        assert ("close", 1008) == next(m for m in iter(lambda: receive(bad), None) if isinstance(m, tuple))[:2]
        good.send_text('{"action": "down"}')  # the other session still steps, and under its own action
        assert next_frame(good, lambda f: f.action == 2).index > 0


def test_a_flood_of_messages_closes_that_session_only(client):
    with client.websocket_connect(WS) as good, client.websocket_connect(WS) as flood:
        receive(good), receive(flood)
        for _ in range(300):
            flood.send_text('{"action": 1}')
        error = next_message(flood, "error")
        assert "too many messages: expected at most 100 per second sustained (bursts of 100)" in error["message"]
        good.send_text('{"action": "up"}')
        assert next_frame(good, lambda f: f.action == 1).index > 0


class BrokenDreamer(Dreamer):
    def step(self, actions=None):
        if self.t > self.keep:  # its second step
            raise RuntimeError("boom")
        return super().step(actions)


def test_a_failing_step_ends_that_session_with_an_error(pong_model):
    built = []

    def factory(*args):
        built.append((BrokenDreamer if not built else Dreamer)(*args))
        return built[-1]

    with TestClient(create_app(pong_model, PlayConfig(seed=0), dreamer_factory=factory), base_url=BASE) as c:
        with c.websocket_connect(WS) as broken:
            receive(broken)
            with c.websocket_connect(WS) as fine:
                receive(fine)
                assert next_message(broken, "error")["message"] == "session failed: RuntimeError: boom"
                assert receive(broken)[:2] == ("close", 1011)
                assert next_frame(fine, lambda f: f.index >= 3).index >= 3


def test_a_session_that_cannot_start_is_told_why(pong_model):
    def factory(*args):
        raise RuntimeError("no dreams today")

    app = create_app(pong_model, PlayConfig(seed=0), dreamer_factory=factory)
    with TestClient(app, base_url=BASE) as c, c.websocket_connect(WS) as ws:
        assert receive(ws) == {"type": "error", "message": "session failed to start: RuntimeError: no dreams today"}
        assert receive(ws)[:2] == ("close", 1011)
    assert not app.state.hub.sessions


def test_session_limit_and_closed_sessions_are_freed(pong_model):
    app = create_app(pong_model, PlayConfig(seed=0, max_sessions=2), world=None)
    with TestClient(app, base_url=BASE) as c:
        sessions = app.state.hub.sessions
        with c.websocket_connect(WS) as first:
            hello = receive(first)
            assert hello["panels"] == ["dream"]
            assert len(next_frame(first).panels) == 1
            freed = weakref.ref(sessions[hello["session"]])
            with c.websocket_connect(WS) as second:
                receive(second)
                with c.websocket_connect(WS) as third:
                    error = receive(third)
                    assert error["type"] == "error"
                    assert "server busy: expected at most 2 sessions at once, found 2 playing" in error["message"]
                    assert receive(third)[:2] == ("close", 1013)
                next_frame(second)  # the refused one disturbed nobody
        wait_until(lambda: not sessions)
        # The session and its dreamer are gone once the worker is past a step it had queued.
        wait_until(lambda: gc.collect() >= 0 and freed() is None, timeout=5)
        with c.websocket_connect(WS) as again:
            assert receive(again)["type"] == "hello"
            next_frame(again)


# --- who may connect ----------------------------------------------------------------------------


def refused(client, headers: dict[str, str]) -> tuple[int, str]:
    """The close code and reason of a WebSocket the server refuses at the handshake."""
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as err, client.websocket_connect(WS, headers=headers):
        pass
    return err.value.code, err.value.reason


def test_a_websocket_from_another_origin_is_refused_unless_allowed(pong_model):
    app = create_app(pong_model, PlayConfig(seed=0), world=None, dreamer_factory=MarkerDreamer)
    with TestClient(app, base_url=BASE) as c:
        code, reason = refused(c, {"origin": "http://evil.example"})
        assert code == 1008 and "expected Origin http://127.0.0.1:8000 (this server's)" in reason
        assert refused(c, {"origin": "http://127.0.0.1:9999"})[0] == 1008  # another port is another origin
        assert refused(c, {"origin": "null"})[0] == 1008  # a sandboxed page or a file
        for same in ({"origin": BASE}, {}):  # the page this server serves, or a client that is no browser
            with c.websocket_connect(WS, headers=same) as ws:
                assert receive(ws)["type"] == "hello"
        wait_until(lambda: not app.state.hub.sessions)
    allowed = create_app(pong_model, PlayConfig(seed=0, allow_origins=("http://evil.example",)), world=None)
    with (
        TestClient(allowed, base_url=BASE) as c,
        c.websocket_connect(WS, headers={"origin": "http://evil.example"}) as ws,
    ):
        assert receive(ws)["type"] == "hello"


def test_a_host_that_is_not_the_servers_is_refused(pong_model):
    """DNS rebinding: a page at evil.example whose name now points at 127.0.0.1 is same-origin with
    itself, but its requests carry Host evil.example, which is none of this server's names."""
    app = create_app(pong_model, PlayConfig(seed=0, hosts=("127.0.0.1:8000", "localhost:8000")), world=None)
    with TestClient(app, base_url=BASE) as c:
        evil = {"host": "evil.example:8000", "origin": "http://evil.example:8000"}
        code, reason = refused(c, evil)
        assert code == 1008 and "expected Host one of 127.0.0.1:8000, localhost:8000, found evil.example:8000" in reason
        page = c.get("/", headers={"host": "evil.example:8000"})
        assert page.status_code == 403 and "expected Host one of" in page.text
        assert c.get("/", headers={"host": "localhost:9999"}).status_code == 403  # the port is part of the name
        assert c.get("/", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/").status_code == 200


def test_the_api_docs_are_off(client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path


def test_bad_allowed_origins_and_hosts_are_refused():
    with pytest.raises(ValueError, match=r"allow_origins: expected scheme://host\[:port\] .*found 'evil.example'"):
        PlayConfig(allow_origins=("evil.example",))
    with pytest.raises(ValueError, match=r"allow_origins: .*found 'http://evil.example/page'"):
        PlayConfig(allow_origins=("http://evil.example/page",))
    with pytest.raises(ValueError, match=r"hosts: expected host\[:port\] .*found 'http://x'"):
        PlayConfig(hosts=("http://x",))


# --- command line -------------------------------------------------------------------------------


def test_cli_play_refuses_bad_input(tmp_path):
    from typer.testing import CliRunner

    from diffworld.cli import app

    result = CliRunner().invoke(app, ["play", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "error: no checkpoint at" in result.stderr
    result = CliRunner().invoke(app, ["play", "pong", "--fps", "500"])
    assert result.exit_code == 2 and "error: fps: expected a value in [1, 120], got 500.0" in result.stderr
    result = CliRunner().invoke(app, ["play", "pong", "--allow-origin", "example.com"])
    assert result.exit_code == 2 and "error: allow_origins: expected scheme://host[:port]" in result.stderr
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["play", "pong", "--port", str(port)])
    assert result.exit_code == 2 and f"error: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_without_fastapi_diffworld_imports_and_play_names_the_extra():
    """`import diffworld` and the play protocol never need fastapi; `diffworld play` says how to get it."""
    script = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "import diffworld, diffworld.cli\n"
        "from diffworld.play import decode_frame, PlaySettings\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(diffworld.cli.app, ['play', 'pong'])\n"
        "print(r.exit_code, r.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("2 error: play needs fastapi and uvicorn") and "pip install 'diffworld[play]'" in out
    assert len(out.strip().splitlines()) == 1


def test_cli_serves_a_checkpoint(tmp_path, pong_model):
    """`diffworld play DIR --port P` prints the address, serves the page and plays over the socket."""
    import httpx
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ckpt = pong_model.save_pretrained(tmp_path / "pong")
    port = free_port()
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffworld", "play", str(ckpt), "--port", str(port), "--fps", "60", "--allow-origin", "http://allowed.example:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        for _ in range(200):
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert page.status_code == 200 and "diffworld play" in page.text
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            assert json.loads(ws.recv(timeout=10))["world"] == "pong"
            frame = decode_frame(ws.recv(timeout=10))
            assert frame.index == 1 and len(frame.panels) == 2
        with pytest.raises(InvalidStatus, match="403"):
            connect(f"ws://127.0.0.1:{port}/ws", origin="http://evil.example")
        with connect(f"ws://127.0.0.1:{port}/ws", origin="http://allowed.example:8080") as ws:
            assert json.loads(ws.recv(timeout=10))["world"] == "pong"
        assert httpx.get(f"http://127.0.0.1:{port}/", headers={"host": f"evil.example:{port}"}).status_code == 403
        assert httpx.get(f"http://localhost:{port}/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
