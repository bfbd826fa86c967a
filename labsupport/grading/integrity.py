"""Defence in depth: the installed course must not change while a class is graded.

At start the grader records the SHA-256 of every file of the installed ``labsupport`` package (every
subpackage, recursively; ``exercises.json`` and the checkpoints included; the ``__pycache__`` folders
left out, since Python rewrites them itself) and checks them again before each checking run and before
writing the reports. Any difference (a file changed, added or removed) stops the run with
:class:`Tampered`, which names the file; no grade is written from that state.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from .settings import PACKAGE


def compile_package(root: Path = PACKAGE) -> None:
    """Write the package's bytecode now, where the grader may (a sandbox cannot: without it, every kernel and
    checking process would compile the course from source again). Nothing happens where the install is read-only."""
    import compileall

    with contextlib.suppress(OSError):
        compileall.compile_dir(str(root), quiet=2)


class Tampered(SystemExit):
    """The installed course changed during grading (a SystemExit: the run stops, nothing is written)."""


def digest(root: Path = PACKAGE) -> dict[str, str]:
    """``{path relative to root's parent: sha256}`` of every file under ``root`` but ``__pycache__``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts or not (p.is_file() or p.is_symlink()):
            continue
        name = str(p.relative_to(root.parent))
        try:
            out[name] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError as err:
            out[name] = f"unreadable: {err}"
    return out


class Hashes:
    """The package's hashes at start; :meth:`verify` raises :class:`Tampered` naming what changed since."""

    def __init__(self, root: Path = PACKAGE) -> None:
        self.root = root
        self.start = digest(root)

    def changed(self) -> list[str]:
        now = digest(self.root)
        return ([f"{n} was changed" for n in self.start if n in now and now[n] != self.start[n]]
                + [f"{n} was removed" for n in self.start if n not in now] + [f"{n} was added" for n in now if n not in self.start])

    def verify(self, when: str) -> None:
        changed = self.changed()
        if changed:
            raise Tampered(f"the installed course changed while grading ({'; '.join(changed[:10])}, under {self.root.parent}), "
                           f"found {when}. Grading stopped and no grades were written: reinstall the course, then grade again "
                           "(with the sandbox, graded code cannot write there).")
