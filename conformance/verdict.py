"""Verdicts: the problems found on a case, and the failure that carries them to the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .case import Case
from .compare import Mismatch

__all__ = ["ConformanceFailure", "Problem"]


@dataclass
class Problem:
    """One way the candidate departs from torch on a case."""

    kind: str  # "raised", "structure", "shape", "dtype", "values", "mutated", "error", "warning", "crashed"
    message: str
    mismatch: Optional[Mismatch] = None


class ConformanceFailure(AssertionError):
    """The candidate does not behave like torch.nn.LSTM on a case."""

    def __init__(self, candidate_name: str, case: Any, problems: list[Problem],
                 location: Any = None, hint: Any = None, repeat: bool = False):
        """``case`` is a :class:`~conformance.case.Case` or anything else with ``to_code()``;
        ``location`` (:class:`~conformance.localise.Location`) and ``hint``
        (:class:`~conformance.hints.Hint`) are added when the failure was diagnosed."""
        self.candidate_name, self.case, self.problems = candidate_name, case, problems
        self.location, self.hint, self.repeat = location, hint, repeat  # repeat: found on a second call
        super().__init__(self._render())

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (isolated workers, xdist)
        return (type(self), (self.candidate_name, self.case, self.problems, self.location, self.hint, self.repeat))

    def summary(self) -> str:
        """One line: what differed, where and why, for tables and reports."""
        text = "; ".join(p.message.splitlines()[0] for p in self.problems)
        if self.location is not None:
            text += f"; {self.location.describe().splitlines()[0]}"
        if self.hint is not None:
            text += f"; likely bug: {self.hint.bug}"
        return text

    def _render(self) -> str:
        lines = [f"{self.candidate_name} does not match torch.nn.LSTM ({len(self.problems)} problem(s))",
                 f"case: {self.case!r}"]
        lines += [f"- {p.message}".replace("\n", "\n  ") for p in self.problems]
        if self.location is not None:
            lines += ["", "Where: " + self.location.describe()]
        if self.hint is not None:
            lines += ["", "Likely bug: " + self.hint.describe()]
        intro = ("builds `model` and `args`; torch's result is `model(*args)`" if isinstance(self.case, Case)
                 else "torch's packing function on the same arguments")
        lines += ["", f"The case as code ({intro}):", "", self.case.to_code()]
        return "\n".join(lines)
