"""Grade completed student notebooks: each runs in a fresh kernel in its own sandbox, then its exercises are
checked in a clean process in a sandbox too.

    labsupport-grade SUBMISSIONS... --out DIR [--assignment NAME] [--jobs N] [--memory-limit MB] [--no-sandbox]
    labsupport-grade --self NOTEBOOK                       # a student's check before submitting
    labsupport-grade gradescope ASSIGNMENT --out autograder.zip
    labsupport-grade gradebook RUN_DIR... --out gradebook.csv
    python -m labsupport.grading SUBMISSIONS... --out DIR

A submission is a notebook file, or a folder holding one student's notebooks (the folder name is the
student); a folder holding only folders is a class, one student per folder. For each notebook:

1. Which assignment it answers comes from its metadata (``metadata.labsupport.notebook``, written by
   ``python -m labsupport.course build``); its exercise ids, points and partial-credit stages come from
   the course's own list, ``labsupport/exercises.json``, never from the submission (:mod:`.submissions`).
2. A copy runs in a fresh kernel in a temporary folder, inside a sandbox made for that notebook
   (:mod:`.sandbox`: read-only system, no network, its own process tree, no view of the submissions,
   ``--out`` or the instructor's home), in grading mode unless ``--mode``, with a time limit per cell
   and per notebook and a memory limit (``RLIMIT_DATA``); errors do not stop it, huge outputs are cut.
   Right after each cell that defines an exercise or calls its check, the kernel saves the exercise's
   function (cloudpickle). Execution stops after the last such cell (``--run-all`` runs the rest too)
   (:mod:`.kernel`).
3. :mod:`labsupport.checking`, a new process in a sandbox of its own, imports ``labsupport.checks``
   afresh and checks each saved function in its own forked child, which watches for the course's own
   answers and for patches, and signs its verdict (:class:`labsupport.verdicts.Verdict`) with that
   exercise's key. Before each checking run, the installed course's hashes are verified
   (:mod:`.integrity`): a change stops the run and no grade is written.
4. :mod:`.scoring` turns verdicts into points (partial credit per stage); :mod:`.reports` writes
   ``DIR/grades.csv``, ``DIR/gradebook.csv``, ``DIR/grades.json`` (with every check message and cell
   error, the sandbox used, and an instructor-only similarity report), ``DIR/similarity.csv``,
   ``DIR/feedback/<student>.md``, ``DIR/written/`` and the executed notebooks in ``DIR/executed/``.

:mod:`.run` ties the phases together (a class, the self check, Gradescope's run); :mod:`.cli` is the
command line. What the sandbox protects and what it does not: README.md, section "Grading".
"""

from .integrity import Hashes, Tampered
from .kernel import EXPORT, check_exports, exports_after
from .reports import merge_gradebook, similarity_report, write_gradebook, write_reports
from .run import grade, grade_notebook, gradescope_run, self_check
from .sandbox import Sandbox
from .scoring import score_exercise
from .settings import EXERCISES, PACKAGE, Settings
from .submissions import find_submissions, identify, load_exercises, read_notebook, written_answers
from .cli import main  # noqa: E402  (last: it reads this module's docstring)

__all__ = ["EXERCISES", "EXPORT", "PACKAGE", "Hashes", "Sandbox", "Settings", "Tampered", "check_exports", "exports_after",
           "find_submissions", "grade", "grade_notebook", "gradescope_run", "identify", "load_exercises", "main", "merge_gradebook",
           "read_notebook", "score_exercise", "self_check", "similarity_report", "write_gradebook", "write_reports", "written_answers"]
