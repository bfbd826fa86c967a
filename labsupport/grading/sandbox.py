"""The sandbox that each graded notebook's kernel, and then its checking process, run in.

A :class:`Sandbox` turns a command into one that runs

* on a **read-only** view of the system (the installed course and Python included);
* with write access to the folders it is given only (the notebook's own scratch folder);
* with **no network** (its own network namespace: a loopback of its own, nothing else);
* in its own **PID namespace**: the grader's processes are invisible to it, and everything it starts,
  detached or not, ends when it ends; it also ends when the grader does;
* with the instructor's home, ``/home``, ``/root``, ``/tmp``, ``/run`` and every folder named in
  ``hide`` (the submissions, ``--out``) replaced by empty folders.

Kinds (``labsupport-grade --sandbox KIND``):

``bwrap``
    bubblewrap (Debian/Ubuntu/Fedora package ``bubblewrap``): ``bwrap --ro-bind / / ... --unshare-all
    --die-with-parent --new-session``. Works as root and, where user namespaces are allowed, as anyone.
``unshare``
    the fallback where bwrap cannot run and the grader is root: ``unshare --net --pid --mount --ipc
    --uts --fork --kill-child --mount-proc``, then a small helper (:data:`HELPER`) that remounts every
    mount read-only, hides the same folders, and runs the command as the unprivileged user ``nobody``
    with ``no_new_privs``.
``none``
    as the grader itself: ``--no-sandbox`` (a class the instructor trusts) and ``--self`` where no
    sandbox is available (a student checking their own notebook).

``auto`` takes the first of ``bwrap`` and ``unshare`` that works here (each is tried once per
process); :func:`resolve` refuses to grade with neither, unless ``none`` was asked for.
The kernel talks to the grader over Unix sockets in its scratch folder (jupyter_client's ``ipc``
transport), so no network is needed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from .settings import PACKAGE

KINDS = ("auto", "bwrap", "unshare", "none")
NOBODY = 65534  # uid and gid of the unprivileged user of the fallback
HOW = ("install bubblewrap (`apt-get install bubblewrap` on Debian/Ubuntu, `dnf install bubblewrap` on Fedora), or run the "
       "grader as root so that it can use `unshare` and an unprivileged user; for a class you trust, --no-sandbox grades "
       "without one (see README.md, section Grading)")
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # hidden, and writable inside (a private, empty tmpfs)
HIDDEN = ("/home", "/root", "/run", "/mnt", "/media")  # hidden, read-only empty folders

# Runs inside the sandbox, before the graded command: the data-memory cap (RLIMIT_DATA), then exec.
LIMIT = ("import os, resource, sys\nlimit = int(sys.argv[1])\nif limit > 0:\n    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))\n"
         "os.execv(sys.argv[2], sys.argv[2:])")

# The fallback's helper: root inside fresh mount, PID, network, IPC and UTS namespaces (pid 1 there).
HELPER = r'''
import ctypes, json, os, resource, sys
spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, NOSUID, NODEV, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18

def mount(src, target, fstype, flags, data=None, check=True):
    if libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0 and check:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} {target}: {os.strerror(err)}")

mount(None, "/", None, REC | PRIVATE)
points = [line.split()[4] for line in open("/proc/self/mountinfo")]
fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in spec["keep"] + spec["again"] + spec["read"] + spec["write"]}

def bind(p):
    os.makedirs(p, exist_ok=True)
    mount(f"/proc/self/fd/{fds[p]}", p, None, BIND | REC)

def inside(p, roots):
    return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)

for p in spec["tmp"]:
    mount("tmpfs", p, "tmpfs", NOSUID | NODEV, "mode=1777")
for p in spec["hide"]:
    mount("tmpfs", p, "tmpfs", NOSUID | NODEV, "mode=755")
for p in spec["keep"]:
    bind(p)
for p in spec["mine"]:
    os.makedirs(p, exist_ok=True)  # inside the new /tmp, say
    mount("tmpfs", p, "tmpfs", NOSUID | NODEV, "mode=755")
for p in spec["again"] + spec["write"] + spec["read"]:
    bind(p)
for p in points + spec["keep"] + spec["again"]:  # all read-only (one mount at a time: a bind remount changes only that one)
    if not p.startswith(("/proc", "/sys", "/dev")) and not inside(p, spec["tmp"] + spec["write"]):
        mount(None, p, None, REMOUNT | BIND | RDONLY | NOSUID, check=False)
for p in spec["read"]:
    mount(None, p, None, REMOUNT | BIND | RDONLY | NOSUID)
for p in spec["hide"] + spec["mine"]:
    mount(None, p, None, REMOUNT | RDONLY | NOSUID | NODEV, "mode=755")
for fd in fds.values():
    os.close(fd)
pid = os.fork()
if pid == 0:
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid program gives the privileges back
    os.chdir(spec["cwd"])
    os.environ.pop("JPY_PARENT_PID", None)  # the kernel's parent is this pid 1: ipykernel would take that for an orphaned kernel
    if spec["memory"] > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (spec["memory"], spec["memory"]))
    os.execv(argv[0], argv)
while True:  # pid 1: reap orphans until the command ends, then end (which ends everything left in here)
    done, status = os.wait()
    if done == pid:
        sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
'''


def _try(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def works(kind: str) -> bool:
    """Whether ``kind`` can run here (tried once per process, with ``true`` inside)."""
    if kind == "none":
        return True
    if kind == "bwrap":
        return shutil.which("bwrap") is not None and _try(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                                          "--unshare-all", "--die-with-parent", "--new-session", "true"])
    if kind == "unshare":
        return (os.geteuid() == 0 and shutil.which("unshare") is not None
                and _try(["unshare", "--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc", "true"]))
    raise ValueError(f"sandbox kind must be one of {KINDS}, not {kind!r}")


def resolve(kind: str) -> str:
    """The kind to use for ``kind`` ("auto": bwrap, else unshare); SystemExit with how to get one when it cannot run."""
    if kind not in KINDS:
        raise SystemExit(f"--sandbox must be one of {', '.join(KINDS)}, not {kind!r}")
    for k in (("bwrap", "unshare") if kind == "auto" else (kind,)):
        if works(k):
            return k
    if kind == "auto":
        raise SystemExit("no sandbox can run here (bubblewrap is missing or cannot create namespaces, and the grader is not "
                         f"root for the unshare fallback), so the grader will not run other people's notebooks: {HOW}")
    raise SystemExit(f"the {kind} sandbox cannot run here: {HOW}")


def _real(paths) -> list[str]:
    """Existing folders, resolved, without repeats, in order."""
    out = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        for q in (p.absolute(), p.resolve()):
            if q.is_dir() and str(q) != "/" and str(q) not in out:
                out.append(str(q))
    return out


def _keep() -> list[str]:
    """What graded code needs to see: Python and its packages, this labsupport, the data."""
    paths = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, Path(sys.executable).resolve().parent.parent,
             PACKAGE, config.data_root(), site.getusersitepackages() if site.ENABLE_USER_SITE else None]
    paths += [p for p in sys.path if p and ("-packages" in p or p.endswith(".zip"))]
    return _real(paths)


def _within(p: str, roots) -> bool:
    return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)


@dataclass
class Sandbox:
    """One notebook's sandbox. ``hide``: the folders graded code must not see (submissions, ``--out``)."""

    kind: str  # "bwrap", "unshare" or "none" (resolved)
    hide: list[Path] = field(default_factory=list)

    def prepare(self, *folders: Path) -> None:
        """Make the grader's new folders (and files) usable by the fallback's unprivileged user."""
        if self.kind == "unshare":
            for f in folders:
                os.chown(f, NOBODY, NOBODY)

    def command(self, argv: list[str], cwd: Path, write: list[Path], read: list[Path] = (), memory_mb: int = 0) -> list[str]:
        """``argv`` as it runs in this sandbox: cwd ``cwd``, writable ``write`` only, ``read`` visible (read-only),
        its data memory capped at ``memory_mb`` (0: no cap)."""
        memory = memory_mb * 2**20
        if self.kind == "none":
            return [sys.executable, "-S", "-c", LIMIT, str(memory), *argv] if memory else list(argv)
        home = [Path.home(), tempfile.gettempdir()]
        tmp = _real(PRIVATE_TMP)
        hide = [p for p in _real([*HIDDEN, *home]) if p not in tmp]
        mine = _real(self.hide)  # the submissions and --out: hidden even inside what graded code sees
        mine = [p for p in mine if not any(p != q and _within(p, [q]) for q in mine)]  # no mount points (names) inside a hidden folder
        write_, read_ = _real(write), [p for p in _real(read) if p not in _real(write)]
        keep = [p for p in _keep() if p not in mine]
        again = [p for p in keep if any(_within(p, [m]) for m in mine)]  # a course installed inside a hidden folder comes back
        if self.kind == "bwrap":
            cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
            for p in tmp:
                cmd += ["--tmpfs", p]
            for p in hide:
                cmd += ["--tmpfs", p]
            for p in keep:
                cmd += ["--ro-bind", p, p]
            for p in mine:
                cmd += ["--tmpfs", p]
            for p in again:
                cmd += ["--ro-bind", p, p]
            for p in write_:
                cmd += ["--bind", p, p]
            for p in read_:
                cmd += ["--ro-bind", p, p]
            for p in hide + mine:
                cmd += ["--remount-ro", p]
            cmd += ["--unshare-all", "--die-with-parent", "--new-session", "--unsetenv", "JPY_PARENT_PID", "--chdir", str(cwd), "--"]
            return cmd + ([sys.executable, "-S", "-c", LIMIT, str(memory)] if memory else []) + list(argv)
        spec = {"tmp": tmp, "hide": hide, "keep": keep, "mine": mine, "again": again, "read": read_, "write": write_, "cwd": str(cwd), "memory": memory, "uid": NOBODY}
        return ["unshare", "--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc", "--",
                sys.executable, "-S", "-c", HELPER, json.dumps(spec), *argv]
