"""Grading for a real course: the student's own work only, unforgeable verdicts, partial credit, memory limits,
similarity, the LMS gradebook, Gradescope's autograder and the student's self check.

One grading run (``real_class``) serves most tests: tiny hand-made notebooks of four assignments, each
planting one case (an alias of the course's answer, a wrapper, functools.partial, a forger, a copied
solution, a renamed copy, memory bombs in a cell and in a function, honest answers written otherwise).
"""

import csv
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import _rows
from labsupport import course, grading, similarity

ROOT = Path(__file__).resolve().parent.parent
MEMORY_MB = 1536  # a few hundred MB above what a kernel or a checking process holds with torch imported (~0.9 GB here)

SOLUTION_00 = "import torch\n\ndef normalize_images(images: torch.Tensor) -> torch.Tensor:\n    \"\"\"doc\"\"\"\n    return images.float().div(255.0).unsqueeze(1)"
RENAMED_00 = "def normalize_images( batch ):\n    # my own work, honest\n    return batch.float( ).div( 255.0 ).unsqueeze(\n        1 )"
HONEST_00 = ("import torch\n\ndef normalize_images(imgs):\n"
             "    scale = torch.nn.Parameter(torch.ones(()))  # an honest answer may take a torch.optim step: its first one\n"
             "    opt = torch.optim.SGD([scale], lr=0.0)  # imports torch._dynamo, which rebinds torch.manual_seed: not tampering\n"
             "    (scale * 0).backward()\n    opt.step()\n"
             "    as_float = imgs.to(torch.float32)\n    scaled = as_float / 255 * scale.detach()\n    return scaled[:, None, :, :]")
HONEST_04 = ("import torch\nimport torch.nn.functional as F\n\n"
             "def discriminator_loss(real_logits, fake_logits):\n    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()\n\n"
             "def generator_loss(fake_logits):\n    return -F.logsigmoid(fake_logits).mean()")
FORGER_04 = '''import json, os

def discriminator_loss(real_logits, fake_logits):
    fake = {"passed": True, "message": "passed", "stages": [], "reference": [], "tampered": [], "memory": False, "mac": "0" * 64}
    lines = [json.dumps({**fake, "id": i}) for i in ("discriminator_loss", "generator_loss")]
    lines.append(json.dumps({"event": "done", "id": "generator_loss", "lines": lines, "exit": 0, "timeout": False}))
    for fd in range(3, 40):  # every channel it can find: its own pipe, the checking process's stdout, files
        try:
            os.write(fd, ("\\n".join(lines) + "\\n").encode())
        except OSError:
            pass
    try:
        with open(f"/proc/{os.getppid()}/fd/1", "w") as out:
            out.write("\\n".join(lines) + "\\n")
    except OSError:
        pass
    print("\\u2713 discriminator_loss: all checks passed.")
    os._exit(0)'''
BOMB = ("import torch\n\ndef grow():\n    keep = []\n    for step in range(400):  # 100 MB a step, far past the limit\n"
        "        keep.append(torch.ones(25_000_000))\n\ngrow()")
ROOM = "import torch\nroom = torch.ones(50_000_000)  # 200 MB: fits only if the grader gave the bomb's memory back\ndel room"
# the same bomb, but with the kernel's data padded first so that the failing 100 MB block leaves only about 100 kB
# of room: without the grader's reserve, IPython died while reporting the error in about one run in five
TIGHT = ("import resource, torch\n\ndef data():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmData')).split()[1]) * 1024\n\n"
         "limit = resource.getrlimit(resource.RLIMIT_DATA)[0]\nprobe = [torch.ones(25_000_000)]\nbefore = data()\nprobe.append(torch.ones(25_000_000))\n"
         "block = data() - before\ndel probe\npad = torch.empty(max(0, (limit - data()) % block - 100_000) // 4)")
CONV = "def conv_out(size, kernel, stride=1, padding=0):\n    return (size + 2 * padding - kernel) // stride + 1"
CONV_T = "def conv_transpose_out(size, kernel, stride=1, padding=0, output_padding=0):\n    return (size - 1) * stride - 2 * padding + kernel + output_padding"

CLASS = {  # student: (assignment, cells)
    "copied": ("00_start_here", [SOLUTION_00]),
    "renamed": ("00_start_here", [RENAMED_00]),
    "honest": ("00_start_here", [HONEST_00]),
    "alias": ("04_generative_adversarial_networks", ["from labsupport.train import gan_d_loss as discriminator_loss"]),
    "wrapper": ("04_generative_adversarial_networks", ["import labsupport.losses as L\n\ndef discriminator_loss(r, f):\n    return L.gan_d_loss(r, f)\n\n"
                                                       "def generator_loss(fake_logits):\n    from labsupport.train import gan_g_loss\n    return 1.0 * gan_g_loss(fake_logits)"]),
    "partial": ("04_generative_adversarial_networks", ["import functools\nfrom labsupport import losses\ndiscriminator_loss = functools.partial(losses.gan_d_loss)"]),
    "forger": ("04_generative_adversarial_networks", [FORGER_04]),
    "honest04": ("04_generative_adversarial_networks", [HONEST_04]),
    "blinder": ("04_generative_adversarial_networks", ["import sys\nfrom labsupport import losses\n\ndef discriminator_loss(r, f):\n"
                                                       "    sys.setprofile(None)  # hide the call below from the grader's watch\n    return losses.gan_d_loss(r, f)"]),
    "patcher": ("00_start_here", ["def normalize_images(images):\n    import labsupport.checks as c\n"
                                  "    c.close = lambda *a, **k: True  # make every comparison pass\n    return images.float().unsqueeze(1)"]),
    "kl_detached": ("03_variational_autoencoders", ["def kl_divergence(mu, logvar):\n"
                                                    "    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).detach()"]),
    "kl_mean": ("03_variational_autoencoders", ["def kl_divergence(mu, logvar):\n"
                                                "    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(1)"]),
    "bomb_cell": ("04_generative_adversarial_networks", [CONV, BOMB, ROOM, CONV_T]),
    "bomb_tight": ("04_generative_adversarial_networks", [CONV, TIGHT, BOMB, ROOM, CONV_T]),
    "bomb_check": ("04_generative_adversarial_networks", [CONV, "import torch\n\ndef conv_transpose_out(size, kernel, stride=1, padding=0, output_padding=0):\n"
                                                                 "    keep = []\n    while True:\n        keep.append(torch.ones(25_000_000))"]),
}


def _write(path: Path, notebook: str, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["labsupport"] = {"notebook": notebook}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def real_class(tmp_path_factory):
    """One grading run of the whole planted class; returns (exit code, out folder, rows by student)."""
    sub = tmp_path_factory.mktemp("real_submissions")
    for student, (notebook, cells) in CLASS.items():
        _write(sub / f"{student}.ipynb", notebook, cells)
    out = tmp_path_factory.mktemp("real_grades")
    code = grading.main([str(p) for p in sorted(sub.glob("*.ipynb"))] + ["--out", str(out), "--jobs", "2", "--quiet", "--memory-limit", str(MEMORY_MB),
                                                                        "--cell-timeout", "30", "--check-timeout", "20"])
    return code, out, {r["student"]: r for r in _rows(out).values()}


def _ex(rows, student, exercise):
    return next(e for e in rows[student]["exercises"] if e["id"] == exercise)


# --- 1. the student's own work only ------------------------------------------------------------


@pytest.mark.parametrize("student", ["alias", "wrapper", "partial"])
def test_the_courses_own_answer_scores_zero_and_is_named(real_class, student):
    e = _ex(real_class[2], student, "discriminator_loss")
    assert e["score"] == 0 and not e["passed"], e
    assert "labsupport.losses.gan_d_loss" in e["message"] and "your own code" in e["message"], e["message"]


def test_a_call_made_through_labsupport_train_is_named_too(real_class):
    e = _ex(real_class[2], "wrapper", "generator_loss")
    assert e["score"] == 0 and "labsupport.losses.gan_g_loss" in e["message"], e["message"]


def test_honest_answers_written_otherwise_get_full_marks_and_no_flag(real_class):
    code, out, rows = real_class
    answered = {"honest": ["normalize_images"], "honest04": ["discriminator_loss", "generator_loss"],
                "renamed": ["normalize_images"], "copied": ["normalize_images"]}
    for student, ids in answered.items():
        written = [e for e in rows[student]["exercises"] if e["id"] in ids]
        assert len(written) == len(ids) and all(e["score"] == e["points"] > 0 for e in written), rows[student]["exercises"]
        assert rows[student]["status"] == "ok", rows[student]
        assert all("course's own answer" not in e["message"] and "0 points" not in e["message"] for e in written)


# --- 2. verdicts the student's code cannot write --------------------------------------------------


def test_forged_verdicts_earn_nothing_for_any_exercise(real_class):
    row = real_class[2]["forger"]
    assert row["total"] == 0, row["exercises"]
    assert "did not sign" in _ex(real_class[2], "forger", "discriminator_loss")["message"]
    assert "not defined" in _ex(real_class[2], "forger", "generator_loss")["message"]


@pytest.mark.parametrize("student, why", [("blinder", "sys.setprofile, which would blind the grader's watch"),
                                          ("patcher", "it changed labsupport.checks.close while it was being checked")])
def test_patching_the_checker_or_blinding_the_watch_scores_zero(real_class, student, why):
    e = real_class[2][student]["exercises"][0]
    assert e["score"] == 0 and why in e["message"], e["message"]


# --- 4. partial credit ----------------------------------------------------------------------------


def test_partial_credit_per_stage_with_a_message_that_says_what_earned_what(real_class):
    stages = {e["id"]: e.get("stages") for e in grading.load_exercises()["03_variational_autoencoders"]}
    assert stages["kl_divergence"] == course.STAGE_POINTS["kl_divergence"] and stages["reparameterize"] is None
    detached = _ex(real_class[2], "kl_detached", "kl_divergence")
    assert detached["score"] == 0.75 and not detached["passed"]
    assert "Partial credit 0.75 / 1: shape right (+0.25), values right (+0.5)" in detached["message"] and "gradients" in detached["message"]
    mean = _ex(real_class[2], "kl_mean", "kl_divergence")
    assert mean["score"] == 0.25 and "shape right (+0.25)." in mean["message"] and "mean over the latent dimensions" in mean["message"]
    assert _ex(real_class[2], "kl_mean", "reparameterize")["score"] == 0  # all-or-nothing exercises stay so
    assert real_class[2]["kl_detached"]["total"] == 0.75


# --- 5. memory limits ------------------------------------------------------------------------------


def test_a_cell_that_grows_past_the_memory_limit_keeps_the_marks_before(real_class):
    row = real_class[2]["bomb_cell"]
    assert "memory" in row["status"].split(";"), row
    assert _ex(real_class[2], "bomb_cell", "conv_out")["score"] == 1
    assert _ex(real_class[2], "bomb_cell", "conv_transpose_out")["score"] == 1  # the kernel survived: the cells after still count
    assert [c["cell"] for c in row["cell_errors"]] == [2], row["cell_errors"]
    assert "allocate" in row["cell_errors"][0]["evalue"]
    assert any(f"limit is {MEMORY_MB} MB" in p for p in row["problems"]), row["problems"]


def test_a_cell_that_fills_memory_to_the_last_kilobytes_does_not_kill_the_kernel(real_class):
    row = real_class[2]["bomb_tight"]
    assert "memory" in row["status"].split(";") and "kernel-died" not in row["status"], (row["status"], row["problems"])
    assert [c["cell"] for c in row["cell_errors"]] == [3], row["cell_errors"]
    assert _ex(real_class[2], "bomb_tight", "conv_transpose_out")["score"] == 1


def test_a_function_that_grows_past_the_memory_limit_scores_zero(real_class):
    row = real_class[2]["bomb_check"]
    assert "memory" in row["status"].split(";"), row
    e = _ex(real_class[2], "bomb_check", "conv_transpose_out")
    assert e["score"] == 0 and "ran out of memory" in e["message"], e["message"]
    assert _ex(real_class[2], "bomb_check", "conv_out")["score"] == 1


# --- 3. similarity, instructor only; the gradebook ----------------------------------------------


def test_similarity_catches_copies_and_renamed_copies_not_honest_answers(real_class):
    code, out, rows = real_class
    with open(out / "similarity.csv") as f:
        table = list(csv.DictReader(f))
    pair = {(r["a"], r["b"], r["exercise"]): r for r in table}
    sol = "(published solution)"
    assert float(pair[("copied", sol, "normalize_images")]["similarity"]) == 1.0 and pair[("copied", sol, "normalize_images")]["flagged"] == "True"
    assert float(pair[("renamed", sol, "normalize_images")]["similarity"]) == 1.0 and pair[("renamed", sol, "normalize_images")]["flagged"] == "True"
    assert float(pair[("copied", "renamed", "normalize_images")]["similarity"]) == 1.0
    honest = [r for r in table if "honest" in (r["a"], r["b"])]
    assert honest and all(float(r["similarity"]) < similarity.FLAG and r["flagged"] == "False" for r in honest), honest
    assert [float(r["similarity"]) for r in table] == sorted((float(r["similarity"]) for r in table), reverse=True)
    report = json.loads((out / "grades.json").read_text())
    assert report["instructor_only"]["similarity"][0]["similarity"] == 1.0
    assert all("similar" not in json.dumps(r) for r in report["submissions"])
    for fb in (out / "feedback").glob("*.md"):  # never in a student's feedback
        assert "similar" not in fb.read_text().lower() and "published solution" not in fb.read_text()


def test_normalised_tokens_ignore_names_comments_and_layout():
    a = similarity.tokens(similarity.function_source([SOLUTION_00], "normalize_images"))
    b = similarity.tokens(similarity.function_source(["x = 1", RENAMED_00], "normalize_images"))
    c = similarity.tokens(similarity.function_source([HONEST_00], "normalize_images"))
    assert a == b and "torch" in c and "float" in a
    assert similarity.similarity(a, c) < 0.6 and similarity.similarity(a, []) == 0.0
    assert similarity.function_source(["def other(): pass"], "normalize_images") is None


def test_gradebook_has_one_row_per_student_and_one_column_per_assignment(real_class, tmp_path):
    code, out, rows = real_class
    with open(out / "gradebook.csv") as f:
        book = list(csv.DictReader(f))
    assert sorted(r["student"] for r in book) == sorted(CLASS)
    assert list(book[0])[1:] == [f"{n} ({sum(e['points'] for e in grading.load_exercises()[n]):g} points)" for n in
                                 sorted({a for a, _ in CLASS.values()})] + ["total"]
    by = {r["student"]: r for r in book}
    assert float(by["honest04"]["total"]) == 2 and float(by["kl_detached"]["total"]) == 0.75
    merged = grading.merge_gradebook([out, out / "grades.json"], tmp_path / "book.csv")
    assert len(list(csv.DictReader(merged.open()))) == len(CLASS)
    with pytest.raises(SystemExit, match="no grades.json"):
        grading.merge_gradebook([tmp_path], tmp_path / "x.csv")


# --- 6. Gradescope, 7. the student's self check ---------------------------------------------------


GRADESCOPE_TEST = {"name": str, "score": (int, float), "max_score": (int, float), "status": str, "output": str, "visibility": str}


def test_gradescope_zip_runs_end_to_end_and_results_json_validates(tmp_path):
    zip_path = tmp_path / "autograder.zip"
    assert grading.main(["gradescope", "00_start_here", "--out", str(zip_path), "--memory-limit", "3000"]) == 0
    root = tmp_path / "autograder"  # what Gradescope builds: source/ (the zip), submission/ (the student's upload), results/
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        z.extractall(root / "source")
    assert {"setup.sh", "run_autograder", "pyproject.toml", "labsupport/grading/__init__.py", "labsupport/grading/sandbox.py", "labsupport/exercises.json"} <= set(names)
    for f in ("setup.sh", "run_autograder"):
        os.chmod(root / "source" / f, 0o755)
    results_file, checks = root / "results" / "results.json", root / "source" / "labsupport" / "checking.py"
    source = checks.read_bytes()
    # The student's code tries to give itself full marks: rewrite the course it is graded with, and results.json
    # from a detached process meant to write after the grader has finished. The sandbox hides ROOT from it.
    attack = (f"import subprocess, sys\nfor f in ({str(checks)!r}, {str(results_file)!r}):\n    try:\n        open(f, 'a').write('x')\n"
              "        print('WROTE', f)\n    except OSError as err:\n        print(type(err).__name__)\n"
              "loop = 'import sys, time\\nfor i in range(40):\\n    time.sleep(0.25)\\n    try:\\n        open(sys.argv[1], \"w\").write(\"pwned\")\\n    except OSError:\\n        pass'\n"
              f"subprocess.Popen([sys.executable, '-c', loop, {str(results_file)!r}], start_new_session=True)")
    _write(root / "submission" / "my_work.ipynb", "00_start_here",
           [attack, "import torch\n\ndef normalize_images(images):\n    return images.float().div(256.0).unsqueeze(1)"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([str(root / "source" / "run_autograder"), str(root)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    time.sleep(1.5)  # the detached process would have written by now
    assert checks.read_bytes() == source
    assert '"sandbox": "bwrap"' in run.stdout or '"sandbox": "unshare"' in run.stdout, run.stdout
    results = json.loads(results_file.read_text())
    assert isinstance(results["score"], (int, float)) and isinstance(results["execution_time"], (int, float)) and results["execution_time"] >= 1
    assert results["tests"], results
    for t in results["tests"]:
        assert all(isinstance(t[k], kind) for k, kind in GRADESCOPE_TEST.items()), t
        assert t["status"] in ("passed", "failed") and t["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
        assert 0 <= t["score"] <= t["max_score"]
    [test] = results["tests"]
    assert (test["name"], test["score"], test["max_score"], test["status"]) == ("Exercise 1: normalize_images", 0, 1, "failed")
    assert "divided by 256" in test["output"]
    assert results["score"] == sum(t["score"] for t in results["tests"]) == 0
    assert "similar" not in json.dumps(results)


def test_self_check_prints_what_the_grader_gives_in_a_students_words(tmp_path, capsys):
    path = _write(tmp_path / "mine.ipynb", "03_variational_autoencoders", CLASS["kl_detached"][1])
    assert grading.main(["--self", str(path), "--quiet"]) == 0
    text = capsys.readouterr().out
    points = sum(e["points"] for e in grading.load_exercises()["03_variational_autoencoders"])
    assert f"Your notebook mine.ipynb (03_variational_autoencoders) would get 0.75 of {points:g} points." in text
    assert "Exercise 2 (kl_divergence): 0.75 / 1 points, partly done." in text and "Partial credit 0.75 / 1" in text
    assert "Exercise 1 (reparameterize): 0 / 1 points, not yet." in text
    with pytest.raises(SystemExit, match="no such notebook"):
        grading.main(["--self", str(tmp_path / "missing.ipynb")])


# --- 8. grading mode --------------------------------------------------------------------------------


def test_grading_mode_is_read_in_config_and_reaches_the_kernels():
    from labsupport import config

    code = "from labsupport import config; print(config.MODE, config.FAST, config.pick(1, 2), config.pick(1, 2, grading=3))"
    for mode, want in (("grading", "grading True 2 3"), ("fast", "fast True 2 2"), ("normal", "normal False 1 1")):
        res = subprocess.run([sys.executable, "-c", code], env=config.environment(mode=mode), capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.stdout.split() == want.split(), (mode, res.stderr[-2000:])
    assert grading.Settings().mode == "grading"
    with pytest.raises(ValueError, match="mode must be one of"):
        config.environment(mode="quick")
