"""Grade completed student notebooks: run each in a fresh kernel, then check its exercises in a clean process.

    labsupport-grade SUBMISSIONS... --out DIR [--assignment NAME] [--jobs N] [--memory-limit MB]
    labsupport-grade --self NOTEBOOK                       # a student's check before submitting
    labsupport-grade gradescope ASSIGNMENT --out autograder.zip
    labsupport-grade gradebook RUN_DIR... --out gradebook.csv
    python -m labsupport.grading SUBMISSIONS... --out DIR

A submission is a notebook file, or a folder holding one student's notebooks (the folder name is the
student); a folder holding only folders is a class, one student per folder. For each notebook:

1. Which assignment it answers comes from its metadata (``metadata.labsupport.notebook``, written by
   ``python -m labsupport.course build``); its exercise ids, points and partial-credit stages come from
   the course's own list, ``labsupport/exercises.json``, never from the submission.
2. A copy runs in a fresh kernel in a temporary folder, in grading mode unless ``--mode``, with a
   time limit per cell and per notebook and a memory limit (``RLIMIT_DATA``); errors do not stop it,
   huge outputs are cut. Right after each cell that defines an exercise or calls its check, the kernel
   saves the exercise's function (cloudpickle) to the temporary folder. Execution stops after the
   last such cell (``--run-all`` runs the rest too).
3. :mod:`labsupport.checking`, a new process started from an empty folder, imports
   ``labsupport.checks`` afresh and checks each saved function in its own forked child, which watches
   for the course's own answers and for patches, and signs its verdict with that exercise's key.
   Whatever the notebook did to its own ``check_*`` or ``CheckFailed``, and whatever the function
   writes to files, stdout or its exit code, cannot change the grade.

Writes ``DIR/grades.csv``, ``DIR/gradebook.csv``, ``DIR/grades.json`` (with every check message and
cell error, and an instructor-only similarity report), ``DIR/similarity.csv``,
``DIR/feedback/<student>.md`` and the executed notebooks in ``DIR/executed/``. The submissions
themselves are only read. This is not a security sandbox: see README.md, section "Grading".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from . import checking, config, gradescope, similarity

PACKAGE = Path(__file__).resolve().parent
EXERCISES = PACKAGE / "exercises.json"
MAX_FILE_BYTES = 100 * 2**20
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TIME_LIMIT = "TimeLimit"  # ename of the error the grader records when a cell runs out of time


@dataclass
class Settings:
    timeout: float = 900.0  # seconds per notebook (all cells together)
    cell_timeout: float = 300.0  # seconds per cell
    check_timeout: float = 60.0  # seconds per check
    mode: str = "grading"  # the course's mode in the kernel: "grading" (least training), "fast" or "normal"
    run_all: bool = False  # run the cells after the last exercise too
    max_output: int = 100_000  # characters of output kept per cell
    threads: int = 1  # LABSUPPORT_THREADS for the kernel and the checks
    memory_limit: int = 4096  # MB of data memory (RLIMIT_DATA: heap and private mappings) per kernel and per check


# --- which assignment, which exercises ----------------------------------------------------------


def load_exercises(path: Path = EXERCISES, kind: str = "code") -> dict[str, list[dict]]:
    """The course's exercises the checks grade, ``{notebook: [{"number", "id", "points"}]}`` (written by the build tool);
    ``kind="written"``: its written questions instead, ``[{"number", "id", "title", "points"}]``, graded by hand."""
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m labsupport.course build` in the course repository")
    return {nb: [e for e in listed if e.get("kind", "code") == kind] for nb, listed in json.loads(path.read_text()).items()}


def read_notebook(path: Path):
    """``(notebook, None)`` or ``(None, why it cannot be graded)``; never raises on a bad file."""
    import nbformat

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None, f"the file is larger than {MAX_FILE_BYTES >> 20} MB"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, f"the file cannot be read as text ({type(err).__name__}: {err})"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err}): the file is damaged or not a notebook"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        return None, "valid JSON but not a Jupyter notebook (no `cells` list or `nbformat` field)"
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises several types for broken notebooks
        return None, f"not a readable Jupyter notebook ({type(err).__name__}: {err})"
    cells = []
    for cell in nb.cells:  # rebuild plain cells: only the sources matter, stored outputs are dropped
        kind, source = cell.get("cell_type"), cell.get("source", "")
        if not isinstance(source, str):
            return None, "a cell's source is not text: the notebook is damaged"
        make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}.get(kind, nbformat.v4.new_raw_cell)
        cells.append(make(source))
    meta = nb.get("metadata", {}).get("labsupport", {})
    claimed = meta.get("notebook") if isinstance(meta, dict) else None
    on_cells = [(c.get("metadata") or {}).get("labsupport", {}) for c in nb.cells]
    clean = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}})
    clean.metadata["submitted"] = {  # only to tell which assignment this is; ids and points come from the course
        "notebook": claimed if isinstance(claimed, str) else None,
        "cell_exercises": [m.get("exercise") for m in on_cells if isinstance(m, dict) and isinstance(m.get("exercise"), str)],
        # the student's answers to the written questions, by question id (their points come from the course)
        "written": {m["written"]: c.get("source", "") for m, c in zip(on_cells, nb.cells) if isinstance(m, dict) and isinstance(m.get("written"), str)},
    }
    return clean, None


def identify(nb, exercises: dict[str, list[dict]], assignment: str | None) -> tuple[str | None, str | None]:
    """``(assignment the notebook answers, problem or None)``, from its metadata, not its file name."""
    claimed = nb.metadata["submitted"]["notebook"]
    if claimed is None:  # notebook metadata lost (e.g. cells pasted into a new notebook): match the exercise cells' ids
        ids = set(nb.metadata["submitted"]["cell_exercises"])
        matches = [name for name, ex in exercises.items() if ids and ids <= {e["id"] for e in ex}]
        claimed = matches[0] if len(matches) == 1 else None
    if assignment is not None:
        if claimed is not None and claimed != assignment:
            return assignment, f"wrong-assignment: this notebook is {claimed!r}, the assignment is {assignment!r}"
        return assignment, None
    if claimed is None:
        return None, "unknown-assignment: no course metadata (metadata.labsupport.notebook) in this notebook; grade it with --assignment NAME"
    if claimed not in exercises:
        return claimed, f"unknown-assignment: {claimed!r} is not a notebook of this course ({', '.join(exercises)})"
    return claimed, None


# --- running a submission -----------------------------------------------------------------------

# A kernel that fills its memory to within a few hundred kB of the limit can die while IPython formats the
# error or its threads answer the grader (measured: about one in five runs at under 1 MB of room; plain Python
# survives). So part of the limit is kept back in the kernel and handed back as soon as a cell runs out of memory.
RESERVE_MB = 64
RESERVE = f"""import sys as _s
_s._labsupport_reserve = bytearray({RESERVE_MB} * 2**20)

def _labsupport_out_of_memory(shell, etype, value, tb, tb_offset=None):
    if issubclass(etype, MemoryError) or "allocate memory" in str(value):
        _s._labsupport_reserve = None  # room for the traceback and the reply
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)

get_ipython().set_custom_exc((MemoryError, RuntimeError), _labsupport_out_of_memory)
del _labsupport_out_of_memory"""
RELEASE = ("import sys as _s, gc as _g\nfor _n in ('last_type', 'last_value', 'last_traceback', 'last_exc'):\n    setattr(_s, _n, None)\n"
           "_ip = get_ipython()\n_ip.InteractiveTB.tb = _ip.last_execution_result = None\n_g.collect()\n"  # IPython keeps the last error in both
           f"try:\n    _s._labsupport_reserve = bytearray({RESERVE_MB} * 2**20)  # for the next time\nexcept MemoryError:\n    pass")
EXPORT = '''
def __labsupport_export(names, folder):
    import os
    import cloudpickle
    for name in names:
        status = os.path.join(folder, name + ".status")
        if name not in globals():
            with open(status, "w") as f:
                f.write(f"`{name}` is not defined in the notebook")
            continue
        try:
            data = cloudpickle.dumps(globals()[name])
        except BaseException as err:
            with open(status, "w") as f:
                f.write(f"`{name}` could not be saved for grading ({type(err).__name__}: {err})"[:1000])
            continue
        with open(os.path.join(folder, name + ".part"), "wb") as f:
            f.write(data)
        os.replace(os.path.join(folder, name + ".part"), os.path.join(folder, name + ".pkl"))
        with open(status, "w") as f:
            f.write("ok")
__labsupport_export(%r, %r)
del __labsupport_export
'''


def _environment(s: Settings) -> dict[str, str]:
    """The kernel's and the checks' environment: fast mode, threads, and this very labsupport first on the path."""
    env = config.environment(mode=s.mode, threads=s.threads)
    env["MPLBACKEND"] = "agg"
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("JPY_SESSION_NAME", None)
    return env


def exports_after(source: str, ids: list[str]) -> list[str]:
    """The exercises to save after a code cell: those it defines (``def``/``class``/assignment/import) or whose check it calls."""
    return [name for name in ids
            if re.search(rf"^\s*(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=|\bcheck_{re.escape(name)}\s*\("
                         rf"|^\s*(?:from\s+\S+\s+)?import\s+[^#\n]*\b{re.escape(name)}\b", source, re.M)]


def _export_points(nb, ids: list[str]) -> dict[int, list[str]]:
    """Cell index -> exercises to save after it."""
    points = {i: exports_after(cell.source, ids) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"}
    return {i: names for i, names in points.items() if names}


def _client_class():
    from nbclient import NotebookClient

    class Client(NotebookClient):
        """Keeps at most ``max_output`` characters of output per cell (output bombs), records replies."""

        max_output = 100_000

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
            used = self._used.get(cell_index, 0)
            if msg["msg_type"] == "error":
                content["traceback"] = [t[:2000] for t in content.get("traceback", [])[-30:]]
            elif used + size > self.max_output:
                room = self.max_output - used
                self._dropped[cell_index] = self._dropped.get(cell_index, 0) + size - max(room, 0)
                if msg["msg_type"] != "stream" or room <= 0:
                    self._used[cell_index] = self.max_output
                    return None
                content["text"], size = content["text"][:room], room
            self._used[cell_index] = used + size
            return super().output(outs, msg, display_id, cell_index)

    return Client


async def _reply(client, msg_id: str, timeout: float) -> dict | None:
    """The kernel's reply to ``msg_id``, or None if it does not come within ``timeout`` seconds."""
    from queue import Empty

    from jupyter_core.utils import ensure_async

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ensure_async(client.kc.shell_channel.get_msg(timeout=left))
        except Empty:
            return None
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
    return None


async def _execute(nb, ids: list[str], work: Path, export: Path, s: Settings) -> dict:
    """Run ``nb`` in a fresh kernel with cwd ``work``; save exercise functions to ``export``."""
    import nbformat
    from jupyter_core.utils import ensure_async
    from nbclient.exceptions import DeadKernelError

    env = _environment(s)
    points = _export_points(nb, ids)
    last = max(points, default=-1)
    replies: dict[int, dict] = {}
    Client = _client_class()
    client = Client(
        nb, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True, shutdown_kernel="immediate",
        error_on_timeout={"ename": TIME_LIMIT, "evalue": "", "traceback": []}, record_timing=False, iopub_timeout=4,
        resources={"metadata": {"path": str(work)}},
        on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(cell_index, execute_reply["content"]),
    )
    client.max_output, client._used, client._dropped = s.max_output, {}, {}
    result = {"stopped": None, "timeouts": [], "ran": 0}
    deadline = time.monotonic() + s.timeout

    async def run_export(names: list[str]) -> bool:
        msg_id = await ensure_async(client.kc.execute(EXPORT % (names, str(export)), silent=True, store_history=False))
        return await _reply(client, msg_id, max(30.0, s.check_timeout)) is not None

    with open(work.parent / "kernel.log", "wb") as kernel_log:  # the kernel's own stderr (warnings), kept out of the terminal
        async with client.async_setup_kernel(env=env, stdout=kernel_log, stderr=kernel_log):
            if s.memory_limit > 0:  # before any cell: the kernel (and what it starts) may not hold more data than this
                limit = s.memory_limit * 2**20
                resource.prlimit(client.km.provisioner.process.pid, resource.RLIMIT_DATA, (limit, limit))
                probe = await ensure_async(client.kc.execute(RESERVE, silent=True, store_history=False))
                await _reply(client, probe, 30)
            pending = list(ids)
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                if i > last and not s.run_all:
                    break
                left = deadline - time.monotonic()
                if left < 1:
                    result["stopped"] = f"the notebook time limit ({s.timeout:g} s) was reached before cell {i + 1}; later cells did not run"
                    break
                limit = min(s.cell_timeout, left)
                client.timeout = max(1, int(limit))
                try:
                    await asyncio.wait_for(client.async_execute_cell(cell, i, execution_count=result["ran"] + 1), limit + 60)
                except DeadKernelError:
                    result["stopped"] = f"the kernel died in cell {i + 1} (it crashed, ran out of memory or the code exited); later cells did not run"
                    pending = []
                    break
                except asyncio.TimeoutError:
                    result["stopped"] = f"the kernel stopped responding in cell {i + 1}; later cells did not run"
                    pending = []
                    break
                result["ran"] += 1
                reply = replies.get(i, {})
                if reply.get("ename") == TIME_LIMIT:
                    which = "cell" if s.cell_timeout <= left else "notebook"
                    text = f"stopped after {client.timeout} s: the {which} time limit ({s.cell_timeout if which == 'cell' else s.timeout:g} s) was reached"
                    reply["evalue"] = text
                    cell.outputs.append(nbformat.v4.new_output("error", ename=TIME_LIMIT, evalue=text, traceback=[f"{TIME_LIMIT}: {text}"]))
                    result["timeouts"].append(i)
                    probe = await ensure_async(client.kc.execute("pass", silent=True, store_history=False))  # did the interrupt stop the code?
                    # a loop that swallows KeyboardInterrupt never answers; waiting longer than a cell may run gains nothing
                    if await _reply(client, probe, min(15.0, max(2.0, s.cell_timeout))) is None:
                        result["stopped"] = f"cell {i + 1} ran past its time limit and ignored the interrupt; later cells did not run"
                        pending = []
                        break
                if _memory_problem(reply.get("ename", "") + " " + reply.get("evalue", "")):
                    # the failed cell's frames (and what they hold) live on in sys.last_traceback; drop them so the
                    # cells after run with the memory back, instead of failing again or killing the kernel
                    probe = await ensure_async(client.kc.execute(RELEASE, silent=True, store_history=False))
                    await _reply(client, probe, 30)
                if client._dropped.get(i):
                    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=f"\n[the grader dropped {client._dropped[i]} characters of output from this cell]\n"))
                if i in points:
                    if not await run_export(points[i]):
                        pending = []
                        result["stopped"] = f"saving the exercises after cell {i + 1} did not finish; later cells did not run"
                        break
                    pending = [n for n in pending if n not in points[i]]
            if pending:
                await run_export(pending)
    result["errors"] = [
        {"cell": i + 1, "starts": nb.cells[i].source.strip().splitlines()[0][:80], "ename": r.get("ename", ""), "evalue": r.get("evalue", ""),
         "traceback": ANSI.sub("", "\n".join(r.get("traceback", [])))[-3000:]}
        for i, r in sorted(replies.items()) if r.get("status") == "error"
    ]
    result["timeouts"] = [i + 1 for i in result["timeouts"]]
    result["truncated"] = sorted(i + 1 for i in client._dropped)
    return result


def check_exports(export: Path, ids: list[str], s: Settings, scratch: Path) -> dict[str, dict]:
    """Run the course's checks on the functions saved in ``export`` (by :data:`EXPORT`) with
    :mod:`labsupport.checking`, started in ``scratch/empty``: every exercise in its own forked child, with
    its own time and memory limit and its own key. Only a verdict signed with that exercise's key counts;
    whatever else comes back (a forged line, an exit code, a timeout) earns nothing.
    Returns ``{id: {"passed", "message", "stages", "reference", "tampered", "memory", ...}}``."""
    env = _environment(s)
    (scratch / "empty").mkdir(parents=True, exist_ok=True)
    keys = {i: secrets.token_bytes(checking.KEY_BYTES) for i in ids}
    events: list[dict] = []
    with open(scratch / "checks.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "labsupport.checking", str(export.resolve()), str(s.memory_limit), str(s.check_timeout), *ids],
                                cwd=scratch / "empty", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        try:  # the server runs no student code; its limit covers importing torch and every child's own limit
            out, _ = proc.communicate(b"".join(keys[i] for i in ids), timeout=120 + len(ids) * (s.check_timeout + 15))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if isinstance(rec := json.loads(line), dict):
                events.append(rec)
    results: dict[str, dict] = {}
    for name in ids:
        done = [e for e in events if e.get("event") == "done" and e.get("id") == name]
        verdict, forged = None, False
        for e in done:
            for line in e.get("lines", []) if isinstance(e.get("lines"), list) else []:
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, TypeError):
                    forged = True
                    continue
                if checking.verify(keys[name], rec, name):
                    verdict = rec
                else:
                    forged = True
        if verdict is not None:
            results[name] = verdict
            continue
        last = done[-1] if done else None
        fail = {"id": name, "passed": False, "stages": [], "reference": [], "tampered": [], "memory": False, "forged": forged}
        if last is None:
            text = (scratch / "checks.log").read_text(errors="replace")[-2000:]
            results[name] = {**fail, "message": f"The grader could not run the checks: {text}", "grader_error": True}
        elif last.get("timeout"):
            results[name] = {**fail, "message": f"Checking `{name}` took longer than {s.check_timeout:g} s (an endless loop?)."}
        else:
            why = f"made the checking process exit (exit code {last.get('exit')})"
            if forged:
                why += " after writing a verdict the grader did not sign: forged results earn nothing"
            results[name] = {**fail, "message": f"Checking `{name}` {why}."}
    return results


def _memory_problem(text: str) -> bool:
    return "MemoryError" in text or "can't allocate memory" in text or "Cannot allocate memory" in text or "bad_alloc" in text


def score_exercise(e: dict, r: dict, memory_limit: int) -> tuple[float, str]:
    """``(score, message)`` of one exercise from its verified verdict ``r`` and its entry ``e`` in exercises.json."""
    message = r.get("message") or "not graded"
    if r.get("reference"):
        names = ", ".join(f"`{n}`" for n in r["reference"])
        return 0, (f"0 points: `{e['id']}` uses the course's own answer {names} instead of your own code. "
                   "Write it yourself; torch and the helpers the exercise names are fine.")
    if r.get("tampered"):
        return 0, f"0 points: while it was being checked, {'; '.join(r['tampered'])}. Grading code is not the exercise."
    if r.get("memory"):
        return 0, f"0 points: it ran out of memory while it was being checked (the limit is {memory_limit} MB). Last message: {message}"
    if r.get("passed"):
        return e["points"], message
    stages = e.get("stages", {})
    earned = [(k, v) for k, v in stages.items() if k in r.get("stages", [])]
    if not earned:
        return 0, message
    score = sum(v for _, v in earned)
    parts = ", ".join(f"{k} right (+{v:g})" for k, v in earned)
    return score, f"Partial credit {score:g} / {e['points']:g}: {parts}. The other {e['points'] - score:g} need the whole check to pass: {message}"


def written_answers(nb, questions: list[dict]) -> list[dict]:
    """The student's answers to ``questions`` (from exercises.json, kind "written"), for the instructor to grade by hand."""
    given = nb.metadata["submitted"]["written"] if nb is not None else {}
    rows = []
    for q in questions:
        text = given.get(q["id"])
        answered = text is not None and text.strip() != q["blank"].strip()
        rows.append({"number": q["number"], "id": q["id"], "title": q["title"], "points": q["points"], "answer": text if answered else "",
                     "status": "answered" if answered else ("not answered" if text is not None else "answer cell missing")})
    return rows


def grade_notebook(path: Path, student: str, exercises: dict[str, list[dict]], s: Settings,
                   assignment: str | None = None, executed_dir: Path | None = None, written: dict[str, list[dict]] | None = None) -> dict:
    """Grade one notebook file; every failure becomes a status and a message in the returned row.
    ``written`` (default: the course's) are the written questions, collected in ``row["written"]`` and never scored here."""
    start = time.perf_counter()
    written = load_exercises(kind="written") if written is None else written
    row = {"student": student, "file": str(path), "notebook": None, "status": [], "problems": [], "exercises": [],
           "cell_errors": [], "truncated_cells": [], "total": 0, "max": 0, "written": [], "by_hand": 0}
    nb, problem = read_notebook(path)
    if nb is None:
        row["status"].append("invalid")
        row["problems"].append(problem)
        row["notebook"] = assignment
    else:
        row["notebook"], problem = identify(nb, exercises, assignment)
        if problem:
            row["status"].append(problem.split(":")[0])
            row["problems"].append(problem.split(": ", 1)[1])
    graded = row["notebook"] if row["notebook"] in exercises and not row["status"] else None
    listed = exercises.get(graded or (assignment if assignment in exercises else ""), [])
    results: dict[str, dict] = {}
    if graded:
        ids = [e["id"] for e in listed]
        tmp = Path(tempfile.mkdtemp(prefix="labsupport-grade-"))
        try:
            work, export, scratch = tmp / "work", tmp / "export", tmp / "checks"
            for d in (work, export, scratch / "empty"):
                d.mkdir(parents=True)
            import nbformat

            nbformat.write(nb, work / path.name)  # the kernel's folder holds a copy, never the original
            try:
                ran = asyncio.run(_execute(nb, ids, work, export, s))
            except Exception as err:  # the kernel did not start, or nbclient failed: not the student's doing
                ran = {"stopped": None, "timeouts": [], "errors": [], "truncated": []}
                row["status"].append("grader-error")
                row["problems"].append(f"the notebook could not be run: {type(err).__name__}: {err}")
            row["cell_errors"] = [e for e in ran["errors"] if e["ename"] != TIME_LIMIT]
            out_of_memory = [e["cell"] for e in row["cell_errors"] if _memory_problem(e["ename"] + " " + e["evalue"])]
            log = (tmp / "kernel.log").read_text(errors="replace")[-20_000:] if (tmp / "kernel.log").exists() else ""
            if ran["stopped"] and "kernel died" in ran["stopped"] and _memory_problem(log):
                out_of_memory.append("the kernel")
            if out_of_memory:
                row["status"].append("memory")
                row["problems"].append(f"out of memory (the limit is {s.memory_limit} MB per kernel, --memory-limit) in cell(s) "
                                       f"{', '.join(map(str, out_of_memory))}; the exercises saved before still count")
            row["truncated_cells"] = ran["truncated"]
            if row["cell_errors"]:
                row["status"].append("cell-errors")
            if ran["timeouts"] or (ran["stopped"] and "time limit" in ran["stopped"]):
                row["status"].append("timeout")
                row["problems"] += [f"cell {i} was stopped: it ran past its time limit ({s.cell_timeout:g} s per cell, {s.timeout:g} s per notebook)" for i in ran["timeouts"]]
            if ran["stopped"]:
                if "kernel died" in ran["stopped"]:
                    row["status"].append("kernel-died")
                row["problems"].append(ran["stopped"])
            if ran["truncated"]:
                row["status"].append("output-truncated")
                row["problems"].append(f"output was cut to {s.max_output} characters in cell(s) {', '.join(map(str, ran['truncated']))}")
            if executed_dir is not None:
                executed_dir.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, executed_dir / f"{_safe(student)}__{_safe(path.stem)}.ipynb")
            results = check_exports(export, ids, s, scratch)
            if any(r.get("grader_error") for r in results.values()):
                row["status"].append("grader-error")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only the grader's own temporary folder
    for e in listed:
        r = results.get(e["id"], {})
        if not r.get("message"):
            r = {**r, "message": "not graded: " + "; ".join(row["problems"]) if row["problems"] else "not graded"}
        score, message = score_exercise(e, r, s.memory_limit)
        row["exercises"].append({"number": e["number"], "id": e["id"], "points": e["points"], "score": score,
                                 "passed": score == e["points"], "message": message})
        if r.get("memory"):
            row["status"].append("memory")
    row["total"] = sum(e["score"] for e in row["exercises"])
    row["max"] = sum(e["points"] for e in listed)
    row["written"] = written_answers(nb, written.get(graded or "", []))
    row["by_hand"] = sum(q["points"] for q in row["written"])  # points the instructor still gives, on top of max
    row["status"] = ";".join(dict.fromkeys(row["status"])) or "ok"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _grade_safely(path: Path, student: str, exercises: dict[str, list[dict]], s: Settings, assignment: str | None, executed: Path) -> dict:
    """A bug in the grader costs one row (status grader-error), not the class's run."""
    try:
        return grade_notebook(path, student, exercises, s, assignment, executed)
    except Exception as err:
        import traceback

        return {"student": student, "file": str(path), "notebook": assignment, "status": "grader-error", "exercises": [], "cell_errors": [],
                "truncated_cells": [], "total": 0, "max": 0, "written": [], "by_hand": 0, "seconds": 0.0,
                "problems": [f"the grader failed: {type(err).__name__}: {err}", traceback.format_exc()[-2000:]]}


# --- collecting submissions and writing the reports ---------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "student"


def _student_folder(p: Path) -> list[tuple[str, Path]]:
    files = sorted(f for f in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
    if not files:
        print(f"warning: {p} holds no .ipynb file", file=sys.stderr)
    return [(p.resolve().name, f) for f in files]


def find_submissions(paths: list[Path], exercises: dict[str, list[dict]]) -> list[tuple[str, Path]]:
    """``[(student, notebook file)]``: a folder is one student's notebooks (a folder holding only folders is a
    class: one student per subfolder); a file is named after its stem, or after its folder when the file
    keeps a course notebook's name (``alice/03_variational_autoencoders.ipynb`` is alice's)."""
    found = []
    for p in paths:
        if p.is_dir() and not any(p.glob("*.ipynb")) and any(d.is_dir() and not d.name.startswith(".") for d in p.iterdir()):
            found += [x for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") for x in _student_folder(d)]
        elif p.is_dir():
            found += _student_folder(p)
        elif p.is_file():
            found.append((p.resolve().parent.name if p.stem in exercises else p.stem, p))
        else:
            raise SystemExit(f"{p}: no such file or folder")
    return found


def write_reports(rows: list[dict], out: Path, exercises: dict[str, list[dict]], s: Settings, similar: list[dict] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(r["notebook"] for r in rows if r["notebook"] in exercises))
    columns = [(nb, e["id"], e["id"] if len(names) == 1 else f"{nb}:{e['id']}") for nb in names for e in exercises[nb]]
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook"] + [c[2] for c in columns] + ["total", "max", "by_hand", "status"])
        for r in rows:
            scores = {(r["notebook"], e["id"]): e["score"] for e in r["exercises"]}
            w.writerow([r["student"], r["notebook"] or ""] + [scores.get(c[:2], "") for c in columns] + [r["total"], r["max"], r.get("by_hand", 0), r["status"]])
    report = {"settings": asdict(s), "exercises": {nb: exercises[nb] for nb in names}, "submissions": rows,
              # Never copied into feedback/ or a Gradescope result: a pointer for the instructor, not a verdict.
              "instructor_only": {"similarity": similar or [], "note": f"flagged: similarity >= {similarity.FLAG} over at least "
                                  f"{similarity.MIN_TOKENS} normalised tokens; read both answers before concluding anything"}}
    (out / "grades.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    with open(out / "similarity.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["notebook", "exercise", "a", "b", "similarity", "tokens", "flagged"])
        for r in similar or []:
            w.writerow([r[k] for k in ("notebook", "exercise", "a", "b", "similarity", "tokens", "flagged")])
    write_gradebook(rows, out / "gradebook.csv", exercises)
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    by_student: dict[str, list[dict]] = {}
    for r in rows:
        by_student.setdefault(_safe(r["student"]), []).append(r)
    for student, mine in by_student.items():
        (feedback / f"{student}.md").write_text(_feedback(mine[0]["student"], mine))
    write_written(rows, out / "written")


def write_written(rows: list[dict], folder: Path) -> None:
    """``folder/<notebook>.md``: every student's answer to each written question, side by side, to grade by hand."""
    names = list(dict.fromkeys(r["notebook"] for r in rows if r.get("written")))
    if names:
        folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        mine = [r for r in rows if r["notebook"] == name and r.get("written")]
        lines = [f"# {name}: written questions, to grade by hand", "",
                 "The model answers are in the solution notebook. These points are not in grades.csv's `total`; its `by_hand` column says how many are left to give.", ""]
        for q in mine[0]["written"]:
            lines += [f"## Written question {q['number']} ({q['points']:g} points): {q['title']}", ""]
            for r in mine:
                a = next(x for x in r["written"] if x["id"] == q["id"])
                lines += [f"### {r['student']} ({Path(r['file']).name})", "", a["answer"].strip() if a["answer"] else f"*({a['status']})*", ""]
        (folder / f"{_safe(name)}.md").write_text("\n".join(lines).rstrip() + "\n")


def write_gradebook(rows: list[dict], path: Path, exercises: dict[str, list[dict]]) -> None:
    """The LMS export: one row per student, one column per assignment (its total), then their sum."""
    names = [n for n in exercises if any(r["notebook"] == n for r in rows)]
    book: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["notebook"] in exercises:  # two notebooks of one assignment from one student: the better counts
            mine = book.setdefault(r["student"], {})
            mine[r["notebook"]] = max(mine.get(r["notebook"], 0), r["total"])
        else:
            book.setdefault(r["student"], {})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student"] + [f"{n} ({sum(e['points'] for e in exercises[n]):g} points)" for n in names] + ["total"])
        for student in sorted(book):
            w.writerow([student] + [book[student].get(n, 0) for n in names] + [sum(book[student].values())])


def merge_gradebook(folders: list[Path], path: Path) -> Path:
    """One gradebook CSV from several grading runs' ``grades.json`` (e.g. one run per assignment)."""
    rows = []
    for folder in folders:
        report = folder / "grades.json" if folder.is_dir() else folder
        if not report.exists():
            raise SystemExit(f"{report}: no grades.json here (give the --out folders of earlier grading runs)")
        rows += json.loads(report.read_text())["submissions"]
    write_gradebook(rows, path, load_exercises())
    return path


def _sources(nb, ids: list[str]) -> dict[str, str | None]:
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return {i: similarity.function_source(cells, i) for i in ids}


def similarity_report(rows: list[dict], exercises: dict[str, list[dict]]) -> list[dict]:
    """Similarity of every graded answer to every other of its exercise and to the published solution (solutions/)."""
    submissions, solutions = [], {}
    for r in rows:
        if r["notebook"] not in exercises:
            continue
        nb, _ = read_notebook(Path(r["file"]))
        if nb is not None:
            submissions.append((r["student"], r["notebook"], _sources(nb, [e["id"] for e in exercises[r["notebook"]]])))
    for name in {n for _, n, _ in submissions}:
        path = PACKAGE.parent / "solutions" / f"{name}.ipynb"  # in a course checkout; an installed package has none
        nb, _ = read_notebook(path) if path.exists() else (None, None)
        if nb is not None:
            solutions[name] = _sources(nb, [e["id"] for e in exercises[name]])
    return similarity.report(submissions, solutions)


def _feedback(student: str, rows: list[dict]) -> str:
    lines = [f"# Feedback for {student}", ""]
    for r in rows:
        lines += [f"## {r['notebook'] or Path(r['file']).name}: {r['total']:g} / {r['max']:g} points", "", f"File: `{Path(r['file']).name}`", ""]
        if r["problems"]:
            lines += ["**Problems while grading:**", ""] + [f"- {p}" for p in r["problems"]] + [""]
        if r["exercises"]:
            lines += ["| exercise | points | result |", "|---|---|---|"]
            for e in r["exercises"]:
                lines.append(f"| {e['number']}. `{e['id']}` | {e['score']:g} / {e['points']:g} | {'passed' if e['passed'] else 'not passed'} |")
            lines.append("")
            for e in r["exercises"]:
                if not e["passed"]:
                    lines += [f"### Exercise {e['number']} (`{e['id']}`)", "", "```text", e["message"].strip(), "```", ""]
        if r.get("written"):
            lines += [f"**Written questions** ({r['by_hand']:g} points more, graded by hand by your instructor, not in the total above):", ""]
            lines += [f"- Written question {q['number']} ({q['points']:g} points), {q['title']}: {q['status']}" for q in r["written"]] + [""]
        if r["cell_errors"]:
            lines += ["### Cells that raised an error", "", "(Cells are counted from 1 at the top of the notebook, text cells included.)", ""]
            for c in r["cell_errors"]:
                lines += [f"Cell {c['cell']} (it starts with `{c['starts']}`): **{c['ename']}**: {c['evalue'][:300]}", "", "```text", c["traceback"][-1500:].strip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def grade(paths: list[Path], out: Path, s: Settings, jobs: int = 1, assignment: str | None = None,
          progress: bool = True, similar: bool = True) -> list[dict]:
    """Grade every submission under ``paths`` into ``out``; returns the rows (also in grades.json)."""
    from tqdm.auto import tqdm

    exercises = load_exercises()
    if assignment is not None and assignment not in exercises:
        raise SystemExit(f"--assignment {assignment!r} is not a notebook of this course ({', '.join(exercises)})")
    out = out.resolve()
    for p in paths:
        if p.is_dir() and (out == p.resolve() or p.resolve() in out.parents):
            raise SystemExit(f"--out {out} is inside the submissions folder {p}: choose a folder outside it")
    subs = find_submissions(paths, exercises)
    rows: list[dict | None] = [None] * len(subs)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, tqdm(total=len(subs), desc="grading", unit="notebook", disable=not progress) as bar:
        futures = {pool.submit(_grade_safely, f, st, exercises, s, assignment, out / "executed"): k for k, (st, f) in enumerate(subs)}
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            bar.set_postfix_str(f"{rows[futures[fut]]['student']}", refresh=False)
            bar.update()
    known = {r["notebook"] for r in rows if r["notebook"] in exercises}
    for r in rows:  # an unreadable file in a one-assignment class still gets that assignment's zero row
        if r["notebook"] is None and len(known) == 1:
            r["notebook"] = next(iter(known))
            r["max"] = sum(e["points"] for e in exercises[r["notebook"]])
            r["exercises"] = [{**e, "score": 0, "passed": False, "message": "not graded: " + "; ".join(r["problems"])} for e in exercises[r["notebook"]]]
    write_reports(rows, out, exercises, s, similarity_report(rows, exercises) if similar else None)
    return rows


def self_check(path: Path, s: Settings) -> tuple[dict, str]:
    """Grade one notebook exactly as the grader does (same run, same checks, same limits); ``(row, text for the student)``."""
    exercises = load_exercises()
    if not path.is_file():
        raise SystemExit(f"{path}: no such notebook file")
    with tempfile.TemporaryDirectory(prefix="labsupport-self-") as tmp:
        [row] = grade([path], Path(tmp), s, jobs=1, progress=False, similar=False)
    lines = [f"Your notebook {path.name} ({row['notebook'] or 'assignment unknown'}) would get {row['total']:g} of {row['max']:g} points.", ""]
    for e in row["exercises"]:
        verdict = "done" if e["passed"] else ("partly done" if e["score"] else "not yet")
        lines.append(f"Exercise {e['number']} ({e['id']}): {e['score']:g} / {e['points']:g} points, {verdict}.")
        if not e["passed"]:
            lines += ["  " + line for line in e["message"].strip().splitlines()]
    for q in row["written"]:
        lines.append(f"Written question {q['number']} ({q['points']:g} points, graded by hand later): {q['status']}.")
    for p in row["problems"]:
        lines.append(f"Note: {p}")
    for c in row["cell_errors"]:
        lines.append(f"Cell {c['cell']} (it starts with `{c['starts']}`) stopped with {c['ename']}: {c['evalue'][:300]}")
    lines += ["", "This is the grader's own run of your notebook, in its grading mode, from a fresh kernel: "
              "run every cell top to bottom yourself too, and save the notebook before you submit it."]
    return row, "\n".join(lines)


def gradescope_run(root: Path, assignment: str, s: Settings) -> int:
    """Inside Gradescope (``run_autograder``): grade ``root/submission``, write ``root/results/results.json``."""
    start = time.perf_counter()
    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(f for f in (root / "submission").rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
    exercises = load_exercises()
    ours = [f for f in found if read_notebook(f)[0] is not None and read_notebook(f)[0].metadata["submitted"]["notebook"] == assignment]
    if not found:
        report = gradescope.results(None, time.perf_counter() - start, "No .ipynb file was submitted: upload your notebook.")
    else:
        pick = (ours or found)[0]  # the notebook of this assignment, else the first one (which then scores what it scores)
        with tempfile.TemporaryDirectory(prefix="labsupport-gradescope-") as tmp:
            [row] = grade([pick], Path(tmp), s, jobs=1, assignment=assignment, progress=False, similar=False)
        report = gradescope.results(row, time.perf_counter() - start)
        if len(found) > 1:
            report["output"] += f"\n{len(found)} notebooks were submitted; graded: {pick.name}."
        print(json.dumps({"instructor_only": {"file": str(pick), "status": row["status"], "seconds": row["seconds"],
                                              "exercises": sum(len(v) for v in exercises.values())}}))  # stdout is instructor-only on Gradescope
    (results_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _settings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds per notebook (default %(default)s)")
    p.add_argument("--cell-timeout", type=float, default=Settings.cell_timeout, help="seconds per cell (default %(default)s)")
    p.add_argument("--check-timeout", type=float, default=Settings.check_timeout, help="seconds per exercise check (default %(default)s)")
    p.add_argument("--max-output", type=int, default=Settings.max_output, help="characters of output kept per cell (default %(default)s)")
    p.add_argument("--memory-limit", type=int, default=Settings.memory_limit,
                   help="MB of data memory per kernel and per check process (RLIMIT_DATA; 0: none; default %(default)s)")
    p.add_argument("--mode", choices=config.MODES, default=Settings.mode, help="the course's mode in the graded kernels (default %(default)s)")
    p.add_argument("--run-all", action="store_true", help="also run the cells after the last exercise")


def _settings(args, threads: int) -> Settings:
    if args.memory_limit < 0:
        raise SystemExit("--memory-limit must be 0 (no limit) or a number of MB")
    return Settings(timeout=args.timeout, cell_timeout=args.cell_timeout, check_timeout=args.check_timeout, mode=args.mode,
                    run_all=args.run_all, max_output=args.max_output, threads=threads, memory_limit=args.memory_limit)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cores = config.cores()
    if argv[:1] == ["gradescope"]:  # the autograder zip for one assignment
        p = argparse.ArgumentParser(prog="labsupport-grade gradescope", description="write a Gradescope autograder zip for one assignment")
        p.add_argument("assignment")
        p.add_argument("--out", type=Path, default=Path("autograder.zip"))
        p.add_argument("--memory-limit", type=int, default=Settings.memory_limit, help="MB per kernel and check (default %(default)s)")
        args = p.parse_args(argv[1:])
        if args.assignment not in load_exercises():
            raise SystemExit(f"{args.assignment!r} is not a notebook of this course ({', '.join(load_exercises())})")
        print(f"wrote {gradescope.build_zip(args.assignment, args.out, args.memory_limit)}: upload it as the assignment's autograder")
        return 0
    if argv[:1] == ["gradebook"]:  # merge several runs into one LMS gradebook
        p = argparse.ArgumentParser(prog="labsupport-grade gradebook", description="one LMS gradebook CSV from several grading runs")
        p.add_argument("runs", nargs="+", type=Path, help="--out folders (or grades.json files) of earlier runs")
        p.add_argument("--out", type=Path, default=Path("gradebook.csv"))
        args = p.parse_args(argv[1:])
        print(f"wrote {merge_gradebook(args.runs, args.out)}")
        return 0
    if argv[:1] == ["--gradescope-run"]:  # internal: run_autograder inside Gradescope
        p = argparse.ArgumentParser(prog="labsupport-grade --gradescope-run")
        p.add_argument("root", type=Path)
        p.add_argument("--assignment", required=True)
        _settings_arguments(p)
        args = p.parse_args(argv[1:])
        return gradescope_run(args.root, args.assignment, _settings(args, config.num_threads()))
    p = argparse.ArgumentParser(prog="labsupport-grade", description=__doc__.split("\n\n")[0],
                                epilog="Also: `labsupport-grade gradescope ASSIGNMENT --out autograder.zip`, "
                                       "`labsupport-grade gradebook RUN_DIR... --out gradebook.csv`.")
    p.add_argument("submissions", nargs="*", type=Path, help="notebook files, or folders of one student's notebooks each")
    p.add_argument("--self", dest="self_check", type=Path, default=None, metavar="NOTEBOOK",
                   help="students: grade your own notebook exactly as the grader will, and print what you would get")
    p.add_argument("--out", type=Path, default=None, help="folder for grades.csv, grades.json, gradebook.csv, similarity.csv, feedback/ and executed/")
    p.add_argument("--assignment", default=None, help="grade every submission as this notebook (e.g. 03_variational_autoencoders); others score zero")
    p.add_argument("--jobs", type=int, default=min(cores, 8), help=f"notebooks graded at once (default: the number of cores, {min(cores, 8)})")
    _settings_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.self_check is not None:
        row, text = self_check(args.self_check, _settings(args, config.num_threads()))
        print(text)
        return 1 if "grader-error" in row["status"] else 0
    if not args.submissions or args.out is None:
        p.error("give the submissions and --out (or --self NOTEBOOK to check your own notebook)")
    jobs = max(1, args.jobs)
    s = _settings(args, config.num_threads(default=max(1, cores // jobs)))
    start = time.perf_counter()
    rows = grade(args.submissions, args.out, s, jobs=jobs, assignment=args.assignment, progress=not args.quiet)
    width = max([len(r["student"]) for r in rows] + [7])
    for r in rows:
        print(f"{r['student']:<{width}}  {r['notebook'] or '?':<36} {r['total']:>5g} / {r['max']:<4g} {r['status']}")
    print(f"graded {len(rows)} notebook(s) in {time.perf_counter() - start:.1f} s -> {args.out / 'grades.csv'}")
    return 1 if any("grader-error" in r["status"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
