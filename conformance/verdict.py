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

    def __init__(self, candidate_name: str, case: Any, problems: list[Problem]):
        """``case`` is a :class:`~conformance.case.Case` or anything else with ``to_code()``."""
        self.candidate_name, self.case, self.problems = candidate_name, case, problems
        super().__init__(self._render())

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (isolated workers, xdist)
        return (type(self), (self.candidate_name, self.case, self.problems))

    def _render(self) -> str:
        lines = [f"{self.candidate_name} does not match torch.nn.LSTM ({len(self.problems)} problem(s))",
                 f"case: {self.case!r}"]
        lines += [f"- {p.message}".replace("\n", "\n  ") for p in self.problems]
        intro = ("builds `model` and `args`; torch's result is `model(*args)`" if isinstance(self.case, Case)
                 else "torch's packing function on the same arguments")
        lines += ["", f"The case as code ({intro}):", "", self.case.to_code()]
        return "\n".join(lines)
