"""The bridge between the checks and the worker process that runs them: typed requests and replies, the
worker's side (:func:`prepare`, :func:`answer`) and the client's (:func:`ask`).

It is the only module that knows both the process layer (:mod:`conformance.isolation`,
:mod:`conformance.forkserver`, :mod:`conformance.worker`: standard library only, told this module's name)
and the checks.  Each request is one question with everything needed to answer it; no request depends on
an earlier one.  The design: ``docs/architecture.md``, "Isolation: the worker process".
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import checks, forkserver, hazards
from .candidates import Candidate
from .case import Case
from .children import ForkedCall, run_in_fork
from .invalid_calls import CallRecord, Prepared, prepare as prepare_call, record_candidate, record_reference
from .isolation import DEFAULT_TIMEOUT, Worker
from .process_messages import Answered, CallResult, Crashed, TimedOut
from .processes import ProcessFailure
from .registry import resolve
from .verdict import ConformanceFailure, Repeat

__all__ = ["SERVICE", "UNDEFINED_TIME_LIMIT", "CheckForward", "CheckGradients", "Failed", "InvalidCallRecords",
           "Passed", "PortProcessFailed", "RecordInvalidCall", "RecordTorchCall", "answer", "ask", "forked_record", "prepare",
           "prestart", "start_server"]

#: The module a worker process serves: this one.
SERVICE = __name__

#: The time limit of a forked call whose answer is reference-undefined anyway: torch's own (an invalid
#: call on a tiny case takes milliseconds; a hang is torch looping on the heap it corrupted), and a
#: drop-in's on a fault of ``hazards.UNSTABLE_PACKED_FAULTS``, where a hang is tolerated.
UNDEFINED_TIME_LIMIT = 5.0


# ------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class CheckForward:
    """:func:`conformance.checks.check_forward` for the candidate named ``candidate`` (its registry path)."""

    candidate: str
    case: Case
    repeat: Repeat = False
    diagnose: bool = False


@dataclass(frozen=True)
class CheckGradients:
    """:func:`conformance.checks.run_gradients`: the gradient check ``check`` (a name of ``verdict.CHECKS``)."""

    candidate: str
    case: Case
    check: str = "gradients"
    diagnose: bool = False


@dataclass(frozen=True)
class RecordInvalidCall:
    """What torch and the candidate each do with the invalid call ``case``: :class:`InvalidCallRecords`.

    ``time_limit`` is the candidate's (``--lstm-timeout``); a call that may corrupt torch's heap runs in a
    forked child with a limit of its own, a drop-in's beside torch's on another core."""

    candidate: str
    case: Case
    time_limit: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class RecordTorchCall:
    """torch's record of ``case`` alone (a :class:`~conformance.invalid_calls.CallRecord`): what the suite
    asks when the candidate's call took the worker down with it."""

    case: Case


Request = Union[CheckForward, CheckGradients, RecordInvalidCall, RecordTorchCall]


# ------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Passed:
    """The check found no difference."""


@dataclass(frozen=True)
class Failed:
    """The check found differences: ``failure`` says which."""

    failure: ConformanceFailure


@dataclass(frozen=True)
class PortProcessFailed:
    """A process port's own program crashed, hung or broke its protocol; ``what`` says which."""

    what: str


@dataclass(frozen=True)
class InvalidCallRecords:
    """The answer to :class:`RecordInvalidCall`."""

    reference: CallRecord
    candidate: CallRecord


# ------------------------------------------------------------------------------- the worker's side


def prepare() -> None:
    """Once per worker (in the server, before it forks any): torch imported, on one thread (the worker
    forks calls, and fork is unsafe with threads), and its objects frozen out of the collector's walks
    (a forked child's collections then do not touch, so copy, their pages)."""
    import torch

    torch.set_num_threads(1)
    gc.freeze()


class _Handler:
    """The worker's state between requests: the candidates resolved, and the invalid case built last."""

    def __init__(self) -> None:
        self.candidates: dict[str, Candidate] = {}
        self.prepared: Optional[Prepared] = None

    def candidate(self, path: str) -> Candidate:
        if path not in self.candidates:
            self.candidates[path] = resolve(path)
            gc.freeze()  # the port's modules live as long as this process
        return self.candidates[path]

    def built(self, case: Case) -> Prepared:
        if self.prepared is None or self.prepared.case != case:
            self.prepared = prepare_call(case)
        return self.prepared

    def answer(self, request: Request) -> Any:
        if isinstance(request, CheckForward):
            return self.check(lambda: checks.check_forward(self.candidate(request.candidate), request.case,
                                                           request.repeat, request.diagnose))
        if isinstance(request, CheckGradients):
            return self.check(lambda: checks.run_gradients(self.candidate(request.candidate), request.case,
                                                           request.check, request.diagnose))
        if isinstance(request, RecordInvalidCall):
            return self.records(request)
        if isinstance(request, RecordTorchCall):
            return self.torch_record(request.case)
        raise TypeError(f"not a request of {SERVICE}: {request!r}")

    @staticmethod
    def check(run: Any) -> Union[Passed, Failed, PortProcessFailed]:
        try:
            run()
        except ConformanceFailure as failure:
            return Failed(failure)
        except ProcessFailure as failure:
            return PortProcessFailed(str(failure))
        return Passed()

    def torch_record(self, case: Case) -> CallRecord:
        built = self.built(case)
        if not built.may_corrupt_heap():
            return record_reference(case, built)
        return _record(run_in_fork(record_reference, case, built, timeout=UNDEFINED_TIME_LIMIT))

    def records(self, request: RecordInvalidCall) -> InvalidCallRecords:
        # Only calls that may corrupt torch's heap and crash it later fork (a fork of a process holding
        # torch costs ten times an invalid call); the child inherits the case already built.  Any other
        # crash kills this worker during the very call that caused it.  A drop-in is torch code too
        # (fork-safe), and its forked call runs beside torch's; an adapter may hold threads (JAX) that
        # fork would break, and its crashes are its own.
        case, port, built = request.case, self.candidate(request.candidate), self.built(request.case)
        unstable = hazards.unstable(case)
        beside = None
        if port.kind == "drop-in" and built.may_corrupt_heap():
            limit = UNDEFINED_TIME_LIMIT if unstable else request.time_limit
            beside = ForkedCall(record_candidate, (port, case, built), limit)
        if unstable:  # its answer would decide nothing, and costs a forked child
            reference = CallRecord(not_run=hazards.NOT_RUN_UNSTABLE)
        else:
            reference = self.torch_record(case)
        got = _record(beside.result()) if beside is not None else record_candidate(port, case, built)
        return InvalidCallRecords(reference, got)


def _record(result: CallResult) -> CallRecord:
    """A forked call's result as a record: a crash or a time-out is a crash of that call."""
    if isinstance(result, Answered):
        return result.value
    if isinstance(result, (Crashed, TimedOut)):
        return CallRecord(crashed=result.what)
    # the child failed outside the call it records: after torch corrupts its heap
    # (pytorch/pytorch#173946) anything may follow, so this is a crash of that call too
    last = (result.text.strip().splitlines() or ["no message"])[-1]
    return CallRecord(crashed=f"failed in its isolated process: {last}")


_HANDLER: list[_Handler] = []


def answer(request: Request) -> Any:
    """The worker's answer to one request (see the reply types above)."""
    if not _HANDLER:
        _HANDLER.append(_Handler())
    return _HANDLER[0].answer(request)


# ------------------------------------------------------------------------------- the client's side

_WORKER = Worker(SERVICE)
atexit.register(_WORKER.stop)


def start_server() -> Optional[str]:
    """Fork this run's worker server now (:func:`conformance.forkserver.start`), while there is one thread."""
    return forkserver.start(SERVICE)


def prestart() -> None:
    """Start this process's worker now, so that it is ready when the first case comes."""
    _WORKER.prestart()


def ask(request: Request, timeout: float = DEFAULT_TIMEOUT, key: Optional[Hashable] = None) -> CallResult:
    """Send ``request`` to this process's worker (:meth:`conformance.isolation.Worker.call`)."""
    return _WORKER.call(request, timeout=timeout, key=key)


def forked_record(function: Any, *args: Any, timeout: float) -> CallRecord:
    """``function(*args)``, a record-making call, run in a forked child and recorded as its call's record."""
    return _record(run_in_fork(function, *args, timeout=timeout))
