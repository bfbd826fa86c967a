"""Code similarity of the exercises, for the instructor only: every pair of students, and each against the solution.

Each exercise's function is cut out of its notebook with :mod:`ast`, then normalised: docstrings,
comments, annotations and formatting go (``ast.unparse`` writes one layout), and every name the
function binds itself (its own name, parameters, local variables, loop and comprehension variables)
becomes ``v0, v1, ...`` in order of first appearance, so renaming and reformatting change nothing.
Names it takes from outside (``torch``, ``F``, attributes such as ``.mean``) are kept: they are what
the code does. Two normalised token sequences are compared with :class:`difflib.SequenceMatcher`
(1.0: the same code). A high score is a pointer for a person to read both, never a penalty: short
exercises have few ways to be written, which is why every row carries its token count.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import io
import itertools
import tokenize

FLAG = 0.9  # pairs at or above this (and at least MIN_TOKENS long) are marked for a person to look at
MIN_TOKENS = 12


def function_source(cells: list[str], name: str) -> str | None:
    """The last top-level definition of ``name`` (``def``, ``class`` or ``name = ...``) in the code cells, as source."""
    found = None
    for source in cells:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                found = ast.get_source_segment(source, node)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found = ast.get_source_segment(source, node)
    return found


class _Normalise(ast.NodeTransformer):
    """Docstrings and annotations out; names bound inside the definition renamed by first appearance."""

    def __init__(self, bound: set[str]) -> None:
        self.bound, self.names = bound, {}

    def _name(self, name: str) -> str:
        if name not in self.bound:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_FunctionDef(self, node):
        node.name = self._name(node.name)
        node.returns = None
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arg(self, node):
        node.arg, node.annotation = self._name(node.arg), None
        return node

    def visit_Name(self, node):
        node.id = self._name(node.id)
        return node

    def visit_AnnAssign(self, node):
        self.generic_visit(node)
        return ast.Assign(targets=[node.target], value=node.value or ast.Constant(None), lineno=node.lineno)


def _bound(tree: ast.AST) -> set[str]:
    """Names the code binds itself: definitions, parameters, assignment targets (not builtins or imports' modules)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
    return bound - set(dir(builtins))


def tokens(source: str | None) -> list[str]:
    """The normalised token sequence of one definition (empty when there is none or it does not parse)."""
    if not source:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    tree = ast.fix_missing_locations(_Normalise(_bound(tree)).visit(tree))
    text = ast.unparse(tree)
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.ENCODING}
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            out.append(tok.string)
        elif tok.type in (tokenize.INDENT, tokenize.DEDENT):
            out.append(tokenize.tok_name[tok.type])  # the block structure counts, its width does not
    return out


def similarity(a: list[str], b: list[str]) -> float:
    """1.0 for the same normalised code, near 0 for unrelated code."""
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _is_stub(toks: list[str]) -> bool:
    return "NotImplementedError" in toks  # the untouched student notebook: alike in everyone, nobody's work


def report(submissions: list[tuple[str, str, dict[str, str | None]]], solutions: dict[str, dict[str, str | None]]) -> list[dict]:
    """Rows ``{notebook, exercise, a, b, similarity, tokens, flagged}``, highest first.

    ``submissions``: ``(student, notebook, {exercise: source})``; ``solutions``: ``{notebook: {exercise: source}}``
    (``b`` is then ``"(published solution)"``). Untouched stubs and missing answers are left out.
    """
    by_exercise: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    for student, notebook, sources in submissions:
        for exercise, source in sources.items():
            toks = tokens(source)
            if toks and not _is_stub(toks):
                by_exercise.setdefault((notebook, exercise), []).append((student, toks))
    rows = []
    for (notebook, exercise), answers in by_exercise.items():
        pairs = list(itertools.combinations(answers, 2))
        reference = tokens(solutions.get(notebook, {}).get(exercise))
        if reference:
            pairs += [(answer, ("(published solution)", reference)) for answer in answers]
        for (a, ta), (b, tb) in pairs:
            value = similarity(ta, tb)
            size = min(len(ta), len(tb))
            rows.append({"notebook": notebook, "exercise": exercise, "a": a, "b": b, "similarity": round(value, 3),
                         "tokens": size, "flagged": value >= FLAG and size >= MIN_TOKENS})
    rows.sort(key=lambda r: (-r["similarity"], -r["tokens"], r["notebook"], r["exercise"], r["a"], r["b"]))
    return rows
