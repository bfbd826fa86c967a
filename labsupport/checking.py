"""The grader's checking process: each exercise checked in its own forked child, verdicts the student cannot forge.

    python -m labsupport.checking EXPORT MEMORY_MB TIMEOUT ID... < keys

Started by :func:`labsupport.grading.kernel.check_exports` from an empty folder, in the notebook's sandbox. This process imports
``labsupport.checks`` (and torch) once and never runs student code itself. For every exercise it
forks a child that

* drops every other exercise's key, caps its own memory (``RLIMIT_DATA``), loads the saved function
  and runs ``check_<id>`` on it through :func:`_guarded`, which watches, while the student's code runs,
  for calls of the course's reference answers (``labsupport.losses``, ``train``, ``metrics``), for the
  function *being* a ``labsupport`` function, and for patches of the checker, its losses or torch;
* writes one verdict line signed (HMAC-SHA256) with that exercise's key, which came on stdin as raw
  bytes before any student code was loaded.

The grader accepts for exercise ``id`` only a verdict signed with ``id``'s key, so anything the
student's code writes to a file, stdout or an exit code earns nothing, and a child checking one
exercise holds no key of another. What this cannot stop (the child runs student code in its own
memory): a function written to search that memory (gc, frames, ctypes) for its own exercise's key,
or to blind the watch from C. See README.md, section "Grading".
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import hmac
import io
import json
import math
import os
import pickle
import random
import resource
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .verdicts import Verdict

PACKAGE = Path(__file__).resolve().parent
SELF = str(Path(__file__).resolve())
KEY_BYTES = 32
# the course's own answers: calling them is not the student's work (train's loops live in train and its train_* modules)
REFERENCE_MODULES = ("losses", "train", "train_core", "train_gan", "train_diffusion", "metrics", "diffusion", "debias")
NOT_ANSWERS = ("labsupport.diffusion.Schedule.",)  # a schedule's numbers (beta, alpha_bar, ...) are the exercises' inputs, not answers
MAX_VERDICT_BYTES = 200_000


def sign(key: bytes | bytearray, record: dict) -> str:
    """The MAC of a verdict (every field but ``mac``), in a canonical JSON form."""
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True, ensure_ascii=True)
    return hmac.new(bytes(key), body.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, record: Any, name: str) -> bool:
    """Whether ``record`` is a verdict for exercise ``name`` signed with ``key``."""
    return (isinstance(record, dict) and record.get("id") == name and isinstance(record.get("mac"), str)
            and hmac.compare_digest(record["mac"], sign(key, record)))


def is_memory_error(err: BaseException) -> bool:
    """Python's MemoryError, or torch's / numpy's allocator refusing (they raise RuntimeError)."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "Cannot allocate memory" in text or "bad_alloc" in text


# --- inside a child: watching the student's code while the check runs it ------------------------


class Watch:
    """What the student's code did while it ran: reference answers it called, patches it made."""

    def __init__(self, checks_module) -> None:
        self.reference: list[str] = []  # "labsupport.losses.gan_d_loss", ...
        self.tampered: list[str] = []
        self.memory = False
        self.depth = 0
        self._files = {str(PACKAGE / f"{m}.py"): m for m in REFERENCE_MODULES}
        self._places: dict[str, str] = {}  # co_filename -> "self" (this watch), "package" (labsupport) or "outside"
        self._checks = checks_module
        import torch
        import torch.nn.functional as F

        from . import losses

        # Namespaces whose patching would change a verdict: the checks, the losses they compare with, torch.
        self._watched = {"labsupport.checks": vars(checks_module), "labsupport.losses": vars(losses), "torch": vars(torch),
                         "torch.nn.functional": vars(F), "torch.Tensor": vars(torch.Tensor), "builtins": vars(builtins), "math": vars(math)}
        for module in getattr(checks_module, "MODULES", ()):  # every module of the checks package (labsupport.checks.nb04, ...)
            self._watched[module.__name__] = vars(module)
        self._forbidden_c = (sys.setprofile, threading.setprofile, sys.settrace, threading.settrace)
        self._proxy_codes: set = set()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Which object each watched name holds. torch's and builtins' private names are left out: torch fills
        its own caches and lazy submodules as honest code runs."""
        return {name: {k: id(v) for k, v in list(ns.items()) if not (k.startswith("_") and name in ("torch", "builtins"))}
                for name, ns in self._watched.items()}

    def compare(self, before: dict[str, dict[str, int]]) -> None:
        """Note every watched name that now holds another object, or is gone (new names are fine: lazy imports)."""
        after = self.snapshot()
        for ns, ids in before.items():
            changed = sorted(k for k, v in ids.items() if after[ns].get(k) != v)
            if changed:
                self._note(f"it changed {ns}.{', '.join(changed[:5])} while it was being checked")

    def _place(self, filename: str) -> str:
        """Where code comes from, by its file's real path (a symlinked checkout must not look like student code)."""
        place = self._places.get(filename)
        if place is None:
            real = os.path.realpath(filename)
            place = "self" if real == SELF else "package" if real.startswith(str(PACKAGE) + os.sep) else "outside"
            self._places[filename] = place
        return place

    def _hook(self, frame, event: str, arg) -> None:
        if event == "call":
            code = frame.f_code
            if self._place(code.co_filename) != "package":  # student code, torch, or the watch's own code
                return
            caller = frame.f_back
            from_proxy = caller is not None and caller.f_code in self._proxy_codes
            from_student = caller is not None and self._place(caller.f_code.co_filename) == "outside"
            module = self._files.get(os.path.realpath(code.co_filename))
            if from_proxy or (module and from_student):  # the function *is* a labsupport function, or student code calls an answer
                name = f"labsupport.{module or Path(code.co_filename).stem}.{code.co_qualname}"
                if name not in self.reference and not name.startswith(NOT_ANSWERS):
                    self.reference.append(name)
        elif event == "c_call" and any(arg is f for f in self._forbidden_c) and frame.f_code not in self._proxy_codes:
            self._note(f"it called {getattr(arg, '__module__', '') or 'sys'}.{arg.__name__}, which would blind the grader's watch")

    def _note(self, what: str) -> None:
        if what not in self.tampered:
            self.tampered.append(what)

    def guard(self, fn: Callable) -> Callable:
        """``fn`` as the check sees it: the same name and signature, watched while it runs."""
        watch = self

        @functools.wraps(fn)
        def student(*args, **kwargs):
            before = watch.snapshot() if watch.depth == 0 else None
            stages = list(watch._checks.PASSED)
            old = sys.getprofile(), threading.getprofile()
            watch.depth += 1
            sys.setprofile(watch._hook)
            threading.setprofile(watch._hook)  # threads the student starts are watched too
            try:
                return fn(*args, **kwargs)
            except BaseException as err:
                if is_memory_error(err):
                    watch.memory = True
                raise
            finally:
                sys.setprofile(old[0])
                threading.setprofile(old[1])
                watch.depth -= 1
                if watch._checks.PASSED != stages:
                    watch._note("it changed the check's record of partial credit (labsupport.checks.PASSED)")
                    watch._checks.PASSED[:] = stages
                if before is not None:
                    watch.compare(before)

        self._proxy_codes.add(student.__code__)
        return student


def _unwrap(fn: Any) -> Any:
    """The function behind functools.partial / functools.wraps layers (to tell that it *is* a labsupport function)."""
    for _ in range(20):
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    return fn


class _Capped(io.StringIO):
    def write(self, text: str) -> int:
        return super().write(text[: max(0, 20_000 - self.tell())]) if self.tell() < 20_000 else len(text)


def check_one(checks, export: Path, name: str) -> dict:
    """Run ``check_<name>`` on the saved function; the verdict record (unsigned)."""
    rec: dict = Verdict(name).record()
    check = getattr(checks, f"check_{name}", None)
    status_file, pkl = export / f"{name}.status", export / f"{name}.pkl"
    if check is None:
        return {**rec, "message": f"The course has no check_{name} in labsupport.checks.", "grader_error": True}
    if not pkl.exists():
        return {**rec, "message": status_file.read_text()[:1000] if status_file.exists() else f"The notebook stopped before `{name}` was defined."}
    watch = Watch(checks)
    baseline = watch.snapshot()  # before unpickling: a pickled global's __reduce__ runs code too
    failed = checks.CheckFailed
    shown = _Capped()
    checks.PASSED.clear()
    try:
        with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
            with open(pkl, "rb") as f:
                fn = pickle.load(f)  # unpickling runs no student function body; calling it does, inside the guard
            module = getattr(_unwrap(fn), "__module__", None) or ""
            if module.startswith("labsupport"):
                watch.reference.append(f"{module}.{getattr(_unwrap(fn), '__qualname__', '?')}")
            random.seed(0)
            import numpy
            import torch

            torch.manual_seed(0)
            numpy.random.seed(0)
            check(watch.guard(fn) if callable(fn) else fn)
        out = shown.getvalue().strip()
        rec.update(passed=True, message=out.splitlines()[-1] if out else "passed")
    except failed as err:
        rec["message"] = str(err)
    except BaseException as err:  # the student's code escaped the check's own handling
        watch.memory = watch.memory or is_memory_error(err)
        rec["message"] = f"The check could not finish: {type(err).__name__}: {str(err)[:1000]}"
    watch.compare(baseline)
    rec.update(stages=list(checks.PASSED), reference=watch.reference, tampered=watch.tampered, memory=watch.memory)
    rec["message"] = rec["message"][:5000]
    return rec


# --- the server: one forked child per exercise --------------------------------------------------


def _read_keys(ids: list[str]) -> dict[str, bytearray]:
    """Raw key bytes straight from fd 0 into bytearrays (no text copies left behind in this process)."""
    keys = {}
    for name in ids:
        buf, got = bytearray(KEY_BYTES), 0
        view = memoryview(buf)
        while got < KEY_BYTES:
            n = os.readv(0, [view[got:]])
            if n == 0:
                raise SystemExit("labsupport.checking: the grader sent too few key bytes")
            got += n
        keys[name] = buf
    return keys


def _child(checks, export: Path, name: str, keys: dict[str, bytearray], wfd: int, memory_mb: int) -> None:
    for other, key in keys.items():  # this child may only ever sign its own exercise
        if other != name:
            key[:] = bytes(KEY_BYTES)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the channel to the grader is not this child's to write
        os.dup2(devnull, fd)
    if memory_mb > 0:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        rec = check_one(checks, export, name)
    except BaseException as err:  # noqa: BLE001 - whatever happens, the child reports
        rec = Verdict(name, memory=is_memory_error(err), message=f"The check could not finish: {type(err).__name__}: {str(err)[:500]}").record()
    rec["mac"] = sign(keys[name], rec)
    data = (json.dumps(rec) + "\n").encode()
    while data:
        data = data[os.write(wfd, data):]


def _run_child(checks, export: Path, name: str, keys: dict[str, bytearray], memory_mb: int, timeout: float) -> dict:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            os.setpgid(0, 0)
            _child(checks, export, name, keys, wfd, memory_mb)
        except BaseException:  # noqa: BLE001
            code = 70
        os._exit(code)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # its own group, so a timeout kills whatever it started too
    os.close(wfd)
    chunks, size, deadline, timed_out = [], 0, time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            if size < MAX_VERDICT_BYTES:
                chunks.append(chunk)
                size += len(chunk)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # anything it left running
    code = os.waitstatus_to_exitcode(status)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    return {"event": "done", "id": name, "lines": lines[-5:], "exit": code, "timeout": timed_out}


def serve(export: Path, memory_mb: int, timeout: float, ids: list[str]) -> int:
    keys = _read_keys(ids)
    import labsupport.checks as checks  # fresh: nothing from the notebook has run in this process
    import torch

    from . import config

    # The grader's threads (Settings.threads, LABSUPPORT_THREADS), not torch's default of every core: with two notebooks
    # graded at once on two cores, two-thread checks slowed one another past the check's time limit (CI, 2026-12-06).
    torch.set_num_threads(config.num_threads())
    import numpy  # noqa: F401  (imported once here, so no child pays for it)
    import torch._dynamo  # noqa: F401  (an honest answer's first torch.optim step imports it, and the import rebinds
    #                       torch.manual_seed: done here, before any watch takes its snapshot, it is no tampering)

    out = os.fdopen(os.dup(1), "w", buffering=1)
    for name in ids:
        out.write(json.dumps({"event": "start", "id": name}) + "\n")
        out.write(json.dumps(_run_child(checks, export, name, keys, memory_mb, timeout)) + "\n")
        keys[name][:] = bytes(KEY_BYTES)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        raise SystemExit("usage: python -m labsupport.checking EXPORT MEMORY_MB TIMEOUT ID... < keys (started by the grader)")
    return serve(Path(argv[0]), int(argv[1]), float(argv[2]), argv[3:])


if __name__ == "__main__":
    sys.exit(main())
