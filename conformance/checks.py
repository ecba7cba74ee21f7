"""The conformance checks: run a case on torch and on the candidate, and judge the difference.

Each check raises :class:`ConformanceFailure` (an AssertionError) that lists every problem found
with the case, its runnable code, and mismatch statistics; it returns ``None`` when the
candidate conforms.  These functions are what the pytest suite and the CLI call.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .candidates import Candidate, CandidateError
from .case import Case, PackingCall
from .compare import compare_values, tolerance
from .errors import (NOT_RUN_UNSTABLE, CallRecord, judge_error, judge_warnings, python_warnings, record_packing,
                     unstable)
from .isolation import DEFAULT_TIMEOUT, run_isolated
from .outcome import Outcome, StructureError
from .reference import Expected, copy_args, expected_for
from .verdict import ConformanceFailure, Problem

__all__ = ["ConformanceFailure", "Problem", "Runner", "check_forward", "check_error", "check_packing_error"]


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


def check_forward(candidate: Candidate, case: Case, repeat: bool = False, diagnose: bool = False) -> None:
    """Run ``case`` on torch and on ``candidate``; raise :class:`ConformanceFailure` on any difference.

    With ``repeat=True`` the candidate instance is called a second time with the same arguments
    and that result is judged too (a port must not carry state between calls).  With
    ``diagnose=True`` a failure also carries where the candidate departs and a likely bug
    (:mod:`conformance.localise`, :mod:`conformance.hints`); that runs more models, so the
    suite asks for it only for the failing example hypothesis finally reports.
    """
    expected = expected_for(case)
    args_before = copy_args(expected.args)
    problems: list[Problem] = []
    built_warnings: list = []
    first: Any = None
    try:
        instance = candidate.build(case.config, expected.model.state_dict(), warnings_out=built_warnings)
        if candidate.kind == "drop-in":  # constructed with nn.LSTM's arguments: it must warn as nn.LSTM does
            problems += judge_warnings(CallRecord(warnings=python_warnings(expected.warnings)),
                                       CallRecord(warnings=python_warnings(built_warnings)),
                                       candidate.capabilities.errors)
        params_before = _parameters(instance)
        calls = 2 if repeat else 1
        for index in range(calls):
            label = "second call: " if index else ""
            got = candidate.run(instance, expected.args, case.call.training, case.call.packed)
            problems += _compare(case, expected, got, label)
            if index == 0:
                first = got
                problems += _mutations(expected, args_before, params_before, instance)
            if problems:
                break
    except CandidateError as exc:
        problems.append(Problem("raised", f"torch returned a result, but {exc}"))
    except StructureError as exc:
        problems.append(Problem("structure", str(exc)))
    if problems:
        location, hint = _diagnose(candidate, case, expected, first, problems) if diagnose else (None, None)
        raise ConformanceFailure(candidate.name, case, problems, location, hint, repeat=repeat)


def _diagnose(candidate: Candidate, case: Case, expected: Expected, got: Any, problems: list[Problem]) -> tuple:
    """Localise (values only: shapes must agree) and recognise; never fails the failure itself."""
    from .hints import Evidence, recognise
    from .localise import localise

    location = focus = None
    first_call = [p for p in problems if not p.message.startswith("second call: ")]
    if got is not None and first_call and all(p.kind == "values" for p in problems):
        try:
            location, focus = localise(candidate, case, expected, got)
        except Exception:  # noqa: BLE001 - a diagnosis is a bonus, the failure stands without it
            location = focus = None
    return location, recognise(Evidence(case, expected, got, problems, location, focus))


def _isolated_record(operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> CallRecord:
    status, value = run_isolated(operation, *args, timeout=timeout)
    if status == "crashed":
        return CallRecord(crashed=value)
    if status == "error":  # the suite's own machinery failed, not the implementation under test
        raise RuntimeError(f"lstm-conformance could not run '{operation}' in its worker process:\n{value}")
    return value


def check_error(candidate: Candidate, case: Case, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Run an invalid call on torch and on the candidate, each in the isolated worker process.

    Raises :class:`ConformanceFailure` when the candidate breaks the error policy (see
    :mod:`conformance.errors`); returns notes (information that is not a failure).
    """
    if unstable(case):
        reference = CallRecord(not_run=NOT_RUN_UNSTABLE)
    else:
        reference = _isolated_record("reference", case, candidate.path)  # a forked drop-in call may start beside it
    got = _isolated_record("candidate", candidate.path, case, timeout=timeout)
    strictness = candidate.capabilities.errors
    verdict = judge_error(reference, got, strictness, case.fault.name if case.fault else "", unstable(case))
    problems = verdict.problems + judge_warnings(reference, got, strictness)
    if problems:
        raise ConformanceFailure(candidate.name, case, problems)
    return verdict.notes


def check_packing_error(candidate: Candidate, call: PackingCall, functions: Any) -> list[str]:
    """A bad call of the port's own packing function (``functions``) against torch's."""
    import torch.nn.utils.rnn as torch_rnn

    reference = record_packing(call, torch_rnn, is_torch=True)
    got = record_packing(call, functions, is_torch=False)
    strictness = candidate.capabilities.errors
    verdict = judge_error(reference, got, strictness, call.fault)
    problems = verdict.problems + judge_warnings(reference, got, strictness)
    if problems:
        raise ConformanceFailure(candidate.name, call, problems)
    return verdict.notes


def _final_example() -> bool:
    """Inside a hypothesis test: is this the final run of the example it reports?  Outside: yes."""
    try:
        from hypothesis.control import _current_build_context

        context = _current_build_context.value
    except Exception:  # noqa: BLE001 - an older or newer hypothesis: diagnose every failure
        return True
    return True if context is None else bool(getattr(context, "is_final", True))


class Runner:
    """Runs the checks for one candidate, each case in the worker process unless ``isolate=False``.

    Isolation is what lets a run survive a candidate that crashes or hangs: that case fails and
    the run goes on.  Invalid calls are always isolated, because torch itself crashes on some.
    """

    def __init__(self, candidate: Candidate, isolate: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.candidate, self.isolate, self.timeout = candidate, isolate, timeout
        self.calls = 0  # examples run, for reports
        self.expected: list = []  # ExpectedFailure entries with `when`, for the test now running
        self.expected_seen: list[str] = []  # reasons of the failures they covered

    def _expected(self, case: Any, check: Any) -> Any:
        """Run ``check``; a failure that an expected-failure entry covers is recorded, not raised."""
        try:
            return check()
        except ConformanceFailure:
            entry = next((e for e in self.expected if e.covers(case)), None)
            if entry is None:
                raise
            self.expected_seen.append(entry.reason)
            return []

    def __repr__(self) -> str:
        return repr(self.candidate)

    def forward(self, case: Case, repeat: bool = False, diagnose: Optional[bool] = None) -> None:
        """:func:`check_forward`, isolated; ``diagnose`` defaults to "this is the example hypothesis reports"."""
        self.calls += 1
        if self.expected:
            return self._expected(case, lambda: self._forward(case, repeat, diagnose))
        return self._forward(case, repeat, diagnose)

    def _forward(self, case: Case, repeat: bool, diagnose: Optional[bool]) -> None:
        if diagnose is None:
            diagnose = _final_example()
        if not self.isolate:
            return check_forward(self.candidate, case, repeat, diagnose)
        status, value = run_isolated("forward", self.candidate.path, case, repeat, diagnose, timeout=self.timeout)
        if status == "failed":
            raise value
        if status == "crashed":
            if _isolated_record("reference", case).crashed:
                raise RuntimeError(f"torch itself crashed on a valid case: {case!r}")
            raise ConformanceFailure(self.candidate.name, case, [Problem("crashed", f"the candidate {value} on this case")])
        if status == "error":
            raise RuntimeError(f"lstm-conformance could not run the case in its worker process:\n{value}")
        return None

    def error(self, case: Case) -> list[str]:
        """:func:`check_error` (always isolated)."""
        self.calls += 1
        return self._expected(case, lambda: check_error(self.candidate, case, self.timeout))

    def packing(self, call: PackingCall, functions: Any) -> list[str]:
        """:func:`check_packing_error` (in-process: packing functions are plain Python)."""
        self.calls += 1
        return check_packing_error(self.candidate, call, functions)
