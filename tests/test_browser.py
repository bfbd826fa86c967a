"""The latent-space explorer works in a real JupyterLab, driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (random port and token) in a temporary folder holding a copy of
``solutions/07_latent_space_explorer.ipynb``, opens it in Debian's ``chromium`` through Playwright
for Python (no browser download), runs all cells, moves the VAE explorer's first slider with the
keyboard and checks that the decoded digit on screen changed (pixels of two screenshots of the
image element), and that no widget error is shown. Screenshots go to ``artifacts/browser/``.

Without chromium the test is skipped, unless ``LABSUPPORT_REQUIRE_BROWSER=1`` (set by CI), where it fails.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "solutions" / "07_latent_space_explorer.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDGET_ERRORS = ["Error displaying widget", "model not found", "Failed to load model class"]
# Quiet, deterministic JupyterLab: no news or update checks (no network), every cell attached to the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def _chromium() -> str:
    """Path of Debian's chromium; skip (or fail when CI requires the browser) if it or Playwright is missing."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    problem = None if path else "Debian's chromium is not installed (run: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("LABSUPPORT_REQUIRE_BROWSER", "") == "1":
            pytest.fail(f"LABSUPPORT_REQUIRE_BROWSER=1 but {problem}: the browser test cannot run")
        pytest.skip(problem)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def jupyterlab(tmp_path, mnist_available):
    """A running JupyterLab serving a copy of the explorer notebook; yields (url, token). Always stopped."""
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    settings = tmp_path / "settings"
    for rel, content in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(content))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "LABSUPPORT_THREADS": os.environ.get("LABSUPPORT_THREADS", "1")}
    log = open(tmp_path / "jupyterlab.log", "w")
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port), f"--IdentityProvider.token={token}",
           "--allow-root", f"--ServerApp.root_dir={work}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # own group: kernels too
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"JupyterLab did not start (exit code {server.poll()}):\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, token
    finally:
        _stop(server)
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "jupyterlab.log", ARTIFACTS / "jupyterlab.log")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and every kernel it started (its process group): SIGTERM, then SIGKILL."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # kernels that outlived the server
    except ProcessLookupError:
        pass
    server.wait(timeout=10)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


def test_explorer_slider_redraws_the_digit_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    url, token = jupyterlab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel has started
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            start = time.time()
            # The last cell prints the latency table: when that output is there, every cell has run.
            page.locator(".jp-OutputArea-output", has_text="redraw time on").wait_for(timeout=300_000)
            print(f"\nall cells ran in the browser in {time.time() - start:.1f} s")
            page.screenshot(path=str(ARTIFACTS / "notebook_end.png"))

            text = page.locator(".jp-Notebook").inner_text()
            for bad in WIDGET_ERRORS + ["Traceback (most recent call last)"]:
                assert bad not in text, f"the notebook shows {bad!r}; see {ARTIFACTS}"

            explorer = page.locator(".labsupport-explorer").first
            explorer.scroll_into_view_if_needed()
            view = explorer.locator("img.labsupport-view")
            view.wait_for(state="visible")
            explorer.screenshot(path=str(ARTIFACTS / "vae_explorer_before.png"))
            before = view.screenshot(path=str(ARTIFACTS / "digit_before.png"))

            handle = explorer.locator(".widget-slider .noUi-handle").first
            handle.focus()
            t0 = time.time()
            for _ in range(30):  # 30 steps of 0.05: the first latent dimension moves by 1.5
                page.keyboard.press("ArrowRight")
            after, changed = before, False
            while time.time() - t0 < 20 and not changed:
                page.wait_for_timeout(100)
                after = view.screenshot()
                changed = _pixels(after).shape == _pixels(before).shape and bool(np.any(_pixels(after) != _pixels(before)))
            print(f"the digit changed on screen {time.time() - t0:.2f} s after the first of 30 key presses")
            (ARTIFACTS / "digit_after.png").write_bytes(after)
            explorer.screenshot(path=str(ARTIFACTS / "vae_explorer_after.png"))
            value = explorer.locator(".widget-readout").first.inner_text()
            assert changed, f"moving the slider (readout now {value}) did not change the digit on screen; see {ARTIFACTS}"
            diff = np.abs(_pixels(after) - _pixels(before))
            print(f"slider readout {value}; {100 * (diff > 0).mean():.1f}% of the digit's pixels changed (mean change {diff.mean():.1f}/255)")
            assert (diff > 0).mean() > 0.01, "only a few pixels changed: the digit itself did not move"

            # The 2D latent map: a click on the map moves the point and redraws the digit.
            latent_map = page.locator(".labsupport-explorer", has=page.locator("img.labsupport-map")).first
            latent_map.scroll_into_view_if_needed()
            map_img, digit = latent_map.locator("img.labsupport-map"), latent_map.locator("img.labsupport-view")
            latent_map.screenshot(path=str(ARTIFACTS / "latent_map_before.png"))
            before = digit.screenshot()
            box = map_img.bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.3 * box["height"])
            t0, changed = time.time(), False
            while time.time() - t0 < 20 and not changed:
                page.wait_for_timeout(100)
                after = digit.screenshot()
                changed = bool(np.any(_pixels(after) != _pixels(before)))
            latent_map.screenshot(path=str(ARTIFACTS / "latent_map_after_click.png"))
            z1, z2 = (r.inner_text() for r in latent_map.locator(".widget-readout").all()[:2])
            print(f"after a click on the map: z1 = {z1}, z2 = {z2}; digit changed after {time.time() - t0:.2f} s")
            assert changed, f"clicking on the latent map did not change the decoded digit; see {ARTIFACTS}"
            assert float(z1.replace("\u2212", "-")) > 0.5 and float(z2.replace("\u2212", "-")) > 0.3, f"the click did not move the point to the upper right: z1 = {z1}, z2 = {z2}"

            text = page.locator(".jp-Notebook").inner_text()
            for bad in WIDGET_ERRORS:
                assert bad not in text, f"the notebook shows {bad!r} after the slider moved; see {ARTIFACTS}"
            for i, w in enumerate(page.locator(".labsupport-explorer").all()):
                w.scroll_into_view_if_needed()
                w.screenshot(path=str(ARTIFACTS / f"explorer_{i}.png"))
        finally:
            browser.close()
