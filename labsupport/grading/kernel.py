"""Running a submission: its notebook in a fresh kernel, then its saved exercises in the checking process,
each in the notebook's sandbox (:mod:`labsupport.grading.sandbox`).

The kernel runs a copy of the notebook with cwd ``TMP/work`` and talks to the grader over Unix sockets in
``TMP`` (jupyter_client's ``ipc`` transport: no network needed). Right after each cell that defines an
exercise or calls its check, it saves the exercise's function (cloudpickle) to ``TMP/export``. Then
:mod:`labsupport.checking` runs from ``TMP/checks/empty``, with ``TMP/export`` read-only, in a sandbox of
its own: every exercise in its own forked child, with its own key; only a verdict signed with that key counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import checking, config
from ..verdicts import Verdict
from .sandbox import Sandbox
from .settings import PACKAGE, Settings

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TIME_LIMIT = "TimeLimit"  # ename of the error the grader records when a cell runs out of time

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


def environment(s: Settings, scratch: Path | None = None) -> dict[str, str]:
    """The kernel's and the checks' environment: the course's mode, threads, this very labsupport first on the path;
    with ``scratch``, a home, IPython and matplotlib folders of their own there (the instructor's home is hidden)."""
    env = config.environment(mode=s.mode, threads=s.threads)
    env["MPLBACKEND"] = "agg"
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("JPY_SESSION_NAME", None)
    if scratch is not None:
        for name, sub in (("HOME", "home"), ("IPYTHONDIR", "home/.ipython"), ("MPLCONFIGDIR", "home/.matplotlib")):
            env[name] = str(scratch / sub)
    return env


def make_home(scratch: Path) -> list[Path]:
    """``scratch/home`` with matplotlib's font list copied in (else every kernel would rebuild it: seconds)."""
    mpl = scratch / "home" / ".matplotlib"
    mpl.mkdir(parents=True, exist_ok=True)
    for f in _font_lists():
        shutil.copy(f, mpl / f.name)
    return [scratch / "home", scratch / "home" / ".matplotlib", *mpl.iterdir()]


_FONTS: list[Path] | None = None


def _font_lists() -> list[Path]:
    global _FONTS
    if _FONTS is None:
        import matplotlib

        _FONTS = sorted(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))
    return _FONTS


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


def _kernel_manager_class(sandbox: Sandbox, tmp: Path, work: Path, memory_mb: int):
    """A kernel manager class whose kernel runs in ``sandbox`` (writable: ``tmp`` only), reached over Unix sockets in
    ``tmp``, interrupted by a message (a signal would stop at the sandbox's own process), its data memory capped from
    its start. (nbclient makes the manager itself, so it also shuts the kernel down.)"""
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "transport": "ipc", "ip": str(tmp / "kernel"), "kernel_name": "python3"})
            self.connection_file = str(tmp / "kernel.json")
            self.kernel_spec.interrupt_mode = "message"

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            sandbox.prepare(Path(self.connection_file))  # written just before: the fallback's user must read it
            return sandbox.command(cmd, cwd=work, write=[tmp], memory_mb=memory_mb)

    return SandboxedKernelManager


async def execute_notebook(nb, ids: list[str], work: Path, export: Path, s: Settings, sandbox: Sandbox) -> dict:
    """Run ``nb`` in a fresh kernel in ``sandbox`` with cwd ``work``; save exercise functions to ``export``."""
    import nbformat
    from jupyter_core.utils import ensure_async
    from nbclient.exceptions import DeadKernelError

    tmp = work.parent
    env = environment(s, tmp)
    points = _export_points(nb, ids)
    last = max(points, default=-1)
    replies: dict[int, dict] = {}
    Client = _client_class()
    client = Client(
        nb, kernel_manager_class=_kernel_manager_class(sandbox, tmp, work, s.memory_limit), kernel_name="python3", allow_errors=True, interrupt_on_timeout=True, shutdown_kernel="immediate",
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
            if s.memory_limit > 0:  # the kernel's data memory was capped before it started (Sandbox.command)
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
                if memory_problem(reply.get("ename", "") + " " + reply.get("evalue", "")):
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




def check_exports(export: Path, ids: list[str], s: Settings, scratch: Path, sandbox: Sandbox | None = None) -> dict[str, Verdict]:
    """Run the course's checks on the functions saved in ``export`` (by :data:`EXPORT`) with
    :mod:`labsupport.checking`, started in ``scratch/empty`` in ``sandbox`` (default: ``s.sandbox``'s), with
    ``export`` read-only: every exercise in its own forked child, with its own time and memory limit and its
    own key. Only a verdict signed with that exercise's key counts; whatever else comes back (a forged line,
    an exit code, a timeout) earns nothing."""
    from .sandbox import resolve

    sandbox = sandbox or Sandbox(resolve(s.sandbox))
    env = environment(s, scratch)
    (scratch / "empty").mkdir(parents=True, exist_ok=True)
    sandbox.prepare(scratch, scratch / "empty", *make_home(scratch))
    keys = {i: secrets.token_bytes(checking.KEY_BYTES) for i in ids}
    events: list[dict] = []
    argv = [sys.executable, "-m", "labsupport.checking", str(export.resolve()), str(s.memory_limit), str(s.check_timeout), *ids]
    with open(scratch / "checks.log", "wb") as log:
        proc = subprocess.Popen(sandbox.command(argv, cwd=scratch / "empty", write=[scratch], read=[export]),
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
    results: dict[str, Verdict] = {}
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
            results[name] = Verdict.from_record(verdict)
            continue
        last = done[-1] if done else None
        if last is None:
            text = (scratch / "checks.log").read_text(errors="replace")[-2000:]
            results[name] = Verdict(name, forged=forged, message=f"The grader could not run the checks: {text}", grader_error=True)
        elif last.get("timeout"):
            results[name] = Verdict(name, forged=forged, message=f"Checking `{name}` took longer than {s.check_timeout:g} s (an endless loop?).")
        else:
            why = f"made the checking process exit (exit code {last.get('exit')})"
            if forged:
                why += " after writing a verdict the grader did not sign: forged results earn nothing"
            results[name] = Verdict(name, forged=forged, message=f"Checking `{name}` {why}.")
    return results


def memory_problem(text: str) -> bool:
    return "MemoryError" in text or "can't allocate memory" in text or "Cannot allocate memory" in text or "bad_alloc" in text

