"""Frames per second of `diffworld play` as the page itself measures them (issue 7's bar: >= 15).

    python benchmarks/play_fps.py [FPS_CAP=30] [SECONDS=20] [SCREENSHOT.png]

Starts `diffworld play pong --fps FPS_CAP` on a free loopback port, opens the page in headless
Debian chromium (/usr/bin/chromium, through Playwright), holds up and down alternately (1 s
each), and samples the page's own fps counter (frames received over the last second) every
second; prints the samples, their mean and minimum after the first 3 s, and the frame counter's
rate over the whole run. Run it on a quiet machine.
"""

import json
import os
import socket
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

cap = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
shot = sys.argv[3] if len(sys.argv) > 3 else None
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cmd = [sys.executable, "-m", "diffworld", "play", "pong", "--port", str(port), "--fps", str(cap)] + os.environ.get(
    "PLAY_ARGS", ""
).split()
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    print(" ".join(cmd), "->", proc.stdout.readline().strip(), flush=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 900, "height": 640})
        for _ in range(100):
            try:
                page.goto(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                time.sleep(0.1)
        page.wait_for_function("Number(document.getElementById('fps').textContent) > 0", timeout=30000)
        samples, frames = [], []
        t0 = time.monotonic()
        f0 = int(page.locator("#frame").text_content())
        keys = ["ArrowUp", "ArrowDown"]
        for i in range(int(seconds)):
            page.keyboard.down(keys[i % 2])
            time.sleep(1.0)
            page.keyboard.up(keys[i % 2])
            samples.append(float(page.locator("#fps").text_content()))
        t1 = time.monotonic()
        f1 = int(page.locator("#frame").text_content())
        if shot:
            page.screenshot(path=shot)
        browser.close()
    warm = samples[3:]
    print(
        json.dumps(
            {
                "fps_cap": cap,
                "seconds": round(t1 - t0, 1),
                "page_fps_samples": samples,
                "mean_after_3s": round(sum(warm) / len(warm), 1),
                "min_after_3s": min(warm),
                "frames_per_s_from_counter": round((f1 - f0) / (t1 - t0), 1),
                "loadavg": os.getloadavg(),
            }
        )
    )
finally:
    proc.terminate()
    proc.wait(10)
