"""The conformance checks: run a case on torch and on the candidate, and judge the difference.

Each check raises :class:`ConformanceFailure` (an AssertionError) that lists every problem found
with the case, its runnable code, and mismatch statistics; it returns ``None`` when the
candidate conforms.  These functions are what the pytest suite and the CLI call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .candidates import Candidate, CandidateError
from .case import Case
from .compare import Mismatch, compare_values, tolerance
from .outcome import Outcome, StructureError
from .reference import Expected, expected_for

__all__ = ["ConformanceFailure", "Problem", "check_forward"]


@dataclass
class Problem:
    """One way the candidate departs from torch on a case."""

    kind: str  # "raised", "structure", "shape", "dtype", "values", "mutated", "repeat"
    message: str
    mismatch: Optional[Mismatch] = None


class ConformanceFailure(AssertionError):
    """The candidate does not behave like torch.nn.LSTM on a case."""

    def __init__(self, candidate: Candidate, case: Case, problems: list[Problem]):
        self.candidate, self.case, self.problems = candidate, case, problems
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{self.candidate.name} does not match torch.nn.LSTM ({len(self.problems)} problem(s))",
                 f"case: {self.case!r}"]
        lines += [f"- {p.message}".replace("\n", "\n  ") for p in self.problems]
        lines += ["", "The case as code (builds `model` and `args`; torch's result is `model(*args)`):", "",
                  self.case.to_code()]
        return "\n".join(lines)


def _snapshot(value: Any) -> Any:
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return PackedSequence(*(None if t is None else t.detach().clone() for t in value))
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_snapshot(v) for v in value)
    return value


def _changed(before: Any, after: Any) -> bool:
    import torch

    if isinstance(before, torch.Tensor):
        return before.shape != after.shape or not torch.equal(before, after.detach())
    if isinstance(before, (tuple, list)):
        return any(_changed(b, a) for b, a in zip(before, after))
    return False


def _mutations(expected: Expected, args_before: tuple, params_before: dict, instance: Any) -> list[Problem]:
    problems = []
    names = ["input"] + (["hx (h0, c0)"] if len(args_before) > 1 else [])
    for name, before, after in zip(names, args_before, expected.args):
        if _changed(before, after):
            problems.append(Problem("mutated", f"the call modified the caller's {name} in place"))
    after_params = _parameters(instance)
    changed = sorted(k for k, v in params_before.items() if k in after_params and _array_changed(v, after_params[k]))
    if changed:
        problems.append(Problem("mutated", f"the call modified the module's parameters: {', '.join(changed)}"))
    return problems


def _parameters(instance: Any) -> dict:
    """The weights an instance holds: a module's state_dict, or the arrays an adapter was given."""
    state = getattr(instance, "state_dict", None)
    if callable(state):
        try:
            return {k: v.detach().numpy().copy() for k, v in state().items()}
        except Exception:
            return {}
    weights = getattr(instance, "weights", None)
    return {k: np.array(v, copy=True) for k, v in weights.items()} if isinstance(weights, dict) else {}


def _array_changed(before: np.ndarray, after: np.ndarray) -> bool:
    return before.shape != after.shape or not np.array_equal(before, after)


def _compare(case: Case, expected: Expected, got: Outcome, label: str = "") -> list[Problem]:
    """Structure, shapes, dtypes and values of one outcome against torch."""
    ref, oracle = expected.reference, expected.oracle
    problems: list[Problem] = []
    if ref.packed and not np.array_equal(np.asarray(got.batch_sizes), ref.batch_sizes):
        problems.append(Problem("structure", f"{label}packed output batch_sizes {list(got.batch_sizes)} "
                                             f"!= torch's {list(ref.batch_sizes)}"))
        return problems
    comparable = {}
    for name, mine in got.parts().items():
        theirs = ref.parts()[name]
        if mine.shape != theirs.shape:
            problems.append(Problem("shape", f"{label}{name} has shape {tuple(mine.shape)}; torch gives {tuple(theirs.shape)}"))
        elif mine.dtype != theirs.dtype:
            problems.append(Problem("dtype", f"{label}{name} has dtype {mine.dtype}; torch gives {theirs.dtype}"))
        else:
            comparable[name] = mine
    directions = case.config.num_directions
    for name, mine in comparable.items():
        if case.deterministic:
            sel: Any = slice(None)
        elif name == "output":
            continue  # a random dropout mask reaches the output: only its shape is comparable
        else:
            sel = slice(0, directions)  # layer 0's states are computed before any dropout
        tol = tolerance(case.config.dtype, ref.parts()[name][sel], oracle.parts()[name][sel])
        mismatch = compare_values(label + name + ("" if sel == slice(None) else f"[:{directions}] (layer 0)"),
                                  mine[sel], oracle.parts()[name][sel], tol)
        if mismatch is not None:
            problems.append(Problem("values", mismatch.describe(), mismatch))
    return problems


def check_forward(candidate: Candidate, case: Case, repeat: bool = False) -> None:
    """Run ``case`` on torch and on ``candidate``; raise :class:`ConformanceFailure` on any difference.

    With ``repeat=True`` the candidate instance is called a second time with the same arguments
    and that result is judged too (a port must not carry state between calls).
    """
    expected = expected_for(case)
    args_before = _snapshot(expected.args)
    problems: list[Problem] = []
    try:
        instance = candidate.build(case.config, expected.model.state_dict())
        params_before = _parameters(instance)
        calls = 2 if repeat else 1
        for index in range(calls):
            label = "second call: " if index else ""
            got = candidate.run(instance, expected.args, case.call.training, case.call.packed)
            problems += _compare(case, expected, got, label)
            if index == 0:
                problems += _mutations(expected, args_before, params_before, instance)
            if problems:
                break
    except CandidateError as exc:
        problems.append(Problem("raised", f"torch returned a result, but {exc}"))
    except StructureError as exc:
        problems.append(Problem("structure", str(exc)))
    if problems:
        raise ConformanceFailure(candidate, case, problems)
