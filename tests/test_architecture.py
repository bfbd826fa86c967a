"""The layering in ARCHITECTURE.md is the code's: no module imports one it may not, and only `config` reads the environment."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _allowed(package: str) -> dict[str, set[str]]:
    """``{module: modules it may import}`` from the tables in ARCHITECTURE.md (the section of ``package``)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## `bench/`")[0 if package == "labsupport" else 1]
    table = {}
    for row in re.findall(r"^\|(?: \d+ \|)? `(\w+)` \|.*\| (.+?) \|$", section, re.M):
        module, may = row
        table[module] = set(re.findall(r"`(\w+)`", may))
    return table


def _imports(package: str, path: Path) -> set[str]:
    """Sibling modules of ``package`` that ``path`` imports, at any depth (function-level imports too)."""
    siblings = {p.stem for p in path.parent.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from .x import y
                names = [base.split(".")[0]] if base else [a.name for a in node.names]
            elif base == package:
                names = [a.name for a in node.names]
            elif base.startswith(package + "."):
                names = [base.split(".")[1]]
            else:
                names = []
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")]
        else:
            continue
        found |= {n for n in names if n in siblings and n != path.stem}
    return found


@pytest.mark.parametrize("package", ["labsupport", "bench"])
def test_every_module_imports_only_what_architecture_md_allows(package):
    allowed = _allowed(package)
    modules = sorted(p for p in (ROOT / package).glob("*.py") if p.stem != "__init__")
    assert {p.stem for p in modules} == set(allowed), "ARCHITECTURE.md must list exactly the package's modules"
    wrong = {p.stem: sorted(_imports(package, p) - allowed[p.stem]) for p in modules}
    assert not any(wrong.values()), f"imports that ARCHITECTURE.md does not allow: { {k: v for k, v in wrong.items() if v} }"


@pytest.mark.parametrize("package", ["labsupport", "bench"])
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
    for p in (ROOT / "labsupport").glob("*.py"):
        assert not re.search(r"^\s*(from|import) bench\b", p.read_text(), re.M), p.name


def test_only_config_reads_the_environment():
    readers = []
    for package in ("labsupport", "bench"):
        for p in (ROOT / package).glob("*.py"):
            if p.stem == "config" and package == "labsupport":
                continue
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
                    readers.append(f"{package}/{p.name}:{node.lineno}")
    assert not readers, f"read the environment through labsupport.config instead: {readers}"


def test_the_checker_catches_a_forbidden_import(tmp_path):
    """The layering test can fail: a function-level import of a higher layer is found."""
    (tmp_path / "labsupport").mkdir()
    (tmp_path / "labsupport" / "losses.py").write_text("import torch\n\ndef f():\n    from .train import fit\n    from labsupport import models\n")
    (tmp_path / "labsupport" / "train.py").write_text("")
    (tmp_path / "labsupport" / "models.py").write_text("")
    assert _imports("labsupport", tmp_path / "labsupport" / "losses.py") == {"train", "models"}
