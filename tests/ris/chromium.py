"""Headless Chromium driven over the DevTools protocol (aiohttp's WebSocket client):
load a page, run script in it, read the DOM after scripts and redirects ran."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.peers import require

_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    require(Path(path).exists(), "Chromium not installed (apt-get install chromium)")
    return path


class Chromium:
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "Chromium":
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            m = _LISTENING.search(line)
            if m:
                self.port = int(m.group(1).split(b":")[2].split(b"/")[0])
                return self
        raise TimeoutError("chromium did not open its DevTools port")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stderr.close()
            self.proc = None

    def run(self, steps):
        """Run ``await steps(page)`` against the first tab."""
        return asyncio.run(self._run(steps))

    async def _run(self, steps):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as rsp:
                targets = await rsp.json(content_type=None)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=0) as ws:
                return await steps(Page(ws))


class Page:
    def __init__(self, ws) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        ident = next(self._ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(expression):
                    return
            except RuntimeError:
                pass  # the page is navigating
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{expression} still false after {timeout}s")
