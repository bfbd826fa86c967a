"""The command line, ``labsupport-grade``: argparse subcommands ``grade`` (the default), ``self``, ``gradescope``,
``gradebook`` and the internal ``gradescope-run``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import config, gradescope
from . import __doc__ as DOC
from .reports import merge_gradebook
from .run import grade, gradescope_run, self_check
from .sandbox import KINDS
from .settings import Settings
from .submissions import load_exercises

COMMANDS = ("grade", "self", "gradescope", "gradebook", "gradescope-run")


def _settings_arguments(p: argparse.ArgumentParser, sandbox: bool = True) -> None:
    p.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds per notebook (default %(default)s)")
    p.add_argument("--cell-timeout", type=float, default=Settings.cell_timeout, help="seconds per cell (default %(default)s)")
    p.add_argument("--check-timeout", type=float, default=Settings.check_timeout, help="seconds per exercise check (default %(default)s)")
    p.add_argument("--max-output", type=int, default=Settings.max_output, help="characters of output kept per cell (default %(default)s)")
    p.add_argument("--memory-limit", type=int, default=Settings.memory_limit,
                   help="MB of data memory per kernel and per check process (RLIMIT_DATA; 0: none; default %(default)s)")
    p.add_argument("--mode", choices=config.MODES, default=Settings.mode, help="the course's mode in the graded kernels (default %(default)s)")
    p.add_argument("--run-all", action="store_true", help="also run the cells after the last exercise")
    if sandbox:
        p.add_argument("--sandbox", choices=KINDS, default=Settings.sandbox,
                       help="where each notebook runs: bwrap (bubblewrap), unshare (root only: namespaces and the user nobody), "
                            "none, or auto, the first of bwrap and unshare that works here (default %(default)s)")
        p.add_argument("--no-sandbox", dest="sandbox", action="store_const", const="none",
                       help="grade without a sandbox: only for a class you trust (a warning; grades.json records it)")


def _settings(args, threads: int) -> Settings:
    if args.memory_limit < 0:
        raise SystemExit("--memory-limit must be 0 (no limit) or a number of MB")
    return Settings(timeout=args.timeout, cell_timeout=args.cell_timeout, check_timeout=args.check_timeout, mode=args.mode,
                    run_all=args.run_all, max_output=args.max_output, threads=threads, memory_limit=args.memory_limit,
                    sandbox=getattr(args, "sandbox", Settings.sandbox))


def _parser() -> argparse.ArgumentParser:
    cores = config.cores()
    top = argparse.ArgumentParser(prog="labsupport-grade", description=DOC.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("grade", prog="labsupport-grade", description=DOC.split("\n\n")[0] + " (`grade` is the default subcommand)",
                       epilog="Also: `labsupport-grade self NOTEBOOK`, `labsupport-grade gradescope ASSIGNMENT --out autograder.zip`, "
                              "`labsupport-grade gradebook RUN_DIR... --out gradebook.csv`.")
    p.add_argument("submissions", nargs="*", type=Path, help="notebook files, or folders of one student's notebooks each")
    p.add_argument("--self", dest="self_check", type=Path, default=None, metavar="NOTEBOOK",
                   help="students: grade your own notebook exactly as the grader will, and print what you would get")
    p.add_argument("--out", type=Path, default=None, help="folder for grades.csv, grades.json, gradebook.csv, similarity.csv, feedback/ and executed/")
    p.add_argument("--assignment", default=None, help="grade every submission as this notebook (e.g. 03_variational_autoencoders); others score zero")
    p.add_argument("--jobs", type=int, default=min(cores, 8), help=f"notebooks graded at once (default: the number of cores, {min(cores, 8)})")
    _settings_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("self", prog="labsupport-grade self", description="students: grade your own notebook exactly as the grader will")
    p.add_argument("self_check", type=Path, metavar="NOTEBOOK")
    _settings_arguments(p)
    p.add_argument("--quiet", action="store_true", help="(nothing to hide: kept for symmetry)")
    p = sub.add_parser("gradescope", prog="labsupport-grade gradescope", description="write a Gradescope autograder zip for one assignment")
    p.add_argument("assignment")
    p.add_argument("--out", type=Path, default=Path("autograder.zip"))
    p.add_argument("--memory-limit", type=int, default=Settings.memory_limit, help="MB per kernel and check (default %(default)s)")
    p = sub.add_parser("gradebook", prog="labsupport-grade gradebook", description="one LMS gradebook CSV from several grading runs")
    p.add_argument("runs", nargs="+", type=Path, help="--out folders (or grades.json files) of earlier runs")
    p.add_argument("--out", type=Path, default=Path("gradebook.csv"))
    p = sub.add_parser("gradescope-run", prog="labsupport-grade gradescope-run", description="internal: run_autograder inside Gradescope")
    p.add_argument("root", type=Path)
    p.add_argument("--assignment", required=True)
    _settings_arguments(p)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--gradescope-run"]:  # what run_autograder scripts of earlier zips call
        argv[0] = "gradescope-run"
    elif not argv or argv[0] not in COMMANDS:  # `grade` is the default; --help shows its options
        argv.insert(0, "grade")
    args = _parser().parse_args(argv)
    if args.command == "gradescope":
        if args.assignment not in load_exercises():
            raise SystemExit(f"{args.assignment!r} is not a notebook of this course ({', '.join(load_exercises())})")
        print(f"wrote {gradescope.build_zip(args.assignment, args.out, args.memory_limit)}: upload it as the assignment's autograder")
        return 0
    if args.command == "gradebook":
        print(f"wrote {merge_gradebook(args.runs, args.out)}")
        return 0
    if args.command == "gradescope-run":
        return gradescope_run(args.root, args.assignment, _settings(args, config.num_threads()))
    if args.self_check is not None:
        row, text = self_check(args.self_check, _settings(args, config.num_threads()))
        print(text)
        return 1 if "grader-error" in row["status"] else 0
    if not args.submissions or args.out is None:
        raise SystemExit("labsupport-grade: give the submissions and --out (or --self NOTEBOOK to check your own notebook)")
    jobs = max(1, args.jobs)
    s = _settings(args, config.num_threads(default=max(1, config.cores() // jobs)))
    start = time.perf_counter()
    rows = grade(args.submissions, args.out, s, jobs=jobs, assignment=args.assignment, progress=not args.quiet)
    width = max([len(r["student"]) for r in rows] + [7])
    for r in rows:
        print(f"{r['student']:<{width}}  {r['notebook'] or '?':<36} {r['total']:>5g} / {r['max']:<4g} {r['status']}")
    print(f"graded {len(rows)} notebook(s) in {time.perf_counter() - start:.1f} s -> {args.out / 'grades.csv'}")
    if s.sandbox == "none":
        print("warning: graded without a sandbox (--no-sandbox); grades.json records it", file=sys.stderr)
    return 1 if any("grader-error" in r["status"] for r in rows) else 0
