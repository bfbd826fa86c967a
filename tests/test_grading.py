"""The grader (labsupport.grading): real notebooks grade full marks or zero; planted mistakes, endless
loops, crashes, output bombs, redefined checks and broken files each get the right score and message.

Two grading runs serve every test (each is slow-ish: one kernel per notebook): every student notebook
of the course with one solution graded end to end, and a class of tiny hand-made notebooks for
exercise 1 of 00_start_here. The other solutions' saved functions come from nbval's run (conftest.py).
"""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import COURSE, END_TO_END, NBVAL_EXPORTS, _digest, _rows  # course_grades, the session fixture, is there too
from labsupport import course, grading
from labsupport.grading import integrity

ROOT = Path(__file__).resolve().parent.parent
# The tiny notebooks import nothing (a tensor's own methods suffice): each kernel that imports torch costs ~2 s of CPU.
RIGHT = "def normalize_images(images):\n    return images.float().div(255.0).unsqueeze(1)"
CHECK = "from labsupport.checks import check_normalize_images\ncheck_normalize_images(normalize_images)"


def _notebook(path: Path, *cells: str, notebook: str | None = "00_start_here", **extra) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    if notebook is not None:
        nb.metadata["labsupport"] = {"notebook": notebook, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --- the course's own notebooks ----------------------------------------------------------------


def test_manifest_is_what_build_writes(root):
    listed = grading.load_exercises()
    assert sorted(listed) == COURSE
    for name in COURSE:
        nb = nbformat.read(root / "solutions" / f"{name}.ipynb", as_version=4)
        assert listed[name] == [{**{k: e[k] for k in ("number", "id", "points")}, **({"stages": course.STAGE_POINTS[e["id"]]} if e["id"] in course.STAGE_POINTS else {})}
                                for e in course.exercises(nb)]
        assert listed[name], f"{name} has no exercise to grade"


def _assert_full_marks(results: dict, name: str) -> None:
    ids = [e["id"] for e in grading.load_exercises()[name]]
    failed = [(i, results.get(i, {}).get("message", "not checked")) for i in ids if not results.get(i, {}).get("passed")]
    assert not failed, failed


@pytest.mark.parametrize("name", END_TO_END)
def test_solutions_grade_full_marks_end_to_end(course_grades, name):
    code, out, rows = course_grades
    row = rows[f"solutions/{name}"]
    _assert_full_marks({e["id"]: e for e in row["exercises"]}, name)
    assert row["total"] == row["max"] > 0
    assert row["status"] == "ok", row["problems"] + [c["evalue"] for c in row["cell_errors"]]


@pytest.mark.after_notebooks
@pytest.mark.parametrize("name", COURSE)
def test_every_solution_grades_full_marks(name, tmp_path, mnist_available):
    """The grader's checking process passes every exercise function that nbval's run of the solution saved.

    Without that run (e.g. ``pytest tests/test_grading.py`` alone) the solution is graded end to end instead.
    """
    ids = [e["id"] for e in grading.load_exercises()[name]]
    export = NBVAL_EXPORTS / name
    if not export.exists():
        rows = grading.grade([ROOT / "solutions" / f"{name}.ipynb"], tmp_path / "out", grading.Settings(), progress=False)
        _assert_full_marks({e["id"]: e for e in rows[0]["exercises"]}, name)
        return
    missing = [i for i in ids if not (export / f"{i}.pkl").exists()]
    assert not missing, f"nbval's run of {name} saved no function for {missing}: the solution stopped before them"
    _assert_full_marks({i: v.record() for i, v in grading.check_exports(export, ids, grading.Settings(), tmp_path).items()}, name)


@pytest.mark.parametrize("name", COURSE)
def test_every_student_notebook_grades_zero(course_grades, name):
    code, out, rows = course_grades
    row = rows[f"notebooks/{name}"]
    assert row["total"] == 0 and row["max"] == sum(e["points"] for e in grading.load_exercises()[name]) > 0, (row["status"], row["problems"])
    assert all("not written yet" in e["message"] for e in row["exercises"]), [e["message"] for e in row["exercises"]]


def test_course_reports(course_grades):
    code, out, rows = course_grades
    assert code == 0
    with open(out / "grades.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(END_TO_END) + len(COURSE)
    columns = set(table[0])
    for name in set(END_TO_END) | set(COURSE):
        assert {f"{name}:{e['id']}" for e in grading.load_exercises()[name]} <= columns
    for r in table:
        assert float(r["total"]) == (float(r["max"]) if r["student"] == "solutions" else 0)
    student = (out / "feedback" / "notebooks.md").read_text()
    assert "not written yet" in student and "NotImplementedError" in student
    # Written questions: listed for hand grading, never scored by the grader.
    written = grading.load_exercises(kind="written")
    assert sum(map(len, written.values())) >= 1
    for name, questions in written.items():
        if not questions:
            continue
        row = rows[f"notebooks/{name}"]
        assert [q["status"] for q in row["written"]] == ["not answered"] * len(questions), row["written"]
        assert row["by_hand"] == sum(q["points"] for q in questions) and row["total"] == 0
        assert next(r for r in table if r["student"] == "notebooks" and r["notebook"] == name)["by_hand"] == f"{row['by_hand']:g}"
        assert "graded by hand" in student
        assert "(not answered)" in (out / "written" / f"{name}.md").read_text()
    assert (out / "feedback" / "solutions.md").exists()


# --- a class of tiny notebooks with planted mistakes --------------------------------------------

CLASS = {
    "right": [RIGHT],
    "by256": ["def normalize_images(images):\n    return images.float().div(256.0).unsqueeze(1)"],
    "lambda": ["normalize_images = lambda images: (images.float() / 255)[:, None]"],
    "crash_first": ["x = 1 / 0", RIGHT, CHECK],
    "loop_then_right": ["while True:\n    pass", RIGHT],
    "ignores_interrupt": ["import time\nwhile True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass", RIGHT],
    "loop_in_function": ["def normalize_images(images):\n    while True:\n        pass"],
    "exits_in_check": ["def normalize_images(images):\n    import os\n    os._exit(3)"],
    "bomb": ["print('spam ' * 2_000_000)", "for i in range(100_000):\n    print(i)", RIGHT],
    "kernel_dies_later": [RIGHT, "import os\nos._exit(1)", CHECK],
    "cheater": [
        "def normalize_images(images):\n    return images  # wrong",
        "import labsupport.checks as c\nc.check_normalize_images = lambda fn: print('passed')\nc.CheckFailed = Exception\n"
        "class CheckFailed(Exception):\n    pass\n\ndef check_normalize_images(fn):\n    print('passed')",
        "import os\nos.makedirs('labsupport', exist_ok=True)\n"
        "open('labsupport/__init__.py', 'w').write('')\nopen('labsupport/checks.py', 'w').write('def check_normalize_images(fn): pass\\nclass CheckFailed(Exception): pass\\n')",
        "check_normalize_images(normalize_images)",
    ],
    "empty": [],
}


# --- attacks on the grading machine, planted in the same class (the sandbox must stop each) --------

TOKEN = "labsupport-detached-attack"  # in the detached process's command line, to look for it after the run


def _attacks(sub: Path, out: Path, port: int) -> list[str]:
    """A saboteur's cells: each tries one attack and prints what happened (read back from out/executed)."""
    return [
        # 1. rewrite the installed package: every check a no-op, for everyone graded after
        "import glob, os, labsupport\nroot = os.path.dirname(labsupport.__file__)\nresult = []\n"
        "for f in sorted(glob.glob(root + '/**/*.py', recursive=True)) + [root + '/exercises.json']:\n"
        "    try:\n        with open(f, 'a') as fh:\n            fh.write('\\ndef check_normalize_images(fn):\\n    print(\\'passed\\')\\n')\n"
        "        result.append('WROTE ' + f)\n    except OSError as err:\n        result.append(type(err).__name__ + ' ' + str(err.strerror))\n"
        "print('ATTACK package:', sorted(set(result)))",
        # 2. write into --out and the submissions folder directly
        f"result = []\nfor f in ({str(out / 'grades.csv')!r}, {str(out / 'feedback' / 'right.md')!r}, {str(sub / 'evil.ipynb')!r}, {str(sub / 'right.ipynb')!r}):\n"
        "    try:\n        with open(f, 'w') as fh:\n            fh.write('pwned')\n        result.append('WROTE ' + f)\n"
        "    except OSError as err:\n        result.append(type(err).__name__)\nprint('ATTACK write:', result)",
        # 3. a detached process meant to outlive the kernel and write over the grades after the run
        "import subprocess, sys\nloop = ('import sys, time\\nfor i in range(120):\\n    time.sleep(0.5)\\n    for f in sys.argv[2:]:\\n'\n"
        "        '        try:\\n            open(f, \"w\").write(\"pwned\")\\n        except OSError:\\n            pass')\n"
        f"p = subprocess.Popen([sys.executable, '-c', loop, {TOKEN!r}, {str(out / 'grades.csv')!r}, {str(out / 'grades.json')!r}, {str(sub / 'late.ipynb')!r}],\n"
        "                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint('ATTACK detached: started', p.pid)",
        # 4. the network: a listener on this machine
        f"import socket\ntry:\n    with socket.create_connection(('127.0.0.1', {port}), timeout=3) as c:\n        c.sendall(b'hello from a graded notebook\\n')\n"
        "    print('ATTACK network: SENT')\nexcept OSError as err:\n    print('ATTACK network:', type(err).__name__, err)",
        # 5. another student's submission, the class folder, the instructor's home
        f"import os\nresult = []\nfor f in ({str(sub / 'right.ipynb')!r}, {str(sub / 'bob' / '00_start_here.ipynb')!r}):\n"
        "    try:\n        result.append('READ ' + open(f).read()[:20])\n    except OSError as err:\n        result.append(type(err).__name__)\n"
        f"print('ATTACK read:', result, sorted(os.listdir({str(sub)!r})), sorted(os.listdir({str(Path.home())!r})))",
        # 6. kill the grader (its pid, its process group); list the processes it can see
        f"import os, signal\nresult = []\nfor kill, pid in ((os.kill, {os.getpid()}), (os.killpg, {os.getpgid(0)})):\n    try:\n        kill(pid, signal.SIGKILL)\n"
        "        result.append(f'SIGNALLED {pid}')\n    except OSError as err:\n        result.append(type(err).__name__)\n"
        "seen = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint('ATTACK signal:', result, 'pids seen:', seen)",
        # 7. the function itself attacks from inside the checking process, then answers wrong
        "def normalize_images(images):\n    import glob, os, labsupport\n    root = os.path.dirname(labsupport.__file__)\n"
        "    for f in glob.glob(root + '/**/*.py', recursive=True):\n        try:\n            open(f, 'a').write('\\nCheckFailed = Exception\\n')\n"
        "        except OSError:\n            pass\n"
        f"    for f in ({str(out / 'grades.json')!r}, {str(sub / 'evil2.ipynb')!r}):\n        try:\n            open(f, 'w').write('pwned')\n        except OSError:\n            pass\n"
        "    return images.float()",
        CHECK,
    ]


def _running(token: str) -> list[int]:
    """Pids of processes whose command line holds ``token``."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if token.encode() in (p / "cmdline").read_bytes() and int(p.name) != os.getpid():
                    found.append(int(p.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="session")
def class_grades(tmp_path_factory):
    """One grading run over the tiny class, with small time limits; returns (exit code, out, rows, folder).

    The class holds a saboteur (``a_saboteur``, graded first) that attacks the machine, and a wrong answer graded
    after it (``zz_wrong_after``). The run also records the package's hashes and what a listener on 127.0.0.1 heard."""
    sub = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("class_grades")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    for name, cells in {"a_saboteur": _attacks(sub, out, listener.getsockname()[1]), **CLASS,
                        "zz_wrong_after": CLASS["by256"] + [CHECK]}.items():
        _notebook(sub / f"{name}.ipynb", *cells)
    _notebook(sub / "other_assignment.ipynb", RIGHT, notebook="01_supervised_vs_unsupervised")
    _notebook(sub / "no_metadata.ipynb", RIGHT, notebook=None)
    (sub / "corrupt.ipynb").write_text('{"cells": [ {"cell_type": "code", "source": "x = ')
    (sub / "not_a_notebook.ipynb").write_text('{"hello": "world"}')
    (sub / "binary.ipynb").write_bytes(bytes(range(256)))
    folder = sub / "bob"  # a folder = one student's notebooks
    # Points in the submission's own metadata are ignored: the course says 1.
    _notebook(folder / "00_start_here.ipynb", RIGHT, exercises=[{"number": 1, "id": "normalize_images", "points": 100}])
    before, package = _digest(sub), integrity.digest()
    args = [str(p) for p in sorted(sub.glob("*.ipynb"))] + [str(folder), "--out", str(out), "--assignment", "00_start_here",
                                                            "--jobs", "2", "--cell-timeout", "8", "--check-timeout", "4", "--quiet"]
    code = grading.main(args)
    grades = {f: (out / f).read_bytes() for f in ("grades.csv", "grades.json")}
    time.sleep(2)  # the detached process wrote every 0.5 s while it lived
    try:
        heard = listener.accept()[0].recv(1000)
    except BlockingIOError:
        heard = None
    listener.close()
    attack = {"package_before": package, "package_after": integrity.digest(), "heard": heard, "lingering": _running(TOKEN),
              "grades_after": {f: (out / f).read_bytes() for f in grades}, "grades": grades}
    assert _digest(sub) == before, "the grader changed or added files among the submissions"
    return code, out, _rows(out), sub, attack


def _one(class_grades, name):
    return class_grades[2][name if "/" in name else f"{name}/{name}"]


def _message(row) -> str:
    return row["exercises"][0]["message"]


@pytest.mark.parametrize("name", ["right", "lambda", "bob/00_start_here"])
def test_right_answers_get_full_marks(class_grades, name):
    row = _one(class_grades, name)
    assert (row["total"], row["max"], row["status"]) == (1, 1, "ok"), row
    assert "all checks passed" in _message(row)


def test_planted_mistake_gets_zero_and_the_checks_message(class_grades):
    row = _one(class_grades, "by256")
    assert row["total"] == 0 and "divided by 256" in _message(row)


def test_crash_in_a_cell_is_reported_and_later_exercises_still_graded(class_grades):
    row = _one(class_grades, "crash_first")
    assert row["total"] == 1 and row["status"] == "cell-errors"
    assert [(c["cell"], c["ename"]) for c in row["cell_errors"]] == [(1, "ZeroDivisionError")]
    feedback = (class_grades[1] / "feedback" / "crash_first.md").read_text()
    assert "ZeroDivisionError" in feedback and "x = 1 / 0" in feedback


def test_endless_loop_is_stopped_and_the_rest_still_graded(class_grades):
    row = _one(class_grades, "loop_then_right")
    assert row["total"] == 1 and "timeout" in row["status"]
    assert any("cell 1 was stopped" in p for p in row["problems"])


def test_loop_that_ignores_the_interrupt_stops_the_notebook(class_grades):
    row = _one(class_grades, "ignores_interrupt")
    assert row["total"] == 0 and "timeout" in row["status"]
    assert any("ignored the interrupt" in p for p in row["problems"])
    assert "stopped before `normalize_images` was defined" in _message(row)


def test_endless_loop_inside_the_students_function_costs_that_exercise(class_grades):
    row = _one(class_grades, "loop_in_function")
    assert row["total"] == 0 and "took longer than 4 s" in _message(row)


def test_function_that_exits_the_checking_process(class_grades):
    row = _one(class_grades, "exits_in_check")
    assert row["total"] == 0 and "made the checking process exit (exit code 3)" in _message(row)


def test_output_bomb_is_cut(class_grades):
    code, out, rows, sub, _ = class_grades
    row = _one(class_grades, "bomb")
    assert row["total"] == 1 and "output-truncated" in row["status"] and row["truncated_cells"] == [1, 2]
    executed = nbformat.read(out / "executed" / "bomb__bomb.ipynb", as_version=4)
    kept = [sum(len(o.get("text", "")) for o in c.outputs) for c in executed.cells]
    assert max(kept) < grading.Settings.max_output + 200 and kept[0] > grading.Settings.max_output / 2
    assert "[the grader dropped 9" in executed.cells[0].outputs[-1]["text"]


def test_kernel_death_after_the_exercise_keeps_the_grade(class_grades):
    row = _one(class_grades, "kernel_dies_later")
    assert row["total"] == 1 and "kernel-died" in row["status"]


def test_redefining_the_checks_does_not_change_the_grade(class_grades):
    row = _one(class_grades, "cheater")
    assert row["total"] == 0, row
    assert "should be a torch.Tensor" in _message(row) or "channel dimension" in _message(row)


def test_wrong_assignment_unknown_and_empty_notebooks_score_zero(class_grades):
    other = _one(class_grades, "other_assignment")
    assert other["total"] == 0 and other["status"] == "wrong-assignment" and other["notebook"] == "00_start_here"
    assert "01_supervised_vs_unsupervised" in other["problems"][0]
    # Without notebook metadata, --assignment says which notebook it is.
    assert _one(class_grades, "no_metadata")["total"] == 1
    empty = _one(class_grades, "empty")
    assert empty["total"] == 0 and "not defined" in _message(empty)


@pytest.mark.parametrize("name, why", [("corrupt", "not valid JSON"), ("not_a_notebook", "not a Jupyter notebook"), ("binary", "cannot be read")])
def test_broken_files_score_zero_with_a_reason(class_grades, name, why):
    row = _one(class_grades, name)
    assert (row["total"], row["max"], row["status"]) == (0, 1, "invalid")
    assert why in row["problems"][0]


def test_class_reports(class_grades):
    code, out, rows, sub, _ = class_grades
    assert code == 0
    with open(out / "grades.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["student", "notebook", "normalize_images", "total", "max", "by_hand", "status"]
    assert len(table) == len(rows) == len(CLASS) + 8
    assert {r["student"] for r in table} >= {"right", "bob", "corrupt"}
    assert all(r["notebook"] == "00_start_here" for r in table)
    by_student = {r["student"]: r for r in table}
    assert by_student["by256"]["normalize_images"] == "0" and by_student["right"]["normalize_images"] == "1"
    assert "divided by 256" in (out / "feedback" / "by256.md").read_text()


def _attack_outputs(out: Path) -> dict[str, str]:
    """What each of the saboteur's cells printed inside its sandbox: {"package": "...", "write": "...", ...}."""
    executed = nbformat.read(out / "executed" / "a_saboteur__a_saboteur.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    return {line.split(":")[0].split()[1]: line.split(":", 1)[1] for line in text.splitlines() if line.startswith("ATTACK ")}


def test_graded_code_cannot_rewrite_the_installed_package(class_grades):
    code, out, rows, sub, attack = class_grades
    said = _attack_outputs(out)
    assert "WROTE" not in said["package"] and "Read-only file system" in said["package"], said["package"]
    assert attack["package_after"] == attack["package_before"], "the installed labsupport changed during the run"
    # the saboteur gets nothing, and a wrong answer graded after it still scores 0 with the check's own message
    assert _one(class_grades, "a_saboteur")["total"] == 0
    after = _one(class_grades, "zz_wrong_after")
    assert after["total"] == 0 and "divided by 256" in _message(after), after


def test_graded_code_cannot_write_the_grades_or_the_submissions(class_grades):
    code, out, rows, sub, attack = class_grades
    said = _attack_outputs(out)
    assert "WROTE" not in said["write"] and said["write"].count("OSError") + said["write"].count("Error") >= 4, said["write"]
    assert "started" in said["detached"]
    assert attack["lingering"] == [], "a process started by a graded notebook outlived its sandbox"
    assert attack["grades_after"] == attack["grades"] and b"pwned" not in attack["grades"]["grades.csv"]
    assert not (sub / "evil.ipynb").exists() and not (sub / "late.ipynb").exists() and not (sub / "evil2.ipynb").exists()
    assert "pwned" not in (out / "feedback" / "right.md").read_text()


def test_graded_code_has_no_network(class_grades):
    said = _attack_outputs(class_grades[1])
    assert "SENT" not in said["network"] and ("refused" in said["network"] or "unreachable" in said["network"]), said["network"]
    assert class_grades[4]["heard"] is None, class_grades[4]["heard"]


def test_graded_code_cannot_read_other_submissions_or_the_instructors_home(class_grades):
    said = _attack_outputs(class_grades[1])
    assert "READ" not in said["read"] and said["read"].count("FileNotFoundError") == 2, said["read"]
    assert "] [] [" in said["read"], said["read"]  # the class folder looks empty


def test_graded_code_cannot_signal_the_grader(class_grades):
    code, out, rows, sub, attack = class_grades
    said = _attack_outputs(out)
    assert "SIGNALLED" not in said["signal"] and said["signal"].count("ProcessLookupError") == 2, said["signal"]
    assert os.getpid() not in eval(said["signal"].split("pids seen:")[1]), said["signal"]  # it sees its own processes only
    assert code == 0 and len(rows) == len(CLASS) + 8  # the grader finished, every row written


def test_no_sandbox_is_refused_unless_asked_for(tmp_path, monkeypatch, capsys):
    from labsupport.grading import sandbox

    _notebook(tmp_path / "s" / "x.ipynb", RIGHT)
    (tmp_path / "s" / "broken.ipynb").write_text("{")
    monkeypatch.setattr(sandbox, "works", lambda kind: kind == "none")
    with pytest.raises(SystemExit, match="apt-get install bubblewrap.*--no-sandbox"):
        grading.main([str(tmp_path / "s" / "x.ipynb"), "--out", str(tmp_path / "o"), "--quiet"])
    assert not (tmp_path / "o" / "grades.csv").exists()
    # --no-sandbox grades (here a broken file: no kernel needed), warns, and grades.json records it
    assert grading.main([str(tmp_path / "s" / "broken.ipynb"), "--out", str(tmp_path / "o"), "--quiet", "--no-sandbox"]) == 0
    assert "--no-sandbox" in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "grades.json").read_text())
    assert report["settings"]["sandbox"] == "none" and "warning" in report["sandbox"]


def test_a_changed_package_stops_the_run_naming_the_file(tmp_path, monkeypatch):
    """Defence in depth, shown on a copy of the package that an unsandboxed notebook rewrites: the grader stops
    before checking, names the file, and writes no grades."""
    from labsupport.grading import run

    fake = tmp_path / "installed" / "labsupport"
    shutil.copytree(integrity.PACKAGE, fake, ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
    hashes = integrity.Hashes(fake)
    assert hashes.changed() == []
    monkeypatch.setattr(run.integrity, "Hashes", lambda: hashes)
    _notebook(tmp_path / "s" / "x.ipynb", f"open({str(fake / 'checking.py')!r}, 'a').write('# changed')", RIGHT)
    with pytest.raises(integrity.Tampered, match="labsupport/checking.py was changed"):
        grading.main([str(tmp_path / "s" / "x.ipynb"), "--out", str(tmp_path / "o"), "--quiet", "--no-sandbox"])
    assert not (tmp_path / "o" / "grades.csv").exists() and not (tmp_path / "o" / "grades.json").exists()
    (fake / "new.py").write_text("")
    assert "labsupport/new.py was added" in hashes.changed()


@pytest.fixture(scope="session")
def fallback_grades(tmp_path_factory):
    """The fallback where bwrap cannot run (forced with --sandbox unshare): the saboteur, a right and a wrong answer."""
    sub, out = tmp_path_factory.mktemp("fallback_submissions"), tmp_path_factory.mktemp("fallback_grades")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    for name, cells in {"a_saboteur": _attacks(sub, out, listener.getsockname()[1]), "right": CLASS["right"], "zz_wrong_after": CLASS["by256"]}.items():
        _notebook(sub / f"{name}.ipynb", *cells)
    package = integrity.digest()
    code = grading.main([str(p) for p in sorted(sub.glob("*.ipynb"))] + ["--out", str(out), "--jobs", "2", "--sandbox", "unshare", "--quiet",
                                                                         "--cell-timeout", "8", "--check-timeout", "8"])
    time.sleep(1)
    try:
        heard = listener.accept()[0].recv(1000)
    except BlockingIOError:
        heard = None
    listener.close()
    return code, out, _rows(out), sub, {"package_before": package, "package_after": integrity.digest(), "heard": heard, "lingering": _running(TOKEN)}


@pytest.mark.skipif(os.geteuid() != 0, reason="the unshare fallback is for a grader running as root")
def test_the_unshare_fallback_stops_the_same_attacks(fallback_grades):
    code, out, rows, sub, attack = fallback_grades
    assert code == 0 and json.loads((out / "grades.json").read_text())["settings"]["sandbox"] == "unshare"
    said = _attack_outputs(out)
    assert "WROTE" not in said["package"] and attack["package_after"] == attack["package_before"], said["package"]
    assert "WROTE" not in said["write"] and attack["lingering"] == [] and not list(sub.glob("evil*")), said["write"]
    assert "SENT" not in said["network"] and attack["heard"] is None, said["network"]
    assert "READ" not in said["read"] and "SIGNALLED" not in said["signal"], (said["read"], said["signal"])
    assert "] [] [" in said["read"], said["read"]  # the class folder looks empty
    assert (rows["right/right"]["total"], rows["right/right"]["status"]) == (1, "ok"), rows["right/right"]
    assert rows["zz_wrong_after/zz_wrong_after"]["total"] == 0 and "divided by 256" in rows["zz_wrong_after/zz_wrong_after"]["exercises"][0]["message"]
    assert rows["a_saboteur/a_saboteur"]["total"] == 0


def test_unknown_assignment_without_option(tmp_path):
    """Without --assignment a notebook names its assignment; an unknown one is reported, not fatal."""
    _notebook(tmp_path / "s" / "x.ipynb", "x = 1", notebook="99_not_in_this_course")
    nb, problem = grading.read_notebook(tmp_path / "s" / "x.ipynb")
    assert problem is None
    name, problem = grading.identify(nb, grading.load_exercises(), None)
    assert name == "99_not_in_this_course" and problem.startswith("unknown-assignment")
    _notebook(tmp_path / "s" / "y.ipynb", "x = 1", notebook=None)
    name, problem = grading.identify(grading.read_notebook(tmp_path / "s" / "y.ipynb")[0], grading.load_exercises(), None)
    assert name is None and "--assignment" in problem


def test_who_is_who(tmp_path):
    """A file is its stem's, or its folder's when it keeps the course's name; a folder of folders is a class."""
    course_file = _notebook(tmp_path / "class" / "alice" / "00_start_here.ipynb", "x = 1")
    _notebook(tmp_path / "class" / "bob" / "part" / "mine.ipynb", "x = 1")
    (tmp_path / "class" / "bob" / ".ipynb_checkpoints").mkdir()
    _notebook(tmp_path / "class" / "bob" / ".ipynb_checkpoints" / "mine-checkpoint.ipynb", "x = 1")
    loose = _notebook(tmp_path / "carol.ipynb", "x = 1")
    found = grading.find_submissions([tmp_path / "class", course_file, loose], grading.load_exercises())
    assert [(st, f.name) for st, f in found] == [("alice", "00_start_here.ipynb"), ("bob", "mine.ipynb"),
                                                 ("alice", "00_start_here.ipynb"), ("carol", "carol.ipynb")]


def test_command_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "labsupport.grading", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--jobs" in res.stdout and "--assignment" in res.stdout
    with pytest.raises(SystemExit, match="not a notebook of this course"):
        grading.main([str(tmp_path), "--out", str(tmp_path / "o"), "--assignment", "nope"])
    with pytest.raises(SystemExit, match="inside the submissions folder"):
        grading.main([str(tmp_path), "--out", str(tmp_path / "grades")])
