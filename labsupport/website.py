"""The course as a static website: every notebook executed, shown as the student sees it, answers hidden.

    python -m labsupport.website                  # normal mode -> site/_build/html (what is published)
    python -m labsupport.website --mode fast      # the quick build the tests use

Each solution notebook is executed once in the chosen mode (``course.execute``) and cached by
jupyter-cache in ``site/_cache/<mode>`` under the hash of its code cells: a rebuild re-executes only
the notebooks whose code changed (``--clear`` forgets them all, e.g. after a change in ``labsupport``).
``course.hide_answers`` then turns the executed solution into the student's view: every exercise cell
shows its stub and hint next to the outputs the correct answer produced, model answers become prompts.
Sphinx with MyST-NB renders those pages (``site/conf.py``: offline MathJax, no execution of its own);
explorers show a still of their first picture. The landing page reuses README.md's introduction,
course table and measured results, so the site and the README cannot disagree.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

from . import config, course

ROOT = course.ROOT
SITE = ROOT / "site"
WIDGET = "application/vnd.jupyter.widget-view+json"
STILL_NOTE = ("*This is an interactive explorer; the page shows a still of its first picture. "
              "Open the notebook in Colab (badge above) or run `make lab` to move its controls.*")


def executed(src: Path, mode: str, cache_dir: Path, given: nbformat.NotebookNode | None = None) -> tuple[nbformat.NotebookNode, str]:
    """``src`` with its outputs, from the cache, else from ``given`` (an execution already made, e.g. by the
    tests' nbval run), else executed now in ``mode``; ``(notebook, "cached" | "given" | "executed in N s")``."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_dir)
    nb = nbformat.read(src, as_version=4)
    try:
        return cache.merge_match_into_notebook(nb)[1], "cached"
    except KeyError:
        pass
    if given is not None:
        how = "given"
        run = given
    else:
        start = time.perf_counter()
        run, error = course.execute(src, env=config.environment(mode=mode))
        if error:
            raise RuntimeError(f"{src.name} failed in {mode} mode: {error}")
        how = f"executed in {time.perf_counter() - start:.0f} s"
    # Cache the source with the run's outputs (not the run itself, whose cell metadata carry timings and would
    # change the hash), so that it matches the unexecuted notebook next time.
    done = nbformat.from_dict(json.loads(json.dumps(nb)))
    ran = [c for c in run.cells if c.cell_type == "code"]
    for cell, r in zip((c for c in done.cells if c.cell_type == "code"), ran, strict=True):
        cell.outputs, cell.execution_count = r.get("outputs", []), r.get("execution_count")
    cache.cache_notebook_bundle(CacheBundleIn(done, str(src)), check_validity=False, overwrite=True)
    return cache.merge_match_into_notebook(nb)[1], how


def page(executed_solution: nbformat.NotebookNode, name: str, repo: str) -> nbformat.NotebookNode:
    """The published page of one notebook: the student's view of ``executed_solution``, with its links."""
    nb = course.hide_answers(executed_solution, name)
    for i in reversed(range(len(nb.cells))):
        cell = nb.cells[i]
        if cell.cell_type == "code" and any(WIDGET in o.get("data", {}) for o in cell.get("outputs", [])):
            nb.cells.insert(i + 1, nbformat.v4.new_markdown_cell(STILL_NOTE))
    path = repo.split("github.com/", 1)[-1]
    links = (f"**[Open in Colab](https://colab.research.google.com/github/{path}/blob/main/notebooks/{name})** · "
             f"[download the notebook](https://raw.githubusercontent.com/{path}/main/notebooks/{name}) · "
             f"[the notebook in the repository]({repo}/blob/main/notebooks/{name})")
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(links))
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = 4  # cell ids dropped: pages are generated, never edited
    return nb


def _first_figure(nb: nbformat.NotebookNode) -> bytes | None:
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "image/png" in o.get("data", {}) and WIDGET not in o.get("data", {}):
                return base64.b64decode(o["data"]["image/png"])
    return None


def _readme_section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text + "\n## ", re.S | re.M)
    if not m:
        raise ValueError(f"README.md has no section '## {heading}'")
    return m.group(1).strip()


def landing(pages: dict[str, nbformat.NotebookNode], figures: dict[str, str], readme: str) -> str:
    """``index.md``: the README's introduction, the map of notebooks with one picture each, how to run, results."""
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    rows = []
    for name, nb in pages.items():
        title = next((line[2:].strip() for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                      if line.startswith("# ")), name)
        picture = f"![first figure of {name}]({figures[name]})" if name in figures else ""
        rows.append(f"| [{title}](notebooks/{name}.ipynb) | {picture} |")
    toc = "\n".join(f"notebooks/{name}" for name in pages)
    return "\n\n".join([
        "# Deep Generative Modeling Lab", intro,
        "## The notebooks", "Every page below was executed by the site's build; exercise answers are hidden, "
        "what a correct answer produces is shown.",
        "| notebook | one of its figures |\n|---|---|\n" + "\n".join(rows),
        "## Run it yourself", _readme_section(readme, "The two commands"),
        "## The course", _readme_section(readme, "The course"),
        "## Measured results", _readme_section(readme, "Measured results"),
        f"```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toc}\n```",
    ]) + "\n"


def build(mode: str = "normal", out: Path | None = None, given: dict[str, nbformat.NotebookNode] | None = None,
          clear: bool = False, quiet: bool = False, only: list[str] | None = None) -> Path:
    """Build the site into ``out/html`` (default ``site/_build``); returns the folder holding ``index.html``.

    ``given``: executions already made (``{notebook stem: executed notebook}``), used where the cache misses;
    ``only``: these notebooks (stems) only, for a quick look while writing one.
    """
    from sphinx.cmd.build import build_main

    out = out or SITE / "_build"
    cache_dir = SITE / "_cache" / mode
    if clear:
        shutil.rmtree(cache_dir, ignore_errors=True)
    pages_dir = out / "pages"  # the generated sources Sphinx reads
    shutil.rmtree(pages_dir, ignore_errors=True)
    (pages_dir / "notebooks").mkdir(parents=True)
    (pages_dir / "figures").mkdir()
    repo = course.repository_url()
    pages, figures = {}, {}
    for src in sorted((ROOT / "solutions").glob("*.ipynb")):
        if only and src.stem not in only:
            continue
        nb, how = executed(src, mode, cache_dir, (given or {}).get(src.stem))
        if not quiet:
            print(f"{src.stem}: {how}", flush=True)
        pages[src.stem] = page(nb, src.name, repo)
        nbformat.write(pages[src.stem], pages_dir / "notebooks" / src.name)
        png = _first_figure(nb)
        if png:
            (pages_dir / "figures" / f"{src.stem}.png").write_bytes(png)
            figures[src.stem] = f"figures/{src.stem}.png"
    (pages_dir / "index.md").write_text(landing(pages, figures, (ROOT / "README.md").read_text()))
    html = out / "html"
    args = ["-b", "html", "-c", str(SITE), "-W", "--keep-going", "-q", str(pages_dir), str(html)]
    if build_main(args) != 0:
        raise RuntimeError("sphinx-build reported warnings or errors (above)")
    return html


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labsupport.website", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("normal", "fast"), default="normal", help="how the notebooks are executed (default: normal)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: site/_build)")
    p.add_argument("--clear", action="store_true", help="forget the cached executions of this mode first")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="build these notebooks only (stems), for a quick look")
    args = p.parse_args(argv)
    start = time.perf_counter()
    html = build(args.mode, args.out, clear=args.clear, only=args.only)
    print(f"built {html / 'index.html'} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
