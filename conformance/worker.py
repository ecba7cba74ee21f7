"""The worker process behind :mod:`conformance.isolation`: ``python -m conformance.worker``.

It resolves the candidate once, then serves operations (run a valid case's checks, record what
torch or the candidate does with an invalid call) until its stdin closes.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from . import checks, errors
from .isolation import read_frame, run_in_fork, write_frame
from .registry import resolve
from .verdict import ConformanceFailure


def _forked_record(function: Any, *args: Any) -> errors.CallRecord:
    status, value = run_in_fork(function, *args)
    if status == "ok":
        return value
    if status == "crashed":
        return errors.CallRecord(crashed=value)
    # the child failed outside the call it records: after torch corrupts its heap
    # (pytorch/pytorch#173946) anything may follow, so this is a crash of that call too
    last = (str(value).strip().splitlines() or ["no message"])[-1]
    return errors.CallRecord(crashed=f"failed in its isolated process: {last}")


# issue 6 (speed): a fork of a process holding torch costs ~10 ms of kernel time here, 95% of an
# invalid call's cost.  Only invalid *packed* calls reach torch's kernel unchecked and corrupt its heap
# (pytorch/pytorch#173946); a dense invalid call is rejected by torch's checks before any kernel work,
# so it runs in this worker directly.  A crash there still fails only that case: the worker is replaced.
def _needs_fork(case: Any) -> bool:
    return case.call.packed


def _operations() -> dict:
    candidates: dict[str, Any] = {}

    def candidate(spec: str) -> Any:
        if spec not in candidates:
            candidates[spec] = resolve(spec)
        return candidates[spec]

    def record_candidate(spec: str, case: Any) -> errors.CallRecord:
        # a drop-in is torch code too (fork-safe); an adapter may hold threads (JAX) that fork would break
        if candidate(spec).kind == "drop-in" and _needs_fork(case):
            return _forked_record(errors.record_candidate, candidate(spec), case)
        return errors.record_candidate(candidate(spec), case)

    def record_reference(case: Any) -> errors.CallRecord:
        if _needs_fork(case):
            return _forked_record(errors.record_reference, case)
        return errors.record_reference(case)

    return {
        # torch corrupts its heap on some invalid packed calls and dies later: each such call
        # gets a forked child of its own (torch runs single-threaded here, so fork is safe)
        "reference": record_reference,
        "candidate": record_candidate,
        "forward": lambda spec, case, repeat, diagnose=False: checks.check_forward(candidate(spec), case, repeat, diagnose),
        "ping": lambda: "pong",
    }


def serve() -> None:
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the port prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(1)
    operations = _operations()
    while True:
        try:
            operation, args = read_frame(sys.stdin.buffer.fileno())
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", operations[operation](*args))
        except ConformanceFailure as failure:
            reply = ("failed", failure)
        except BaseException:  # report, and stay alive for the next call
            reply = ("error", traceback.format_exc())
        write_frame(protocol_out, reply)


if __name__ == "__main__":
    serve()
