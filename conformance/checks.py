"""The conformance checks: run a case on torch and on the candidate, and judge the difference.

Each check raises :class:`ConformanceFailure` (an AssertionError) that lists every problem found
with the case, its runnable code, and mismatch statistics; it returns ``None`` when the
candidate conforms.  These functions are what the pytest suite and the CLI call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np

from . import dropout
from .candidates import Candidate, CandidateError
from .case import Case, PackingCall
from .compare import Tolerance, case_scale, cell_magnitude, compare_values, held_in, tolerance
from .dtypes import to_numpy
from .errors import (NOT_RUN_UNSTABLE, CallRecord, judge_error, judge_warnings, python_warnings, record_packing,
                     unstable)
from .isolation import DEFAULT_TIMEOUT, run_isolated
from .outcome import Outcome, StructureError
from .processes import ProcessFailure
from .reference import Expected, copy_args, expected_for
from .verdict import ConformanceFailure, Note, Problem, Repeat, call_form

__all__ = ["ConformanceFailure", "Problem", "Runner", "check_forward", "check_error", "check_packing_error", "judged",
           "run_gradients"]


def _changed(before: Any, after: Any) -> bool:
    import torch

    if isinstance(before, torch.Tensor):
        after = after.detach()  # NaN where the caller had NaN is unchanged
        return before.shape != after.shape or not bool(((before == after) | (before.isnan() & after.isnan())).all())
    if isinstance(before, (tuple, list)):
        return any(_changed(b, a) for b, a in zip(before, after))
    return False


def _mutations(expected: Expected, args_before: tuple, params_before: dict, instance: Any) -> list[Problem]:
    problems = []
    names = [("input", "input"), ("hx", "hx (h0, c0)")][:len(args_before)]
    for (tensor, name), before, after in zip(names, args_before, expected.args):
        if _changed(before, after):
            problems.append(Problem("mutated", f"the call modified the caller's {name} in place", tensor=tensor))
    after_params = _parameters(instance)
    changed = sorted(k for k, v in params_before.items() if k in after_params and _array_changed(v, after_params[k]))
    if changed:
        problems.append(Problem("mutated", f"the call modified the module's parameters: {', '.join(changed)}",
                                tensor="parameters"))
    return problems


def _parameters(instance: Any) -> dict:
    """The weights an instance holds: a module's state_dict, or the arrays an adapter was given."""
    state = getattr(instance, "state_dict", None)
    if callable(state):
        try:
            return {k: to_numpy(v).copy() for k, v in state().items()}
        except Exception:  # noqa: BLE001 - a port's state_dict that fails: no weights to report
            return {}
    weights = getattr(instance, "weights", None)
    return {k: np.array(v, copy=True) for k, v in weights.items()} if isinstance(weights, dict) else {}


def _array_changed(before: np.ndarray, after: np.ndarray) -> bool:
    return before.shape != after.shape or not np.array_equal(before, after)


def _compare(case: Case, expected: Expected, got: Outcome, call: int = 1,
             recovered: Optional[list] = None) -> list[Problem]:
    """Structure, shapes, dtypes and values of one outcome against torch (``call``: which call).

    In training mode with random dropout masks, layer 0's states are compared as they are (no mask
    reaches them), and the rest is judged by recovering the masks (:func:`conformance.dropout.recover`);
    the recovery is appended to ``recovered`` when it is given.
    """
    ref = expected.reference
    problems: list[Problem] = []
    if ref.packed and not np.array_equal(np.asarray(got.batch_sizes), np.asarray(ref.batch_sizes)):
        problems.append(Problem("structure", f"packed output batch_sizes {np.asarray(got.batch_sizes).tolist()} "
                                             f"!= torch's {np.asarray(ref.batch_sizes).tolist()}",
                                tensor="batch_sizes", call=call, rule="batch-sizes"))
        return problems
    comparable = {}
    for name, mine in got.parts().items():
        theirs = ref.parts()[name]
        if mine.shape != theirs.shape:
            problems.append(Problem("shape", f"has shape {tuple(mine.shape)}; torch gives {tuple(theirs.shape)}",
                                    tensor=name, call=call))
        elif mine.dtype != theirs.dtype:
            problems.append(Problem("dtype", f"has dtype {mine.dtype}; torch gives {theirs.dtype}",
                                    tensor=name, call=call))
        else:
            comparable[name] = mine
    directions = case.config.num_directions
    for name, mine in comparable.items():
        region = ""
        if case.deterministic:
            sel: Any = slice(None)
        elif name == "output":
            continue  # a random dropout mask reaches the output: judged by recovering the masks, below
        else:
            sel, region = slice(0, directions), "layer 0"  # layer 0's states are computed before any dropout
        theirs, truth, tol = judged(case, expected, name, sel)
        mismatch = compare_values(name, mine[sel], truth, tol, reference=theirs)
        if mismatch is not None:
            problems.append(Problem("values", mismatch=mismatch, tensor=name, call=call, region=region))
    if not case.deterministic and not problems:
        recovery = dropout.recover(case, expected, got, call=call)
        if recovery is not None:
            problems += recovery.problems
            if recovered is not None:
                recovered.append(recovery)
    return problems


def judged(case: Case, expected: Expected, name: str,
           sel: Any = slice(None)) -> tuple[np.ndarray, np.ndarray, Tolerance]:
    """What one result (``name``: output, h_n or c_n; ``sel`` of its rows) of a port is judged against:
    torch's result, the oracle as the case's dtype holds it, and the tolerance (:mod:`conformance.compare`)."""
    # a case beyond unit scale: its own scale and its sensitivity to rounding (conformance.compare)
    perturbed = None if expected.perturbed is None else expected.perturbed.parts()[name][sel]
    scale = 1.0 if perturbed is None else case_scale(expected)
    cell = cell_magnitude([expected.args[1][1].detach().double() if len(expected.args) > 1 else None,
                           expected.oracle.c_n])
    theirs = expected.reference.parts()[name][sel]
    truth = held_in(expected.oracle.parts()[name][sel], case.config.dtype)
    return theirs, truth, tolerance(case.config.dtype, theirs, truth, scale, perturbed, cell)


def _modes(case: Case, repeat: Any) -> tuple[bool, ...]:
    """The training mode of each call ``repeat`` asks for (see :func:`check_forward`)."""
    if isinstance(repeat, bool):
        return (case.call.training,) * (2 if repeat else 1)
    if isinstance(repeat, int):
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1 call, got {repeat}")
        return (case.call.training,) * repeat
    modes = tuple(repeat)
    if not modes or not all(isinstance(m, bool) for m in modes):
        raise ValueError(f"repeat must be a bool, a number of calls or a non-empty tuple of bools, got {repeat!r}")
    return modes


def _after_switch(problems: list[Problem], earlier: tuple[bool, ...], training: bool) -> list[Problem]:
    """Problems of a call made after the instance was called in the other mode say so (rule and region)."""
    if not earlier or all(mode == training for mode in earlier):
        return problems
    if training:
        rule, where = "train-after-eval", "training mode, after a call in eval mode"
    else:
        rule, where = "eval-after-train", "eval mode, after a call in training mode"
    return [replace(p, rule=p.rule if training and p.rule else rule,
                    region=f"{p.region}; {where}" if p.region else where) for p in problems]


def check_forward(candidate: Candidate, case: Case, repeat: Repeat = False,
                  diagnose: bool = False) -> None:
    """Run ``case`` on torch and on ``candidate``; raise :class:`ConformanceFailure` on any difference.

    With ``repeat=True`` the candidate instance is called a second time with the same arguments
    and that result is judged too (a port must not carry state between calls).  ``repeat`` may also
    be a number of calls in the case's mode, after which the dropout masks recovered from every call
    are tested for their rate and independence (:func:`conformance.dropout.mask_statistics`); or a
    tuple of training modes, one per call on the same instance (``.train()``/``.eval()`` switched
    between calls), each call judged against torch in its mode.  With
    ``diagnose=True`` a failure also carries where the candidate departs and a likely bug
    (:mod:`conformance.localise`, :mod:`conformance.hints`); that runs more models, so the
    suite asks for it only for the failing example hypothesis finally reports.
    """
    modes = _modes(case, repeat)
    expected = expected_for(case)
    in_mode = {case.call.training: (case, expected)}

    def mode(training: bool) -> tuple[Case, Expected]:
        if training not in in_mode:
            other = case.replace(training=training)
            in_mode[training] = (other, expected_for(other))
        return in_mode[training]

    first_case, first_expected = mode(modes[0])
    args_before = copy_args(first_expected.args)
    problems: list[Problem] = []
    built_warnings: list = []
    first: Any = None
    recovered: list = []
    try:
        instance = candidate.build(case.config, expected.model.state_dict(), warnings_out=built_warnings)
        if candidate.kind == "drop-in":  # constructed with nn.LSTM's arguments: it must warn as nn.LSTM does
            problems += judge_warnings(CallRecord(warnings=python_warnings(expected.warnings)),
                                       CallRecord(warnings=python_warnings(built_warnings)),
                                       candidate.capabilities.errors)
        params_before = _parameters(instance)
        for index, training in enumerate(modes):
            this_case, this = mode(training)
            got = candidate.run(instance, this.args, training, case.call.packed, case.call.arguments)
            problems += _after_switch(_compare(this_case, this, got, call=index + 1, recovered=recovered),
                                      modes[:index], training)
            if index == 0:
                first = got if training == case.call.training else None
                problems += _mutations(this, args_before, params_before, instance)
            if problems:
                break
        if not problems and _statistics_asked(repeat):
            problems += _mask_statistics(case, expected, recovered, len(modes))
    except CandidateError as exc:
        problems.append(Problem("raised", f"torch returned a result, but {exc}", rule="raised-on-valid"))
    except StructureError as exc:
        problems.append(Problem("structure", str(exc), rule="malformed"))
    if problems:
        if not diagnose:
            raise ConformanceFailure(candidate.name, case, problems, repeat=repeat)
        location, hint, on = _diagnose(candidate, case, expected, first, problems)
        raise ConformanceFailure(candidate.name, case, problems, location, hint, repeat=repeat, diagnosed_on=on)


def run_gradients(candidate: Candidate, case: Case, check: str = "gradients", diagnose: bool = False) -> None:
    """One of the gradient checks of :mod:`conformance.gradients` on ``case``, by its name in
    ``conformance.verdict.CHECKS``: ``"gradients"``, ``"gradients-accumulate"`` or ``"double-backward"``."""
    from .gradients import check_double_backward, check_gradient_accumulation, check_gradients

    checks = {"gradients": check_gradients, "gradients-accumulate": check_gradient_accumulation,
              "double-backward": check_double_backward}
    if check not in checks:
        raise ValueError(f"unknown gradient check {check!r}; known: {sorted(checks)}")
    return checks[check](candidate, case, diagnose)


def _statistics_asked(repeat: Any) -> bool:
    return isinstance(repeat, int) and not isinstance(repeat, bool)


def _mask_statistics(case: Case, expected: Expected, recovered: list, calls: int) -> list[Problem]:
    """The statistics of the masks recovered from ``calls`` calls in training mode on ``case``."""
    if case.deterministic or not case.call.training:
        return []
    if len(recovered) != calls or not all(r.complete for r in recovered):
        raise ValueError(f"the dropout statistics need every mask recovered, on a case small enough: {case!r}")
    if dropout.separation(case, expected) <= 1.0:  # else a recovered mask could be one of several that fit
        raise ValueError(f"the dropout statistics need a case whose masks are told apart: {case!r}")
    return dropout.mask_statistics([r.masks for r in recovered], case.config.dropout)


EVAL_MODE = "the same case in eval mode"


def _diagnose(candidate: Candidate, case: Case, expected: Expected, got: Any,
              problems: list[Problem]) -> tuple[Any, Any, str]:
    """Localise and recognise: (location, hint, the variant they were found on).

    A case in training mode whose dropout masks are random is first tried in eval mode: if the
    candidate fails there too, its bug is not about dropout, and the deterministic case (where
    every recogniser applies) is diagnosed instead, so that a wrong gate order is not taken for a
    dropout rule.  A diagnosis never fails the failure itself.
    """
    if not case.deterministic:
        evaluated = case.replace(training=False)
        try:
            check_forward(candidate, evaluated, diagnose=False)
        except ConformanceFailure as failure:
            location, hint = _diagnose_here(candidate, evaluated, expected_for(evaluated), failure.problems)
            return location, hint, EVAL_MODE if location or hint else ""
        except Exception:  # noqa: BLE001 - the eval-mode variant is only a way to a better hint
            pass
    return (*_diagnose_here(candidate, case, expected, problems, got), "")


def _diagnose_here(candidate: Candidate, case: Case, expected: Expected, problems: list[Problem],
                   got: Any = None) -> tuple[Any, Any]:
    from .hints import Evidence, recognise
    from .localise import localise

    if got is None and all(p.kind == "values" for p in problems):
        try:  # the result to localise: the candidate's first call on this case
            instance = candidate.build(case.config, expected.model.state_dict(), warnings_out=[])
            got = candidate.run(instance, expected.args, case.call.training, case.call.packed, case.call.arguments)
        except Exception:  # noqa: BLE001 - no result, no localisation
            got = None
    location = focus = None
    first_call = [p for p in problems if p.call == 1]
    if got is not None and first_call and all(p.kind == "values" for p in problems):
        try:
            location, focus = localise(candidate, case, expected, got)
        except Exception:  # noqa: BLE001 - a diagnosis is a bonus, the failure stands without it
            location = focus = None
    return location, recognise(Evidence(case, expected, got, problems, location, focus, candidate))


def _isolated_record(operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> CallRecord:
    status, value = run_isolated(operation, *args, timeout=timeout, key=(operation, *args))
    if status == "crashed":
        return CallRecord(crashed=value)
    if status == "timeout":  # a hung invalid call is a crash of that call, named as a time-out
        advice = ": a hang, or a port slower than the limit; raise the limit with --lstm-timeout SECONDS"
        advice = advice if operation == "candidate" else ""  # torch's own calls have a limit of their own
        return CallRecord(crashed=f"{value}{advice}")
    if status == "error":  # the suite's own machinery failed, not the implementation under test
        raise RuntimeError(f"lstm-conformance could not run '{operation}' in its worker process:\n{value}")
    return value


def check_error(candidate: Candidate, case: Case, timeout: float = DEFAULT_TIMEOUT) -> list[Note]:
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
    verdict = judge_error(reference, got, strictness, case.fault.name if case.fault else "", unstable(case),
                          call_form(case))
    problems = verdict.problems + judge_warnings(reference, got, strictness)
    if problems:
        raise ConformanceFailure(candidate.name, case, problems)
    return verdict.notes


def check_packing_error(candidate: Candidate, call: PackingCall, functions: Any) -> list[Note]:
    """A bad call of the port's own packing function (``functions``) against torch's."""
    import torch.nn.utils.rnn as torch_rnn

    reference = record_packing(call, torch_rnn, is_torch=True)
    got = record_packing(call, functions, is_torch=False)
    strictness = candidate.capabilities.errors
    verdict = judge_error(reference, got, strictness, call.fault, call=call_form(call))
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

    def forward(self, case: Case, repeat: Repeat = False, diagnose: Optional[bool] = None) -> None:
        """:func:`check_forward`, isolated; ``diagnose`` defaults to "this is the example hypothesis reports"."""
        self.calls += 1
        if self.expected:
            return self._expected(case, lambda: self._forward(case, repeat, diagnose))
        return self._forward(case, repeat, diagnose)

    def _forward(self, case: Case, repeat: Repeat, diagnose: Optional[bool]) -> None:
        if diagnose is None:
            diagnose = _final_example()
        if not self.isolate:
            return self._inline(case, lambda: check_forward(self.candidate, case, repeat, diagnose))
        # keyed without `diagnose`: hypothesis' final replay of a timed-out example gets the same time-out
        status, value = run_isolated("forward", self.candidate.path, case, repeat, diagnose, timeout=self.timeout,
                                     key=("forward", self.candidate.path, case, repeat))
        return self._isolated(case, status, value)

    def gradients(self, case: Case, check: str = "gradients", diagnose: Optional[bool] = None) -> None:
        """The gradient check ``check`` (:func:`run_gradients`), isolated like :meth:`forward`."""
        self.calls += 1
        if self.expected:
            return self._expected(case, lambda: self._gradients(case, check, diagnose))
        return self._gradients(case, check, diagnose)

    def _gradients(self, case: Case, check: str, diagnose: Optional[bool]) -> None:
        if diagnose is None:
            diagnose = _final_example()
        if not self.isolate:
            return self._inline(case, lambda: run_gradients(self.candidate, case, check, diagnose))
        status, value = run_isolated("gradients", self.candidate.path, case, check, diagnose,
                                     timeout=self.timeout, key=("gradients", self.candidate.path, case, check))
        return self._isolated(case, status, value)

    def _inline(self, case: Case, check: Any) -> None:
        """A check run in this process; a process port's program that crashed fails the case, as isolated."""
        try:
            return check()
        except ProcessFailure as failure:
            return self._isolated(case, "crashed", str(failure))

    def _isolated(self, case: Case, status: str, value: Any) -> None:
        """An isolated check's outcome: its failure raised, a crash or a time-out as a failure of the case."""
        if status == "failed":
            raise value
        if status == "timeout":
            raise ConformanceFailure(self.candidate.name, case, [Problem("timeout", (
                f"the candidate {value}: a hang, or a port slower than the limit; "
                "raise the limit with --lstm-timeout SECONDS"))])
        if status == "crashed":
            if _isolated_record("reference", case).crashed:
                raise RuntimeError(f"torch itself crashed on a valid case: {case!r}")
            raise ConformanceFailure(self.candidate.name, case, [Problem("crashed", f"the candidate {value} on this case")])
        if status == "error":
            raise RuntimeError(f"lstm-conformance could not run the case in its worker process:\n{value}")
        return None

    def error(self, case: Case) -> list[Note]:
        """:func:`check_error` (always isolated)."""
        self.calls += 1
        return self._expected(case, lambda: check_error(self.candidate, case, self.timeout))

    def packing(self, call: PackingCall, functions: Any) -> list[Note]:
        """:func:`check_packing_error` (in-process: packing functions are plain Python)."""
        self.calls += 1
        return check_packing_error(self.candidate, call, functions)
