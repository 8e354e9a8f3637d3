"""diffworld.play over real sockets: the page in headless chromium, and 20 players at once (tiny pong model)."""

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from diffworld.dreamer import Dreamer
from diffworld.worlds.pong import PADDLE_MAX, PADDLE_MIN, SPEC
from tests.conftest import tiny_model
from tests.test_play import free_port, one_torch_thread, paddle_top, wait_until  # noqa: F401 (fixture)

pytest.importorskip("fastapi", reason="the play server needs fastapi: pip install 'diffworld[play]'")
import uvicorn  # noqa: E402
import websockets  # noqa: E402

from diffworld.play import decode_frame  # noqa: E402
from diffworld.play.server import PlayConfig, create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


class SpyDreamer(Dreamer):
    """A real Dreamer that records the actions it is stepped with."""

    def __init__(self, *args):
        super().__init__(*args)
        self.actions = []

    def step(self, actions=None):
        self.actions.append(int(actions[0]))
        return super().step(actions)


@contextlib.contextmanager
def running(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields host:port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=64 * 1024)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def served():
    app = create_app(tiny_model(SPEC, frames=8), PlayConfig(seed=0), dreamer_factory=SpyDreamer)
    with running(app) as address:
        yield app, address


def require_chromium():
    if os.path.exists(CHROMIUM):
        return
    reason = f"headless chromium is missing at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("DIFFWORLD_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and DIFFWORLD_REQUIRE_BROWSER is set")
    pytest.skip(reason)


PIXELS = "id => Array.from(document.getElementById(id).getContext('2d').getImageData(0, 0, 32, 32).data)"


def canvas(page, which: str) -> np.ndarray:
    """The (32, 32, 3) pixels a canvas shows."""
    return np.array(page.evaluate(PIXELS, which), dtype=np.uint8).reshape(32, 32, 4)[..., :3]


def text(page, selector: str) -> str:
    return page.locator(selector).text_content()


def wait_for_paddle(page, row: int, timeout: float = 8.0) -> None:
    end = time.monotonic() + timeout
    while paddle_top(canvas(page, "truth")) != row:
        assert time.monotonic() < end, f"the true paddle never reached row {row}"
        time.sleep(0.05)


def test_page_plays_in_headless_chromium(served, tmp_path):
    """Frames arrive (fps > 0, pixels change); keys and buttons drive the dream and the truth; settings and reset
    work."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    app, address = served
    sessions = app.state.hub.sessions
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://{address}/")
            page.wait_for_function("Number(document.getElementById('fps').textContent) > 0", timeout=20_000)
            assert text(page, "#title") == "diffworld play: pong" and page.locator("#truth-panel").is_visible()
            dream, truth = canvas(page, "dream"), canvas(page, "truth")
            end = time.monotonic() + 8.0  # a loaded machine can hold a frame back for a moment
            while np.array_equal(truth, canvas(page, "truth")) or np.array_equal(dream, canvas(page, "dream")):
                assert time.monotonic() < end, "the truth and the dream did not both move within 8 s"
                time.sleep(0.1)
            (session,) = sessions.values()

            # Keys: hold ArrowUp, then S: the applied action shows, the true paddle runs to the wall,
            # and the dream was stepped with the same action.
            for key, name, action, wall in (("ArrowUp", "up", 1, PADDLE_MIN), ("s", "down", 2, PADDLE_MAX)):
                page.keyboard.down(key)
                page.wait_for_function(f"document.getElementById('applied').textContent === '{name}'", timeout=5000)
                wait_for_paddle(page, wall)
                assert session.dreamer.actions[-1] == action
                page.keyboard.up(key)
                page.wait_for_function("document.getElementById('applied').textContent === 'none'", timeout=5000)

            # Buttons: hold "up" with the mouse.
            button = page.locator("button[data-action='up']")
            button.hover()
            page.mouse.down()
            page.wait_for_function("document.getElementById('applied').textContent === 'up'", timeout=5000)
            assert "on" in button.get_attribute("class")
            wait_for_paddle(page, PADDLE_MIN)
            page.mouse.up()
            page.wait_for_function("document.getElementById('applied').textContent === 'none'", timeout=5000)

            # Settings: the session's sampler changes live.
            page.locator("#steps").fill("2")
            page.locator("#guidance").fill("1.5")
            page.locator("#guidance").press("Tab")
            wait_until(lambda: (session.dreamer.sampler.steps, session.dreamer.sampler.guidance) == (2, 1.5))

            # Reset: a fresh true start, frame counting restarts.
            page.locator("#reset").click()
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('reset: episode seed')", timeout=5000
            )
            page.wait_for_function("Number(document.getElementById('fps').textContent) > 0", timeout=5000)
            assert float(text(page, "#fps")) > 0 and not errors, errors

            shot = tmp_path / "play.png"
            page.screenshot(path=str(shot))
            if os.environ.get("DIFFWORLD_ARTIFACTS"):
                out = Path(os.environ["DIFFWORLD_ARTIFACTS"])
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, out / "play.png")
            assert shot.stat().st_size > 1000
        finally:
            browser.close()
    wait_until(lambda: not sessions)  # the closed tab freed its session


def test_twenty_players_at_once_and_a_flooder(served):
    """20 sessions over loopback each get frames within a bound, share the worker fairly, and a 21st client
    that floods messages is closed without slowing the others."""
    app, address = served
    url = f"ws://{address}/ws"
    players, want, bound = 20, 12, 40.0
    counts = [0] * players

    async def player(i: int, stop: asyncio.Event) -> None:
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"action": i % 3}))
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    frame = decode_frame(msg)
                    assert len(frame.panels) == 2 and frame.panels[0].shape == (32, 32, 3)
                    counts[i] += 1

    async def flooder() -> tuple[str, int]:
        async with websockets.connect(url) as ws:
            await ws.recv()
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(1000):
                    await ws.send('{"action": 1}')
            error = None
            try:
                while True:
                    msg = await ws.recv()
                    if isinstance(msg, str) and json.loads(msg)["type"] == "error":
                        error = json.loads(msg)["message"]
            except websockets.ConnectionClosed as e:
                return error, e.rcvd.code

    async def until(predicate, limit: float) -> float:
        start = time.monotonic()
        while not predicate():
            assert time.monotonic() - start < limit, f"frames per player {counts}"
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(player(i, stop)) for i in range(players)]
        took = await until(lambda: min(counts) >= want, bound)
        before = list(counts)
        error, code = await flooder()
        assert error is not None and "too many messages" in error and code == 1008
        await until(lambda: all(c >= b + want for c, b in zip(counts, before, strict=True)), bound)
        gained = np.array(counts) - np.array(before)
        stop.set()
        await asyncio.gather(*tasks)
        print(
            f"\n{players} players: {want} frames each in {took:.1f} s; "
            f"afterwards {gained.sum()} frames, {gained.min()}..{gained.max()} per player"
        )
        assert gained.min() >= gained.max() / 3  # round-robin: nobody starves

    asyncio.run(main())
    wait_until(lambda: not app.state.hub.sessions)
