"""The OHIF viewer installed by `pacsnode viewer install` and served at /viewer, in headless
Chromium: the study list shows the node's studies, a CT study opens and its image is drawn,
and no request the browser made failed."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.integration.helpers import describe, storescu
from tests.peers import REPO, Node, free_port, require
from tests.ris.chromium import Chromium, Page, chromium_path

pytestmark = pytest.mark.integration

UID_ROOT = "1.2.826.0.1.3680043.10.1471.999.7."
CT_STUDY = UID_ROOT + "1"
SLICES = 12


@pytest.fixture(scope="session")
def viewer_dir(tmp_path_factory) -> Path:
    """The pinned OHIF viewer, installed once per session the way an operator does."""
    target = tmp_path_factory.mktemp("ohif") / "viewer"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pacsnode.cli", "viewer", "install", "--dir", str(target)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    require(proc.returncode == 0 and (target / "index.html").exists(), f"pacsnode viewer install failed: {proc.stderr[-2000:]}")
    return target


def ct_series(folder: Path) -> list[Path]:
    """A small CT study: CT_small's image as a stack of slices, 1.5 mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    source = dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for n in range(SLICES):
        ds = source.copy()
        ds.StudyInstanceUID = CT_STUDY
        ds.SeriesInstanceUID = UID_ROOT + "2"
        ds.SOPInstanceUID = f"{UID_ROOT}3.{n + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = "Viewer^Phantom"
        ds.PatientID = "VIEWER-1"
        ds.AccessionNumber = "ACC-VIEWER"
        ds.StudyDescription = "Viewer CT"
        ds.SeriesDescription = "Axial"
        ds.InstanceNumber = n + 1
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 1.5 * n]
        ds.SliceLocation = z + 1.5 * n
        arr = source.pixel_array.astype(np.int32) + 10 * n
        ds.PixelData = arr.astype(source.pixel_array.dtype).tobytes()
        path = folder / f"ct{n + 1:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


class RecordingPage(Page):
    """A Page that keeps the protocol's events (network, console) instead of dropping them."""

    def __init__(self, ws) -> None:
        super().__init__(ws)
        self.events: list[dict] = []

    async def call(self, method: str, **params) -> dict:
        ident = next(self._ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def failed_requests(self) -> list[str]:
        urls = {}
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
        failed = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
                failed.append(f"{p['response']['status']} {p['response']['url']}")
            elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
                failed.append(f"{p.get('errorText')} {urls.get(p['requestId'], p['requestId'])}")
        return failed


@pytest.fixture(scope="module")
def viewer_node(tmp_path_factory, viewer_dir):
    folder = tmp_path_factory.mktemp("viewer")
    data = folder / "node"
    data.mkdir()
    (data / "viewer").symlink_to(viewer_dir)  # where `pacsnode viewer install --data` puts it
    http_port = free_port()
    node = Node(data, extra=["--http-port", str(http_port), "--workers", "2"]).start()
    try:
        files = [describe(p) for p in ct_series(folder / "ct")]
        report = storescu(node.port, files, folder / "load")
        assert len(report.succeeded()) == SLICES, report.output[-2000:]
        yield node, http_port
    finally:
        node.stop()


def test_viewer_not_installed_says_how(tmp_path):
    http_port = free_port()
    node = Node(tmp_path / "bare", extra=["--http-port", str(http_port), "--workers", "1"]).start()
    try:
        rsp = requests.get(f"http://127.0.0.1:{http_port}/viewer/", timeout=30)
        assert rsp.status_code == 503 and "pacsnode viewer install" in rsp.text
        assert requests.get(f"http://127.0.0.1:{http_port}/dicom-web/studies", timeout=30).json() == []
    finally:
        node.stop()


def test_viewer_lists_and_draws_a_ct_study(viewer_node, tmp_path):
    chromium_path()
    node, http_port = viewer_node
    root = f"http://127.0.0.1:{http_port}"
    assert requests.get(f"{root}/viewer", timeout=30, allow_redirects=False).status_code == 302
    assert "PUBLIC_URL=\"/viewer/\"" in requests.get(f"{root}/viewer/", timeout=30).text

    async def steps(page: Page):
        page = RecordingPage(page.ws)
        for domain in ("Network", "Page", "Runtime", "Log"):
            await page.call(f"{domain}.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        await page.call("Page.navigate", url=f"{root}/viewer/")
        await page.wait_for("document.body && document.body.innerText.includes('ACC-VIEWER')", timeout=60)
        listed = await page.evaluate("document.body.innerText")
        await page.call("Page.navigate", url=f"{root}/viewer/viewer?StudyInstanceUIDs={CT_STUDY}")
        # The image is drawn: a visible canvas in the viewport holds varied pixels.
        drawn = """(() => {
            const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas')]
                .filter(c => c.width > 64 && c.height > 64);
            for (const c of canvases) {
                let data;
                try {
                    const ctx = c.getContext('2d');
                    if (!ctx) continue;
                    data = ctx.getImageData(0, 0, c.width, c.height).data;
                } catch (e) { continue; }
                const seen = new Set();
                for (let i = 0; i < data.length; i += 4 * 97) seen.add(data[i]);
                if (seen.size > 16) return true;
            }
            return false;
        })()"""
        await page.wait_for(drawn, timeout=90)
        # Window/level: a drag with the left button changes the drawn pixels.
        before = await page.evaluate("document.querySelector('canvas.cornerstone-canvas').toDataURL()")
        box = await page.evaluate(
            "(() => { const r = document.querySelector('canvas.cornerstone-canvas').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        await page.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for step in range(1, 11):
            await page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + 8 * step, y=y + 5 * step, button="left", buttons=1)
        await page.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + 80, y=y + 50, button="left", clickCount=1)
        deadline = time.monotonic() + 10
        after = before
        while after == before and time.monotonic() < deadline:
            after = await page.evaluate("document.querySelector('canvas.cornerstone-canvas').toDataURL()")
        shot = await page.call("Page.captureScreenshot", format="png")
        await page.evaluate("new Promise(r => setTimeout(r, 1000))")  # let late requests settle into the log
        return listed, before != after, base64.b64decode(shot["data"]), page.failed_requests()

    browser = Chromium(tmp_path / "profile").start()
    try:
        listed, window_levelled, png, failed = browser.run(steps)
    finally:
        browser.stop()
    (tmp_path / "viewer.png").write_bytes(png)
    from PIL import Image

    screen = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert "Viewer CT" in listed
    assert screen.std() > 10, f"the screenshot is blank ({tmp_path / 'viewer.png'})"
    assert window_levelled, "dragging in the viewport did not change the image (window/level)"
    assert not failed, f"requests failed in the browser: {failed}"
