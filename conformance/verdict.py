"""Verdicts as data: the problems found on a case, the notes that are not failures, and the
failure that carries them to the user.

Every field a report, a hint or a grouping needs is a field here (the kind of problem, the
tensor, which call, the rule broken); nothing downstream reads a message back.  Text is made
once, where it is shown, by :mod:`conformance.render`; :meth:`ConformanceFailure.to_data` is the
plain (JSON-able) form that crosses process boundaries and goes into reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from . import render
from .compare import Mismatch

__all__ = ["CHECKS", "KINDS", "ConformanceFailure", "Note", "Problem", "call_form", "root_cause"]

#: What a problem can be about.
KINDS = {
    "values": "a tensor's values are outside the tolerance policy",
    "shape": "a tensor has another shape than torch's",
    "dtype": "a tensor has another dtype than torch's",
    "structure": "the result is not built like torch's (type, packed batch_sizes, tuple layout)",
    "raised": "the candidate raised where torch returned a result",
    "mutated": "the call changed the caller's tensors or the module's parameters",
    "error": "an invalid call was not answered as torch answers it (error policy)",
    "warning": "a warning torch emits is missing",
    "crashed": "the candidate's process died",
    "timeout": "the candidate did not finish within the per-case time limit",
    "gradient": "a gradient, the autograd status of a result, or .grad accumulation differs from torch's",
}

#: The checks a failure can come from: the forward (and repeated calls), the gradients of one call
#: (``conformance.checks.check_gradients``), .grad accumulation over two calls, the double backward.
CHECKS = ("forward", "gradients", "gradients-accumulate", "double-backward")


@dataclass(frozen=True)
class Problem:
    """One way the candidate departs from torch on a case.

    ``detail`` says the specifics in words (what torch and the candidate did); the other fields
    say what the problem is about, for hints, grouping and reports.
    """

    kind: str  # a key of KINDS
    detail: str = ""
    mismatch: Optional[Mismatch] = None  # kind "values": the statistics
    tensor: str = ""  # "output", "h_n", "c_n", "batch_sizes", "input", "hx", "parameters", or ""
    call: int = 1  # 1: the first call; 2: calling the same instance again with the same arguments
    rule: str = ""  # the rule broken, a short id: "missing-check", "wrong-type", "wrong-message", ...
    region: str = ""  # the part of the tensor compared, when not all of it ("layer 0")

    @property
    def message(self) -> str:
        """The problem in words (rendered; for reading, not for parsing)."""
        return render.problem(self.to_data())

    def to_data(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass(frozen=True)
class Note:
    """Information about a case that is not a failure: an incidental error message that differs,
    a call on which torch's answer is undefined, a divergence an expected-failures file covers."""

    kind: str  # "incidental error differs", "reference-undefined", "expected failure"
    what: str = ""  # the call (a fault's name), or the expected failure's reason
    call: str = ""  # "dense", "packed", "unbatched", "packing function"
    torch: str = ""  # what torch did
    candidate: str = ""  # what the candidate did

    def to_data(self) -> dict[str, Any]:
        return _plain(asdict(self))


def call_form(case: Any) -> str:
    """How a case calls the module: "dense", "packed", "unbatched", or "packing function"."""
    call = getattr(case, "call", None)
    if call is None:
        return "packing function"
    return "packed" if call.packed else "unbatched" if call.unbatched else "dense"


#: The calls a forward check makes (``conformance.checks.check_forward``): a second identical call
#: (True), a number of calls, or one call per training mode given.
Repeat = Union[bool, int, tuple[bool, ...]]


class ConformanceFailure(AssertionError):
    """The candidate does not behave like torch.nn.LSTM on a case."""

    def __init__(self, candidate_name: str, case: Any, problems: list[Problem],
                 location: Any = None, hint: Any = None, repeat: Repeat = False, diagnosed_on: str = "",
                 check: str = "forward") -> None:
        """``case`` is a :class:`~conformance.case.Case` or anything else with ``to_code()``;
        ``location`` (:class:`~conformance.localise.Location`) and ``hint``
        (:class:`~conformance.hints.Hint`) are added when the failure was diagnosed, on the case
        itself or on the variant ``diagnosed_on`` names.  ``check`` says which check found it (one of
        :data:`CHECKS`), for the reproducer to run the same one."""
        self.candidate_name, self.case, self.problems = candidate_name, case, problems
        self.location, self.hint, self.repeat = location, hint, repeat  # repeat: found on a second call
        self.diagnosed_on, self.check = diagnosed_on, check
        super().__init__(candidate_name, repr(case))

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (isolated workers, xdist)
        return (type(self), (self.candidate_name, self.case, self.problems, self.location, self.hint, self.repeat,
                             self.diagnosed_on, self.check))

    def __str__(self) -> str:
        return render.failure(self.to_data())

    def summary(self) -> str:
        """One line: what differed, where and why, for tables and reports."""
        return render.summary(self.to_data())

    def root_cause(self) -> str:
        """A key shared by failures that most likely have one cause: the likely bug where one was
        recognised, else the first problem's kind, rule, tensor and call."""
        return root_cause(self.to_data())

    def to_data(self) -> dict[str, Any]:
        """The failure as plain data (strings, numbers, lists, dicts)."""
        is_case = hasattr(self.case, "config")
        data = {
            "candidate": self.candidate_name,
            "case": repr(self.case),
            "case_kind": "case" if is_case else "packing call",
            "call": call_form(self.case),
            "case_code": self.case.to_code(),
            "problems": [p.to_data() for p in self.problems],
            "location": None if self.location is None else _plain(asdict(self.location)),
            "hint": None if self.hint is None else _plain(asdict(self.hint)),
            "diagnosed_on": self.diagnosed_on,
            "repeat": self.repeat,
            "check": self.check,
        }
        data["root_cause"] = root_cause(data)
        return data


def _plain(value: Any) -> Any:
    """Tuples as lists, numpy scalars as Python numbers: what JSON and every process can carry."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def root_cause(data: dict[str, Any]) -> str:
    """See :meth:`ConformanceFailure.root_cause`; works on the plain data form."""
    if data.get("hint"):
        return f"hint:{data['hint']['name']}"
    if not data.get("problems"):
        return "unknown"
    first = data["problems"][0]
    return ":".join(str(first.get(k) or "") for k in ("kind", "rule", "tensor", "call"))

