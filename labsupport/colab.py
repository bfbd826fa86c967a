"""Installing the course on Google Colab without touching Colab's own torch.

Every student notebook's install cell (written by ``python -m labsupport.course build``) does, on Colab only::

    %pip install -q --no-deps 'labsupport @ git+<repository>'
    from labsupport.colab import install_missing
    install_missing()

``--no-deps`` keeps pip from resolving ``pyproject.toml``'s pins (``torch<2.15``) against Colab's newer
torch, which would replace it: a multi-GB download, and a CUDA build that may not match the runtime.
:func:`install_missing` then installs only the requirements Colab lacks or has too old, and never the
packages Colab must keep: torch and torchvision (built for its CUDA), and the kernel and front end
it runs the notebook with (ipykernel, jupyterlab).
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from typing import Callable

KEEP = ("torch", "torchvision", "ipykernel", "jupyterlab")  # Colab's own: never installed or replaced from here


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing(requirements: list[str] | None = None, version: Callable[[str], str] | None = None) -> list[str]:
    """The course's requirements (``labsupport``'s metadata by default) that are absent or too old here, without :data:`KEEP`.

    Optional extras (``extra == "dev"``) are not requirements of the course on Colab.
    """
    from packaging.requirements import Requirement

    reqs = (importlib.metadata.requires("labsupport") or []) if requirements is None else requirements
    version = version or importlib.metadata.version
    todo = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if _canonical(req.name) in KEEP:
            continue
        try:
            have = version(req.name)
        except importlib.metadata.PackageNotFoundError:
            todo.append(str(req))
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            todo.append(str(req))
    return todo


def install_missing(shell=None) -> list[str]:
    """``%pip install`` what :func:`missing` lists, through the IPython ``shell`` (default: the running one); returns it."""
    todo = missing()
    if todo:
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        shell.run_line_magic("pip", "install -q " + " ".join(shlex.quote(r) for r in todo))
    print(f"labsupport on Colab: installed {', '.join(todo) if todo else 'nothing more'}; "
          f"Colab's own {', '.join(KEEP)} left as they are")
    return todo
