"""One exercise's verdict: what the checking process (``labsupport.checking``) signs and the grader reads back.

One record, built in one place: the checking child fills it in and signs its fields as JSON; the
grader rebuilds it with :meth:`Verdict.from_record` from a verdict whose signature it verified, or
makes one itself when no signed verdict came back (``forged``, a timeout, a crash, ``grader_error``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class Verdict:
    id: str  # the exercise
    passed: bool = False  # the whole check passed
    message: str = ""  # the check's last line, its CheckFailed text, or why nothing was checked
    stages: list[str] = field(default_factory=list)  # partial-credit stages passed
    reference: list[str] = field(default_factory=list)  # course answers the student's code was, or called
    tampered: list[str] = field(default_factory=list)  # patches made while the student's code ran
    memory: bool = False  # it ran out of memory while checked
    forged: bool = False  # something wrote a verdict the grader did not sign
    grader_error: bool = False  # not the student's doing: the grader could not check

    def record(self) -> dict:
        """The JSON-ready dict (what is signed)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "Verdict":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})
