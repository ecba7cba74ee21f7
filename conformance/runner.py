"""Running the checks for one candidate from pytest (or a reproducer): each case in the worker process
(:mod:`conformance.service`) unless asked to run it here, and invalid calls always there.

Isolation is what lets a run survive a candidate that crashes or hangs: that case fails and the run
goes on.  Invalid calls are always isolated, because torch itself crashes on some.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional, Union

from . import hazards
from .candidates import Candidate
from .case import Case, PackingCall
from .checks import check_forward, check_packing_error, run_gradients
from .error_policy import judge_error, judge_warnings
from .invalid_calls import CallRecord
from .isolation import DEFAULT_TIMEOUT
from .process_messages import Answered, CallResult, Crashed, Errored, TimedOut
from .processes import ProcessFailure
from .service import (UNDEFINED_TIME_LIMIT, CheckForward, CheckGradients, Failed, InvalidCallRecords,
                      PortProcessFailed, RecordInvalidCall, RecordTorchCall, ask)
from .verdict import ConformanceFailure, Note, Problem, Repeat, call_form

__all__ = ["Runner", "check_error"]

#: What a time-out of the candidate's call says to do.
_SLOW_ADVICE = "a hang, or a port slower than the limit; raise the limit with --lstm-timeout SECONDS"


def _machinery_failed(what: str, text: str) -> RuntimeError:
    """The suite's own machinery failed, not the implementation under test."""
    return RuntimeError(f"lstm-conformance could not {what} in its worker process:\n{text}")


def _torch_record(case: Case) -> CallRecord:
    """torch's record of ``case``, made in the worker; a crash or a hang of torch's call is its record."""
    result = ask(RecordTorchCall(case), key=RecordTorchCall(case))
    if isinstance(result, (Crashed, TimedOut)):
        return CallRecord(crashed=result.what)
    if isinstance(result, Errored):
        raise _machinery_failed("record torch's call", result.text)
    return result.value


def _invalid_call_records(candidate: Candidate, case: Case, timeout: float) -> tuple[CallRecord, CallRecord]:
    """torch's record and the candidate's of the invalid call ``case``, both made in the worker."""
    request = RecordInvalidCall(candidate.path, case, timeout)
    # torch's forked call (a packed call that may corrupt its heap) has a limit of its own, before an
    # adapter's call made in the worker itself
    limit = timeout + (UNDEFINED_TIME_LIMIT if case.call.packed else 0.0)
    result = ask(request, timeout=limit, key=request)
    if isinstance(result, Answered):
        records: InvalidCallRecords = result.value
        return records.reference, records.candidate
    if isinstance(result, Errored):
        raise _machinery_failed("record an invalid call", result.text)
    # the candidate's call took the worker down (torch's, unforked, cannot): a crash of that call
    what = f"{result.what}: {_SLOW_ADVICE}" if isinstance(result, TimedOut) else result.what
    reference = CallRecord(not_run=hazards.NOT_RUN_UNSTABLE) if hazards.unstable(case) else _torch_record(case)
    return reference, CallRecord(crashed=what)


def check_error(candidate: Candidate, case: Case, timeout: float = DEFAULT_TIMEOUT) -> list[Note]:
    """Run an invalid call on torch and on the candidate, in the isolated worker process.

    Raises :class:`ConformanceFailure` when the candidate breaks the error policy
    (:mod:`conformance.error_policy`); returns notes (information that is not a failure).
    """
    reference, got = _invalid_call_records(candidate, case, timeout)
    strictness = candidate.capabilities.errors
    verdict = judge_error(reference, got, strictness, case.fault.name if case.fault else "", hazards.unstable(case),
                          call_form(case))
    problems = verdict.problems + judge_warnings(reference, got, strictness)
    if problems:
        raise ConformanceFailure(candidate.name, case, problems)
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
    """Runs the checks for one candidate, each case in the worker process unless ``isolate=False``."""

    def __init__(self, candidate: Candidate, isolate: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.candidate, self.isolate, self.timeout = candidate, isolate, timeout
        self.calls = 0  # examples run, for reports
        self.expected: list = []  # ExpectedFailure entries with `when`, for the test now running
        self.expected_seen: list[str] = []  # reasons of the failures they covered

    def _expected(self, case: Any, check: Callable[[], Any]) -> Any:
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
        """:func:`~conformance.checks.check_forward`, isolated; ``diagnose`` defaults to "this is the example
        hypothesis reports"."""
        self._check(case, CheckForward(self.candidate.path, case, repeat), diagnose,
                    lambda diagnosed: check_forward(self.candidate, case, repeat, diagnosed))

    def gradients(self, case: Case, check: str = "gradients", diagnose: Optional[bool] = None) -> None:
        """The gradient check ``check`` (:func:`~conformance.checks.run_gradients`), isolated like :meth:`forward`."""
        self._check(case, CheckGradients(self.candidate.path, case, check), diagnose,
                    lambda diagnosed: run_gradients(self.candidate, case, check, diagnosed))

    def _check(self, case: Case, request: Union[CheckForward, CheckGradients], diagnose: Optional[bool],
               inline: Callable[[bool], None]) -> None:
        """One valid case's check: sent to the worker as ``request`` with ``diagnose`` filled in, or run here
        as ``inline(diagnose)``; a failure an expected-failure entry covers is recorded."""
        self.calls += 1
        self._expected(case, lambda: self._run(case, request, diagnose, inline))

    def _run(self, case: Case, request: Union[CheckForward, CheckGradients], diagnose: Optional[bool],
             inline: Callable[[bool], None]) -> None:
        diagnosed = _final_example() if diagnose is None else diagnose
        if not self.isolate:
            return self._inline(case, lambda: inline(diagnosed))
        # keyed by the request without `diagnose`: hypothesis' final replay of a timed-out example gets the
        # same time-out
        return self._isolated(case, ask(replace(request, diagnose=diagnosed), timeout=self.timeout, key=request))

    def _inline(self, case: Case, check: Callable[[], None]) -> None:
        """A check run in this process; a process port's program that crashed fails the case, as isolated."""
        try:
            return check()
        except ProcessFailure as failure:
            return self._crashed(case, str(failure))

    def _isolated(self, case: Case, result: CallResult) -> None:
        """An isolated check's result: its failure raised, a crash or a time-out as a failure of the case."""
        if isinstance(result, Answered):
            reply = result.value
            if isinstance(reply, Failed):
                raise reply.failure
            if isinstance(reply, PortProcessFailed):
                return self._crashed(case, reply.what)
            return None
        if isinstance(result, TimedOut):
            raise ConformanceFailure(self.candidate.name, case, [Problem("timeout", (
                f"the candidate {result.what}: {_SLOW_ADVICE}"))])
        if isinstance(result, Crashed):
            return self._crashed(case, result.what)
        raise _machinery_failed("run the case", result.text)

    def _crashed(self, case: Case, what: str) -> None:
        if _torch_record(case).crashed:
            raise RuntimeError(f"torch itself crashed on a valid case: {case!r}")
        raise ConformanceFailure(self.candidate.name, case, [Problem("crashed", f"the candidate {what} on this case")])

    def error(self, case: Case) -> list[Note]:
        """:func:`check_error` (always isolated)."""
        self.calls += 1
        return self._expected(case, lambda: check_error(self.candidate, case, self.timeout))

    def packing(self, call: PackingCall, functions: Any) -> list[Note]:
        """:func:`~conformance.checks.check_packing_error` (in-process: packing functions are plain Python)."""
        self.calls += 1
        return check_packing_error(self.candidate, call, functions)
