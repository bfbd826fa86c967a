"""Build student notebooks from the solution notebooks, check they are in sync, run one and save its figures.

    python -m labsupport.course build            # solutions/*.ipynb -> notebooks/*.ipynb
    python -m labsupport.course check            # fails if notebooks/ is not what build would write
    python -m labsupport.course run NB [--out D] # execute a notebook, time its cells, save its figures

``solutions/`` is the source. In a code cell, the lines from ``### BEGIN SOLUTION`` to
``### END SOLUTION`` become one ``raise NotImplementedError(...)`` at the same indentation, keeping
the signature and the lines around them; the exercise is named after the cell's first ``def`` or
``class``. In a markdown cell, text between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``
becomes a prompt for the student's answer. A markdown cell headed ``## Written question N (graded by hand):
title`` (or ``(graded by hand, 2 points)``) is a written question: its model answer (a solution block in the
same cell) is replaced, in the student notebook, by an answer cell of its own that the grader collects for
the instructor to grade by hand. Outputs and execution counts are stripped from both
folders; each student notebook gets an "Open in Colab" badge and a first install cell that acts only
on Colab. Exercise ids and points go into the notebook metadata (for grading); a solution cell may
set ``{"labsupport": {"points": 2}}`` in its metadata (default 1 point). ``build`` also writes them
all to ``labsupport/exercises.json``, the list ``labsupport.grading`` grades against.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)
DEF = re.compile(r"^\s*(?:def|class)\s+([A-Za-z_]\w*)", re.M)
WRITTEN = re.compile(r"^#+\s*Written question (\d+) \(graded by hand(?:, (\d+(?:\.\d+)?) points?)?\):\s*(.+)$", re.M)
ANSWER_PROMPT = "*Write your answer here (double-click to edit).*"
KEEP_CELL_METADATA = ("tags", "labsupport")
EXERCISES = Path("labsupport") / "exercises.json"  # {notebook: [{"number", "id", "points"[, "stages"]} | {"kind": "written", ...}]}, written by build
# Partial credit: points a check awards per stage it passes (``labsupport.checks.stage(name)``) when it does not
# pass whole; the rest of the exercise's points need the whole check. Exercises not listed are all-or-nothing.
STAGE_POINTS = {
    "Generator": {"interface": 0.5, "gradients": 1.0},   # shapes, range, attributes, size; then every weight learns; then it fits
    "Discriminator": {"interface": 0.5, "gradients": 1.0},  # the same stages; then it learns to tell made-up digits from noise
    "ConditionalGenerator": {"interface": 0.5, "gradients": 1.0},  # shapes, range, label and noise used, size; every weight learns; then it fits
    "ConditionalDiscriminator": {"interface": 0.5, "gradients": 1.0},  # the same; then it tells matching from mismatched (image, label) pairs
    "ConvAutoencoder": {"interface": 0.5, "gradients": 1.0},  # shapes, k honoured, range, size; every weight learns, eval mode per image; then it trains
    "VAE": {"interface": 0.5, "gradients": 1.0},         # shapes, contract, ranges; then every weight learns; then it trains
    "kl_divergence": {"shape": 0.25, "values": 0.5},   # (B,) right; then the closed form's values; then its gradients
    "negative_elbo": {"shape": 0.25, "value": 0.5},    # a scalar; then its value; then gradients reaching every input
    "denoising_step": {"noise": 0.5, "step": 1.0},      # the model's input is x + fresh clipped noise; then one right step; then it denoises
    "VelocityMLP": {"interface": 0.5, "gradients": 1.0},  # shapes, x and t both used, size; every weight learns, output unsquashed; then it learns a flow
}


def repository_url(root: Path = ROOT) -> str:
    """The one repository setting: ``[project.urls] Repository`` in ``pyproject.toml``."""
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def _badge_cell(name: str, repo: str) -> nbformat.NotebookNode:
    path = repo.split("github.com/", 1)[-1]
    url = f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{name}"
    cell = nbformat.v4.new_markdown_cell(f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})")
    cell["id"] = "colab-badge"
    return cell


def _install_cell(repo: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(
        "# On Colab only: install the course's helper package. Elsewhere this cell does nothing.\n"
        "# --no-deps, then only what Colab lacks: Colab's own torch and torchvision are never replaced.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    get_ipython().run_line_magic(\"pip\", \"install -q --no-deps 'labsupport @ git+{repo}'\")\n"
        "    import importlib\n"
        "    importlib.invalidate_caches()\n"
        "    from labsupport.colab import install_missing\n"
        "    install_missing()\n"
        "    from google.colab import output\n"
        "    output.enable_custom_widget_manager()  # lets ipywidgets (the sliders) render on Colab"
    )
    cell["id"] = "colab-install"
    return cell


def _clean(cell: nbformat.NotebookNode) -> None:
    cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEEP_CELL_METADATA}
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    cell.pop("attachments", None) if cell["cell_type"] == "code" else None


def exercises(nb: nbformat.NotebookNode) -> list[dict]:
    """The exercises of a solution notebook, in order: ``[{"number", "id", "points", "cell"}]``."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell["cell_type"] == "code" and BEGIN in cell["source"]:
            m = DEF.search(cell["source"])
            if not m:
                raise ValueError(f"cell {i}: a solution block needs a `def` or `class` in its cell to name the exercise")
            points = cell.get("metadata", {}).get("labsupport", {}).get("points", 1)
            found.append({"number": len(found) + 1, "id": m.group(1), "points": points, "cell": i})
    return found


def written_questions(nb: nbformat.NotebookNode) -> list[dict]:
    """The written questions of a solution notebook: ``[{"id", "kind": "written", "number", "title", "points", "cell"}]``."""
    found = []
    for i, cell in enumerate(nb.cells):
        m = WRITTEN.search(cell["source"]) if cell["cell_type"] == "markdown" else None
        if m:
            if not MD_SOLUTION.search(cell["source"]):
                raise ValueError(f"cell {i}: written question {m.group(1)} needs its model answer in <!-- BEGIN SOLUTION --> ... <!-- END SOLUTION -->")
            points = float(m.group(2)) if m.group(2) else 1.0
            found.append({"id": f"written_{m.group(1)}", "kind": "written", "number": int(m.group(1)), "title": m.group(3).strip(),
                          "points": int(points) if points.is_integer() else points, "cell": i})
    if len({q["id"] for q in found}) < len(found):
        raise ValueError("two written questions share a number")
    return found


def _blank_answer(q: dict) -> str:
    return f"**Your answer to written question {q['number']}** ({q['points']:g} point{'s' if q['points'] != 1 else ''}, graded by hand):\n\n{ANSWER_PROMPT}"


def _stub(source: str, number: int, name: str) -> str:
    out, inside = [], False
    for line in source.split("\n"):
        if line.strip() == BEGIN:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise {number} ({name}): your code goes here. Read the hint above, then run the check below.")')
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"exercise {name}: `{BEGIN}` without `{END}`")
    return "\n".join(out)


def _metadata(nb: nbformat.NotebookNode, name: str, found: list[dict], written: list[dict]) -> None:
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "labsupport": {
            "notebook": Path(name).stem,
            "exercises": [{k: e[k] for k in ("number", "id", "points")} for e in found],
            **({"written": [{k: q[k] for k in ("number", "id", "title", "points")} for q in written]} if written else {}),
        },
    }


def hide_answers(sol: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of solution notebook ``sol`` (outputs kept, if any) as the student sees it: every solution block
    replaced by its stub, every model answer by a prompt, an answer cell under each written question."""
    found, written = exercises(sol), written_questions(sol)
    student = nbformat.from_dict(json.loads(json.dumps(sol)))
    for e in found:
        cell = student.cells[e["cell"]]
        cell["source"] = _stub(cell["source"], e["number"], e["id"])
        cell["metadata"]["labsupport"] = {"exercise": e["id"], "points": e["points"]}
    for q in reversed(written):  # the question stays, the model answer goes; the student answers in a cell of its own
        cell = student.cells[q["cell"]]
        cell["source"] = MD_SOLUTION.sub("", cell["source"]).rstrip()
        cell["metadata"].pop("labsupport", None)
        answer = nbformat.v4.new_markdown_cell(_blank_answer(q))
        answer["id"] = f"{q['id']}-answer"
        answer["metadata"] = {"labsupport": {"written": q["id"], "points": q["points"]}}
        student.cells.insert(q["cell"] + 1, answer)
    for cell in student.cells:
        if cell["cell_type"] == "markdown":
            cell["source"] = MD_SOLUTION.sub(ANSWER_PROMPT, cell["source"])
            if BEGIN in cell["source"]:
                raise ValueError(f"{name}: use <!-- BEGIN SOLUTION --> ... <!-- END SOLUTION --> in markdown cells")
    return student


def build_pair(src: Path) -> tuple[str, str]:
    """Return (clean solution notebook, student notebook) as the exact text ``build`` writes."""
    sol = nbformat.read(src, as_version=4)
    found, written = exercises(sol), written_questions(sol)
    for cell in sol.cells:
        _clean(cell)
    for q in written:  # the model answer is the solution's answer to the question
        sol.cells[q["cell"]]["metadata"]["labsupport"] = {"written": q["id"], "points": q["points"]}
    _metadata(sol, src.name, found, written)
    student = hide_answers(sol, src.name)
    repo = repository_url()
    first_md = next((i for i, c in enumerate(student.cells) if c["cell_type"] == "markdown"), -1)
    student.cells.insert(first_md + 1, _install_cell(repo))
    student.cells.insert(0, _badge_cell(src.name, repo))
    return nbformat.writes(sol), nbformat.writes(student)


def _targets(root: Path) -> dict[Path, str]:
    files, manifest = {}, {}
    for src in sorted((root / "solutions").glob("*.ipynb")):
        sol, student = build_pair(src)
        files[root / "solutions" / src.name] = sol + "\n"
        files[root / "notebooks" / src.name] = student + "\n"
        manifest[src.stem] = [{**e, **({"stages": STAGE_POINTS[e["id"]]} if e["id"] in STAGE_POINTS else {})}
                              for e in json.loads(sol)["metadata"]["labsupport"]["exercises"]]
        # "blank": the answer cell as built, so the grader can tell an answer from an untouched cell
        manifest[src.stem] += [{"kind": "written", **q, "blank": _blank_answer(q)} for q in json.loads(sol)["metadata"]["labsupport"].get("written", [])]
        for e in manifest[src.stem]:
            if "stages" in e and sum(e["stages"].values()) >= e["points"]:
                raise ValueError(f"{e['id']}: its stages award {sum(e['stages'].values())} of {e['points']} points; the whole check must earn the rest")
    # The grader's source of truth for exercise ids and points (shipped in the package; a submission's own metadata is not trusted).
    files[root / EXERCISES] = json.dumps(manifest, indent=1) + "\n"
    return files


def build(root: Path = ROOT) -> list[Path]:
    """Write clean solutions and student notebooks; remove student notebooks with no solution."""
    files = _targets(root)
    (root / "notebooks").mkdir(exist_ok=True)
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for stale in (root / "notebooks").glob("*.ipynb"):
        if stale not in files:
            stale.unlink()
    return sorted(files)


def check(root: Path = ROOT) -> list[str]:
    """Differences between the repository and what ``build`` would write (empty when in sync)."""
    files = _targets(root)
    problems = [f"{p.relative_to(root)} is out of date" for p, t in files.items() if not p.exists() or p.read_text() != t]
    problems += [f"{p.relative_to(root)} has no source in solutions/" for p in (root / "notebooks").glob("*.ipynb") if p not in files]
    return problems


def execute(path: Path, timeout: int = 1800, env: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, str | None]:
    """Execute a notebook in a fresh kernel (cwd = its folder): ``(notebook with outputs, error or None)``.

    ``env``: the kernel's environment (e.g. :func:`labsupport.config.environment`; default: this process's).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(**({"env": env} if env is not None else {}))
    except Exception as err:  # report and still keep what ran
        return nb, f"{type(err).__name__}: {str(err)[-2000:]}"
    return nb, None


def run(path: Path, out: Path | None = None, timeout: int = 1800, env: dict[str, str] | None = None) -> dict:
    """Execute a notebook (:func:`execute`); return its time, save its PNG outputs and the executed notebook to ``out``."""
    start = time.perf_counter()
    nb, error = execute(path, timeout, env)
    seconds = time.perf_counter() - start
    figures = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for i, cell in enumerate(nb.cells):
            for j, o in enumerate(cell.get("outputs", [])):
                png = o.get("data", {}).get("image/png")
                if png:
                    f = out / f"{path.stem}_cell{i:02d}_{j}.png"
                    f.write_bytes(base64.b64decode(png))
                    figures.append(str(f))
        nbformat.write(nb, out / path.name)
    return {"notebook": str(path), "seconds": round(seconds, 1), "error": error, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labsupport.course", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="write notebooks/ from solutions/")
    sub.add_parser("check", help="fail if notebooks/ is out of sync with solutions/")
    r = sub.add_parser("run", help="execute notebooks, print wall times, save figures")
    r.add_argument("notebooks", nargs="+", type=Path)
    r.add_argument("--out", type=Path, default=None, help="folder for the executed notebook and its PNG figures")
    args = p.parse_args(argv)
    if args.cmd == "build":
        for f in build():
            print(f"wrote {f.relative_to(ROOT)}")
        return 0
    if args.cmd == "check":
        problems = check()
        if problems:
            print("\n".join(problems) + "\nRun `python -m labsupport.course build` and commit the result.", file=sys.stderr)
            return 1
        print("notebooks/ is in sync with solutions/")
        return 0
    status = 0
    for nb in args.notebooks:
        res = run(nb, args.out)
        print(f"{res['notebook']}: {res['seconds']} s, {len(res['figures'])} figures" + (f"\n  ERROR {res['error']}" if res["error"] else ""))
        status |= res["error"] is not None
    return status


if __name__ == "__main__":
    sys.exit(main())
