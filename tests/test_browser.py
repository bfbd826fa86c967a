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

from labsupport import config

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
        if config.require_browser():
            pytest.fail(f"LABSUPPORT_REQUIRE_BROWSER=1 but {problem}: the browser test cannot run")
        pytest.skip(problem)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def jupyterlab(tmp_path, mnist_available):
    """A running JupyterLab serving a copy of the explorer notebook; yields (url, token, chromium). Always stopped."""
    chromium = _chromium()  # skip or fail before starting anything
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
        yield url, token, chromium
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


def _wait_for_new_pixels(image, before: bytes, timeout_s: float = 20) -> tuple[bytes, float]:
    """Screenshot ``image`` until its pixels differ from ``before``; returns (last screenshot, seconds waited)."""
    t0, after = time.time(), before
    while time.time() - t0 < timeout_s:
        after = image.screenshot()
        if _pixels(after).shape != _pixels(before).shape or np.any(_pixels(after) != _pixels(before)):
            break
        time.sleep(0.05)
    return after, time.time() - t0


def _number(readout: str) -> float:
    return float(readout.replace("\u2212", "-"))  # ipywidgets writes a typographic minus


def test_explorers_redraw_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    url, token, chromium = jupyterlab
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
            # The last code cell shows the conditional GAN's explorer (its title names G(z, y)); then the kernel goes idle.
            page.locator(".labsupport-explorer", has_text="G(z, y)").first.wait_for(timeout=300_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
            print(f"\nall cells ran in the browser in {time.time() - start:.1f} s")
            page.screenshot(path=str(ARTIFACTS / "notebook_end.png"))
            text = page.locator(".jp-Notebook").inner_text()
            for bad in WIDGET_ERRORS + ["Traceback (most recent call last)"]:
                assert bad not in text, f"the notebook shows {bad!r}; see {ARTIFACTS}"
            assert page.locator(".labsupport-explorer").count() >= 4, "the notebook's explorers are not all on the page"

            # 1. VAE sliders: 30 presses of the right arrow on the first slider's handle.
            explorer = page.locator(".labsupport-explorer").first
            explorer.scroll_into_view_if_needed()
            view = explorer.locator("img.labsupport-view")
            view.wait_for(state="visible")
            explorer.screenshot(path=str(ARTIFACTS / "vae_explorer_before.png"))
            before = view.screenshot(path=str(ARTIFACTS / "digit_before.png"))
            explorer.locator(".widget-slider .noUi-handle").first.focus()
            for _ in range(30):  # 30 steps of 0.05: the busiest latent dimension moves by 1.5
                page.keyboard.press("ArrowRight")
            after, waited = _wait_for_new_pixels(view, before)
            (ARTIFACTS / "digit_after.png").write_bytes(after)
            explorer.screenshot(path=str(ARTIFACTS / "vae_explorer_after.png"))
            value = explorer.locator(".widget-readout").first.inner_text()
            diff = np.abs(_pixels(after) - _pixels(before)) if _pixels(after).shape == _pixels(before).shape else np.ones(1)
            print(f"VAE slider: readout {value}; the digit changed {waited:.2f} s after the key presses; "
                  f"{100 * (diff > 0).mean():.1f}% of its pixels changed (mean change {diff.mean():.1f}/255)")
            assert _number(value) > 1.0, f"the arrow keys did not move the slider (readout {value})"
            assert (diff > 0).mean() > 0.01, f"moving the slider (readout {value}) did not change the digit on screen; see {ARTIFACTS}"

            # 2. The 2D latent map: a click in its upper right moves the point there and redraws the digit.
            latent_map = page.locator(".labsupport-explorer", has=page.locator("img.labsupport-map")).first
            latent_map.scroll_into_view_if_needed()
            map_img, digit = latent_map.locator("img.labsupport-map"), latent_map.locator("img.labsupport-view")
            latent_map.screenshot(path=str(ARTIFACTS / "latent_map_before.png"))
            before = digit.screenshot()
            box = map_img.bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.3 * box["height"])
            after, waited = _wait_for_new_pixels(digit, before)
            latent_map.screenshot(path=str(ARTIFACTS / "latent_map_after_click.png"))
            z1, z2 = (r.inner_text() for r in latent_map.locator(".widget-readout").all()[:2])
            print(f"latent map: after a click z1 = {z1}, z2 = {z2}; the digit changed {waited:.2f} s after the click")
            assert _number(z1) > 0.5 and _number(z2) > 0.3, f"the click did not move the point to the upper right: z1 = {z1}, z2 = {z2}"
            assert np.any(_pixels(after) != _pixels(before)), f"clicking on the latent map did not change the decoded digit; see {ARTIFACTS}"

            # 3. Conditional GAN: picking another digit redraws G(z, y).
            cgan = page.locator(".labsupport-explorer", has_text="G(z, y)").first
            cgan.scroll_into_view_if_needed()
            digit = cgan.locator("img.labsupport-view")
            before = digit.screenshot()
            cgan.get_by_role("button", name="7", exact=True).click()
            after, waited = _wait_for_new_pixels(digit, before)
            cgan.screenshot(path=str(ARTIFACTS / "cgan_explorer_digit7.png"))
            print(f"cGAN: the image changed {waited:.2f} s after clicking digit 7")
            assert np.any(_pixels(after) != _pixels(before)), f"picking digit 7 did not change the generated image; see {ARTIFACTS}"

            text = page.locator(".jp-Notebook").inner_text()
            for bad in WIDGET_ERRORS:
                assert bad not in text, f"the notebook shows {bad!r} after the explorers were used; see {ARTIFACTS}"
            for i, w in enumerate(page.locator(".labsupport-explorer").all()):
                w.scroll_into_view_if_needed()
                w.screenshot(path=str(ARTIFACTS / f"explorer_{i}.png"))
        finally:
            browser.close()


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    monkeypatch.setenv("LABSUPPORT_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="LABSUPPORT_REQUIRE_BROWSER=1 but Debian's chromium is not installed"):
        _chromium()
    monkeypatch.delenv("LABSUPPORT_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        _chromium()
