"""The error policy: how a candidate's answer to an invalid call is judged against torch's.

The classes of torch's answer (contract, incidental, reference-undefined), what a port must do in each,
warnings and notes: ``docs/errors.md``.  The records judged here come from :mod:`conformance.invalid_calls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .invalid_calls import CONTRACT, INCIDENTAL, UNDEFINED, CallRecord
from .verdict import Note, Problem

__all__ = ["ErrorVerdict", "judge_error", "judge_warnings"]


@dataclass
class ErrorVerdict:
    """Problems (failures) and notes (information) for one invalid call."""

    error_class: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def judge_error(reference: CallRecord, got: CallRecord, strictness: str, what: str = "",
                unstable: bool = False, call: str = "") -> ErrorVerdict:
    """Apply the error policy (``docs/errors.md``) to torch's record and the candidate's.

    ``what`` names the call (a fault's name) and ``call`` its form ("dense", "packed", ...) in
    the notes; ``unstable`` marks a call on which torch's own answer varies
    (``conformance.hazards.UNSTABLE_PACKED_FAULTS``): reference-undefined.
    """
    ref = reference.raised
    error_class = UNDEFINED if reference.crashed or ref is None or unstable or reference.other_kernels else ref.origin
    verdict = ErrorVerdict(error_class)
    if error_class == UNDEFINED or ref is None:  # (ref is None: undefined)
        # torch accepted a call its documentation rules out, or crashed: its own heap may be
        # corrupted (pytorch/pytorch#173946), so no behaviour of the candidate is wrong here.
        verdict.notes.append(Note(UNDEFINED, what, call, reference.describe(), got.describe()))
        return verdict
    if got.crashed:
        verdict.problems.append(Problem("crashed", f"the candidate {got.crashed}; torch {reference.describe()}",
                                        rule="crashed-where-torch-raises"))
        return verdict
    mine = got.raised
    if mine is None:
        missing = "a missing check" if error_class == CONTRACT else "torch rejects this call"
        verdict.problems.append(Problem("error", f"torch raises {ref.describe()} ({error_class} error), but the "
                                                 f"candidate returned {got.returned}: {missing}",
                                        rule="missing-check"))
        return verdict
    if mine.stage != ref.stage:
        verdict.problems.append(Problem("error", f"torch raises while {_doing(ref.stage)}: {ref.describe()}; "
                                                 f"the candidate raised while {_doing(mine.stage)}: {mine.describe()}",
                                        rule="wrong-stage"))
        return verdict
    same_type = ref.type_name in mine.bases
    if error_class == CONTRACT and strictness in ("exact", "type") and not same_type:
        verdict.problems.append(Problem("error", f"wrong exception type: torch raises {ref.describe()}; "
                                                 f"the candidate raised {mine.describe()}", rule="wrong-type"))
    elif error_class == CONTRACT and strictness == "exact" and mine.message != ref.message:
        verdict.problems.append(Problem("error", f"wrong message: torch raises {ref.type_name} with\n"
                                                 f"  {ref.message!r}\nthe candidate raised {mine.type_name} with\n"
                                                 f"  {mine.message!r}", rule="wrong-message"))
    elif (not same_type or mine.message != ref.message) and error_class == INCIDENTAL:
        verdict.notes.append(Note("incidental error differs", what, call, ref.describe(), mine.describe()))
    return verdict


def _doing(stage: str) -> str:
    return "being constructed" if stage == "construct" else "being called"


def judge_warnings(reference: CallRecord, got: CallRecord, strictness: str) -> list[Problem]:
    """Warnings torch emits from Python must appear from the candidate too (by strictness)."""
    if strictness == "raises" or got.crashed:
        return []
    problems = []
    for category, message in reference.warnings:
        if strictness == "exact":
            found = (category, message) in got.warnings
        else:
            found = any(c == category for c, _ in got.warnings)
        if not found:
            emitted = "; ".join(f"{c}: {m}" for c, m in got.warnings) or "none"
            problems.append(Problem("warning", f"torch warns {category}: {message}\n"
                                               f"the candidate did not (its warnings: {emitted})",
                                    rule="missing-warning"))
    return problems
