"""The worker process behind :mod:`conformance.isolation`: ``python -m conformance.worker``.

It resolves the candidate once, then serves operations (run a valid case's checks, record what
torch or the candidate does with an invalid call) until its stdin closes.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
from typing import Any, Optional

from . import checks, errors
from .isolation import DEFAULT_TIMEOUT, ForkedCall, read_frame, run_in_fork, write_frame
from .processes import ProcessFailure
from .registry import resolve
from .verdict import ConformanceFailure


def _record(status: str, value: Any) -> errors.CallRecord:
    """A forked call's outcome as a record."""
    if status == "ok":
        return value
    if status in ("crashed", "timeout"):  # a forked call past its limit is a crash of that call (see ForkedCall.result)
        return errors.CallRecord(crashed=value)
    # the child failed outside the call it records: after torch corrupts its heap
    # (pytorch/pytorch#173946) anything may follow, so this is a crash of that call too
    last = (str(value).strip().splitlines() or ["no message"])[-1]
    return errors.CallRecord(crashed=f"failed in its isolated process: {last}")


def _forked_record(function: Any, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> errors.CallRecord:
    return _record(*run_in_fork(function, *args, timeout=timeout))


#: The time limit of a forked call whose answer is reference-undefined anyway: torch's own (an invalid
#: call on a tiny case takes milliseconds; a hang is torch looping on the heap it corrupted), and a
#: drop-in's on a fault of ``errors.UNSTABLE_PACKED_FAULTS``, where a hang is tolerated.  Waiting the
#: full per-case limit for those cost 30 s in about one run in five.
UNDEFINED_TIME_LIMIT = 5.0


def _candidate_time_limit(case: Any) -> float:
    return UNDEFINED_TIME_LIMIT if errors.unstable(case) else DEFAULT_TIMEOUT


def _adopt(paths: list, environ: Optional[dict] = None) -> None:
    """Take the pytest process's import path, and its environment (a worker forked by the server)."""
    sys.path[:] = paths
    if environ is not None:
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)


def _operations() -> dict:
    candidates: dict[str, Any] = {}
    prepared: list[errors.Prepared] = []  # the invalid case last built here: torch's call, then the candidate's

    def candidate(spec: str) -> Any:
        if spec not in candidates:
            candidates[spec] = resolve(spec)
            gc.freeze()  # the port's modules live as long as this process (see serve)
        return candidates[spec]

    def prepare(case: Any) -> errors.Prepared:
        if not prepared or prepared[0].case != case:
            prepared[:] = [errors.prepare(case)]
        return prepared[0]

    # a fork of a process holding torch costs ~10 ms here, ten times an invalid call.
    # Only calls that may corrupt torch's heap and crash it later (errors.may_corrupt_heap, the
    # packed calls of pytorch/pytorch#173946) fork; the child inherits the case already built.  Any
    # other crash kills this worker during the very call that caused it: that case fails, the worker
    # is replaced.  A drop-in is torch code too (fork-safe); an adapter may hold threads (JAX) that
    # fork would break, and its crashes are its own.
    started: dict = {}  # (spec, case) -> a drop-in's forked call, started beside torch's

    def forget_started() -> None:
        for call in started.values():
            call.kill()
        started.clear()

    def record_candidate(spec: str, case: Any) -> errors.CallRecord:
        if (spec, case) in started:
            return _record(*started.pop((spec, case)).result())
        forget_started()
        port, built = candidate(spec), prepare(case)
        if port.kind == "drop-in" and errors.may_corrupt_heap(built):
            return _forked_record(errors.record_candidate, port, case, built, timeout=_candidate_time_limit(case))
        return errors.record_candidate(port, case, built)

    def record_reference(case: Any, spec: Optional[str] = None) -> errors.CallRecord:
        """torch's record; given the candidate's ``spec``, a drop-in's forked call starts now too, to
        run on another core while torch's does, for the "candidate" operation that follows."""
        forget_started()
        built = prepare(case)
        if not errors.may_corrupt_heap(built):
            return errors.record_reference(case, built)
        if spec is not None and candidate(spec).kind == "drop-in":
            started[(spec, case)] = ForkedCall(errors.record_candidate, (candidate(spec), case, built),
                                               _candidate_time_limit(case))
        return _forked_record(errors.record_reference, case, built, timeout=UNDEFINED_TIME_LIMIT)

    return {
        "reference": record_reference,
        "candidate": record_candidate,
        "forward": lambda spec, case, repeat, diagnose=False: checks.check_forward(candidate(spec), case, repeat, diagnose),
        "gradients": lambda spec, case, check, diagnose=False: checks.run_gradients(candidate(spec), case, check,
                                                                                   diagnose),
        "ping": lambda: "pong",
        "path": _adopt,
    }


def serve(requests: int = 0, replies: Any = None) -> None:
    """Answer the operations read from fd ``requests`` on the stream ``replies`` until end of input.

    Started as ``python -m conformance.worker``: stdin, and a duplicate of stdout.  Forked by
    :mod:`conformance.forkserver`: both on the connection.
    """
    # Ctrl-C reaches the whole process group: it is pytest's to handle (it stops the run, and this
    # process ends with it), not a KeyboardInterrupt traceback from each worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(1), "wb") if replies is None else replies
    os.dup2(2, 1)  # whatever the port prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(1)
    # torch's objects live as long as this process; frozen, no collection walks them
    # again, and a forked child's collections do not touch (copy) their pages
    gc.freeze()
    operations = _operations()
    while True:
        try:
            operation, args = read_frame(requests)
        except (EOFError, ConnectionError):
            return
        try:
            reply: tuple[str, Any] = ("ok", operations[operation](*args))
        except ConformanceFailure as failure:
            reply = ("failed", failure)
        except ProcessFailure as failure:  # a process port's program crashed, hung or broke the protocol:
            reply = ("crashed", str(failure))  # a crash of the candidate, with what its process did
        except BaseException:  # noqa: BLE001 - report, and stay alive for the next call
            reply = ("error", traceback.format_exc())
        try:
            write_frame(protocol_out, reply)
        except OSError:  # the pytest process is gone (stopped, killed): nobody to answer, nothing to report
            return


if __name__ == "__main__":
    serve()
