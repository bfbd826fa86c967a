"""The layering in ARCHITECTURE.md is the code's: no module imports one it may not, and only `config` reads the environment."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


SECTIONS = {"labsupport": None, "labsupport.checks": "## `labsupport/checks/`", "labsupport.grading": "## `labsupport/grading/`", "bench": "## `bench/`"}  # heading of each table


def _allowed(package: str) -> dict[str, set[str]]:
    """``{module: modules it may import}`` from the tables in ARCHITECTURE.md (the section of ``package``).

    A module name ending in ``*`` stands for every module whose name starts so (``nb*``: the checks of each notebook)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    heading = SECTIONS[package]
    section = text.split("\n## ")[0] if heading is None else text.split(heading)[1].split("\n## ")[0]
    table = {}
    for row in re.findall(r"^\|(?: \d+ \|)? `(\w+\*?)` \|.*\| (.+?) \|$", section, re.M):
        module, may = row
        table[module] = set(re.findall(r"`(\w+)`", may))
    return table


def _rule(allowed: dict[str, set[str]], module: str) -> str | None:
    """The row of ``allowed`` that covers ``module`` (its own name, or a ``prefix*`` row)."""
    if module in allowed:
        return module
    return next((row for row in allowed if row.endswith("*") and module.startswith(row[:-1])), None)


def _children(package: str, root: Path = ROOT) -> set[str]:
    """The modules of ``package``: its ``*.py`` files (not ``__init__``) and its subpackages."""
    folder = root.joinpath(*package.split("."))
    return {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}


def _files(package: str, module: str, root: Path = ROOT) -> list[Path]:
    """The source files of ``package.module``: one file, or every file of a subpackage."""
    folder = root.joinpath(*package.split("."))
    return sorted((folder / module).rglob("*.py")) if (folder / module).is_dir() else [folder / f"{module}.py"]


def _dotted(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(package: str, path: Path, root: Path = ROOT) -> set[str]:
    """Modules of ``package`` (its direct children) that ``path`` imports, at any depth (function-level imports too),
    other than the one ``path`` belongs to. Relative imports are resolved from ``path``'s place in ``root``."""
    me = _dotted(path, root)
    here = me if path.stem == "__init__" else me.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..x import y
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    children = _children(package, root)
    found = {n[len(package) + 1:].split(".")[0] for n in names if n.startswith(package + ".")}
    own = me[len(package) + 1:].split(".")[0] if me.startswith(package + ".") else None
    return {m for m in found if m in children and m != own}


@pytest.mark.parametrize("package", list(SECTIONS))
def test_every_module_imports_only_what_architecture_md_allows(package):
    allowed = _allowed(package)
    modules = sorted(_children(package))
    unlisted = [m for m in modules if _rule(allowed, m) is None]
    assert not unlisted and {m for m in allowed if not m.endswith("*")} <= set(modules), \
        f"ARCHITECTURE.md must list exactly the package's modules (unlisted: {unlisted})"
    wrong = {}
    for m in modules:
        for path in _files(package, m):
            bad = sorted(_imports(package, path) - allowed[_rule(allowed, m)])
            if bad:
                wrong[str(path.relative_to(ROOT))] = bad
    assert not wrong, f"imports that ARCHITECTURE.md does not allow: {wrong}"


def test_the_checks_package_init_reexports_every_check():
    """``from labsupport.checks import check_x`` and the grader's ``getattr(checks, f"check_{id}")`` see every check."""
    from labsupport import checks

    defined = {name for module in checks.MODULES for name in vars(module) if name.startswith("check_")}
    assert defined and defined <= set(dir(checks))
    assert {m.__name__.rsplit(".", 1)[-1] for m in checks.MODULES} == set(_children("labsupport.checks")), "MODULES lists every module"


@pytest.mark.parametrize("package", list(SECTIONS))
def test_the_allowed_imports_have_no_cycle(package):
    allowed = _allowed(package)

    def reach(start: str, seen: set[str]) -> set[str]:
        for nxt in allowed.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    assert not [m for m in allowed if m in reach(m, set())], "the allowed imports form a cycle"


def test_labsupport_never_imports_bench():
    for p in (ROOT / "labsupport").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) bench\b", p.read_text(), re.M), p.name


def test_only_config_reads_the_environment():
    readers = []
    for package in ("labsupport", "bench"):
        for p in (ROOT / package).rglob("*.py"):
            if p == ROOT / "labsupport" / "config.py":
                continue
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
                    readers.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not readers, f"read the environment through labsupport.config instead: {readers}"


def test_the_checker_catches_a_forbidden_import(tmp_path):
    """The layering test can fail: a function-level import of a higher layer is found."""
    (tmp_path / "labsupport").mkdir()
    (tmp_path / "labsupport" / "losses.py").write_text("import torch\n\ndef f():\n    from .train import fit\n    from labsupport import models\n")
    (tmp_path / "labsupport" / "train.py").write_text("")
    (tmp_path / "labsupport" / "models.py").write_text("")
    assert _imports("labsupport", tmp_path / "labsupport" / "losses.py", root=tmp_path) == {"train", "models"}


def test_the_checker_sees_into_a_subpackage(tmp_path):
    """A module of a subpackage is held to its package's row (``from .. import x``) and to its own table (``from .core``)."""
    (tmp_path / "labsupport" / "checks").mkdir(parents=True)
    for name in ("losses", "train", "checks/__init__", "checks/core"):
        (tmp_path / "labsupport" / f"{name}.py").write_text("")
    nb = tmp_path / "labsupport" / "checks" / "nb01.py"
    nb.write_text("from .. import losses\nfrom ..train import fit\nfrom .core import call\nfrom labsupport.checks import core\n")
    assert _imports("labsupport", nb, root=tmp_path) == {"losses", "train"}
    assert _imports("labsupport.checks", nb, root=tmp_path) == {"core"}
    assert _allowed("labsupport.checks")["nb*"] == {"core", "fakes"} and _rule(_allowed("labsupport.checks"), "nb03_model") == "nb*"
