"""Scoring: points per exercise from its verified verdict, and the statuses and problems of a graded notebook's row."""

from __future__ import annotations

from ..verdicts import Verdict
from .kernel import TIME_LIMIT, memory_problem
from .settings import Settings


def score_exercise(e: dict, r: Verdict, memory_limit: int) -> tuple[float, str]:
    """``(score, message)`` of one exercise from its verified verdict ``r`` and its entry ``e`` in exercises.json."""
    message = r.message or "not graded"
    if r.reference:
        names = ", ".join(f"`{n}`" for n in r.reference)
        return 0, (f"0 points: `{e['id']}` uses the course's own answer {names} instead of your own code. "
                   "Write it yourself; torch and the helpers the exercise names are fine.")
    if r.tampered:
        return 0, f"0 points: while it was being checked, {'; '.join(r.tampered)}. Grading code is not the exercise."
    if r.memory:
        return 0, f"0 points: it ran out of memory while it was being checked (the limit is {memory_limit} MB). Last message: {message}"
    if r.passed:
        return e["points"], message
    stages = e.get("stages", {})
    earned = [(k, v) for k, v in stages.items() if k in r.stages]
    if not earned:
        return 0, message
    score = sum(v for _, v in earned)
    parts = ", ".join(f"{k} right (+{v:g})" for k, v in earned)
    return score, f"Partial credit {score:g} / {e['points']:g}: {parts}. The other {e['points'] - score:g} need the whole check to pass: {message}"


def new_row(student: str, path) -> dict:
    return {"student": student, "file": str(path), "notebook": None, "status": [], "problems": [], "exercises": [],
            "cell_errors": [], "truncated_cells": [], "total": 0, "max": 0, "written": [], "by_hand": 0}


def note_run(row: dict, ran: dict, kernel_log: str, s: Settings) -> None:
    """Statuses and problems of the notebook's run (``kernel.execute_notebook``'s result) into ``row``."""
    row["cell_errors"] = [e for e in ran["errors"] if e["ename"] != TIME_LIMIT]
    out_of_memory = [e["cell"] for e in row["cell_errors"] if memory_problem(e["ename"] + " " + e["evalue"])]
    if ran["stopped"] and "kernel died" in ran["stopped"] and memory_problem(kernel_log):
        out_of_memory.append("the kernel")
    if out_of_memory:
        row["status"].append("memory")
        row["problems"].append(f"out of memory (the limit is {s.memory_limit} MB per kernel, --memory-limit) in cell(s) "
                               f"{', '.join(map(str, out_of_memory))}; the exercises saved before still count")
    row["truncated_cells"] = ran["truncated"]
    if row["cell_errors"]:
        row["status"].append("cell-errors")
    if ran["timeouts"] or (ran["stopped"] and "time limit" in ran["stopped"]):
        row["status"].append("timeout")
        row["problems"] += [f"cell {i} was stopped: it ran past its time limit ({s.cell_timeout:g} s per cell, {s.timeout:g} s per notebook)" for i in ran["timeouts"]]
    if ran["stopped"]:
        if "kernel died" in ran["stopped"]:
            row["status"].append("kernel-died")
        row["problems"].append(ran["stopped"])
    if ran["truncated"]:
        row["status"].append("output-truncated")
        row["problems"].append(f"output was cut to {s.max_output} characters in cell(s) {', '.join(map(str, ran['truncated']))}")


def score_row(row: dict, listed: list[dict], results: dict[str, Verdict], s: Settings) -> None:
    """Each listed exercise's points and message into ``row``, then its total and max."""
    for e in listed:
        r = results.get(e["id"]) or Verdict(e["id"])
        if not r.message:
            r.message = "not graded: " + "; ".join(row["problems"]) if row["problems"] else "not graded"
        score, message = score_exercise(e, r, s.memory_limit)
        row["exercises"].append({"number": e["number"], "id": e["id"], "points": e["points"], "score": score,
                                 "passed": score == e["points"], "message": message})
        if r.memory:
            row["status"].append("memory")
    row["total"] = sum(e["score"] for e in row["exercises"])
    row["max"] = sum(e["points"] for e in listed)
