"""The course website, built in fast mode from nbval's own run of the solutions and read in Chromium.

``make test`` executes every solution notebook once under nbval; ``conftest`` keeps those executions, so
the site here costs only Sphinx and the browser, not a second run of the notebooks. (Run alone, e.g.
``pytest tests/test_website.py``, the build executes the notebooks it was not given.) Every page is then
opened in Debian's Chromium through Playwright, served over HTTP as GitHub Pages would.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

from conftest import executed_solutions
from labsupport import course, website
from test_browser import CHROMIUM_ARGS, _chromium

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def solution_lines() -> dict[str, set[str]]:
    """Every line of every answer (code between the markers, model answers in markdown), by notebook."""
    lines: dict[str, set[str]] = {}
    for src in SOLUTIONS:
        found = lines.setdefault(src.stem, set())
        for cell in nbformat.read(src, as_version=4).cells:
            blocks = (re.findall(rf"{course.BEGIN}\n(.*?)\n\s*{course.END}", cell.source, re.S) if cell.cell_type == "code"
                      else [m[len("<!-- BEGIN SOLUTION -->"):-len("<!-- END SOLUTION -->")] for m in course.MD_SOLUTION.findall(cell.source)])
            found |= {line.strip() for block in blocks for line in block.splitlines() if len(line.strip()) > 3}
    return lines


@pytest.fixture(scope="module")
def site(tmp_path_factory, mnist_available):
    chromium = _chromium()
    html = website.build("fast", tmp_path_factory.mktemp("site"), given=executed_solutions(), quiet=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}", chromium
    server.shutdown()


@pytest.mark.after_notebooks
def test_every_page_renders_offline_with_its_figures_and_no_answer(site):
    from playwright.sync_api import sync_playwright

    html, base, chromium = site
    pages = ["index.html"] + [f"notebooks/{src.stem}.html" for src in SOLUTIONS]
    answers = solution_lines()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            for rel in pages:
                assert (html / rel).exists(), f"{rel} was not built"
                page = browser.new_page()
                errors, failed = [], []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(base) else None)
                page.goto(f"{base}/{rel}", wait_until="networkidle")
                page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=20_000)
                page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
                assert not errors, f"{rel}: JavaScript errors {errors}"
                assert not failed, f"{rel}: could not load {failed}"
                broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
                assert not broken, f"{rel}: images that did not load: {broken}"
                text = page.inner_text("article")
                prose = page.evaluate("() => { const a = document.querySelector('article').cloneNode(true);"
                                      " a.querySelectorAll('pre, .cell_output, mjx-container').forEach(e => e.remove()); return a.textContent; }")
                raw = re.findall(r".{0,40}(?:\$\$|\$\\[a-zA-Z]+|\\frac|\\mathbb).{0,40}", prose)
                assert not raw, f"{rel}: LaTeX left unrendered in the prose: {raw[:3]}"
                _links_resolve(html, rel, page.evaluate("() => [...document.querySelectorAll('article a[href]')].map(a => a.getAttribute('href'))"))
                if rel.startswith("notebooks/"):
                    name = Path(rel).stem
                    assert page.locator("mjx-container").count() > 0, f"{rel}: no rendered math"
                    nb = nbformat.read(html.parent / "pages" / "notebooks" / f"{name}.ipynb", as_version=4)
                    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
                    shown = page.locator("article img").count()
                    assert figures > 0 and shown >= figures, f"{rel}: {shown} images shown for {figures} figures"
                    code = "\n".join(page.locator("article div.highlight pre").all_inner_texts())
                    shown_lines = {line.strip() for line in code.splitlines()} | {line.strip() for line in text.splitlines()}
                    leaked = sorted(answers[name] & shown_lines)
                    assert not leaked, f"{rel} shows solution lines: {leaked[:5]}"
                    assert "NotImplementedError" in code, f"{rel}: the exercise stubs are missing"
                page.close()
        finally:
            browser.close()


def _links_resolve(html: Path, rel: str, hrefs: list[str]) -> None:
    """Every link inside the site points at a built file (and, with a #fragment, at an id on that page)."""
    for href in hrefs:
        url = urlparse(href)
        if url.scheme or href.startswith("mailto:"):
            continue
        target = (html / rel).parent / unquote(url.path) if url.path else html / rel
        target = target.resolve()
        assert target.is_file() or (target / "index.html").is_file(), f"{rel}: broken link {href}"
        if url.fragment and target.suffix == ".html":
            assert re.search(rf'id="{re.escape(url.fragment)}"', target.read_text()), f"{rel}: link {href} names no anchor there"


def test_a_page_hides_the_answers_and_says_how_to_run_an_explorer():
    sol = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T\nWhy?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("show()"),
    ])
    sol.cells[2].outputs = [nbformat.v4.new_output("display_data", data={website.WIDGET: {"model_id": "x"}, "image/png": "iVBOR"})]
    page = website.page(sol, "05_demo.ipynb", "https://github.com/o/r")
    text = nbformat.writes(page)
    assert "Because." not in text and "return 2 * x" not in text and "NotImplementedError" in text
    assert "colab.research.google.com/github/o/r/blob/main/notebooks/05_demo.ipynb" in page.cells[1].source
    assert page.cells[-1].source == website.STILL_NOTE
