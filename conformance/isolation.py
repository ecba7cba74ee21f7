"""Running calls in a separate worker process, so that a crash or a hang cannot end the run.

torch 2.13 itself segfaults on some invalid packed calls (pytorch/pytorch#173946), and a port
may crash or hang on anything.  Invalid calls therefore run in a long-lived worker process
(started once, restarted after a crash or a time-out).  A call that kills the worker comes back
as ``("crashed", "was killed by signal 11 (SIGSEGV)")``, one that runs too long as
``("crashed", "did not finish within 30 s")``, and the run goes on.

The worker is a plain ``python -m conformance.isolation`` subprocess speaking pickled frames on
its stdin and on a duplicate of its stdout; anything the port prints goes to stderr.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from typing import Any, Optional

__all__ = ["Worker", "run_isolated", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0
_HEADER = struct.Struct("<Q")


def _write_frame(stream: Any, payload: Any) -> None:
    data = pickle.dumps(payload)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(fd: int, size: int) -> Optional[bytes]:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> Any:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        raise EOFError
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)


class Worker:
    """One worker process; :meth:`call` runs an operation in it with a time limit."""

    def __init__(self) -> None:
        self.process: Optional[subprocess.Popen] = None
        self.spare: Optional[subprocess.Popen] = None  # started after a crash: shrinking crashes again

    @staticmethod
    def _launch() -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen([sys.executable, "-m", "conformance.isolation"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)

    def _start(self) -> subprocess.Popen:
        if self.spare is not None and self.spare.poll() is None:
            self.process, self.spare = self.spare, None
        else:
            self.process = self._launch()
        return self.process

    def _replace(self) -> None:
        """Forget a dead or stuck worker, and have a spare importing in the background."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        if self.spare is None or self.spare.poll() is not None:
            self.spare = self._launch()

    def stop(self) -> None:
        for process in (self.process, self.spare):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self.process = self.spare = None

    def call(self, operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Any]:
        """``("ok", value)``, ``("failed", ConformanceFailure)``, ``("error", traceback_text)`` or
        ``("crashed", what happened)``."""
        process = self.process if self.process is not None and self.process.poll() is None else self._start()
        try:
            _write_frame(process.stdin, (operation, args))
        except BrokenPipeError:
            return self._crashed()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            self._replace()
            return "crashed", f"did not finish within {timeout:g} s (a per-case time limit)"
        try:
            return _read_frame(process.stdout.fileno())
        except EOFError:
            return self._crashed()

    def _crashed(self) -> tuple[str, str]:
        assert self.process is not None
        code = self.process.wait()
        self._replace()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
            return "crashed", f"was killed by signal {-code} ({name})"
        return "crashed", f"exited with status {code}"


_WORKER = Worker()
atexit.register(_WORKER.stop)


def run_isolated(operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Any]:
    """Run a registered operation in this process's worker."""
    return _WORKER.call(operation, *args, timeout=timeout)


# ------------------------------------------------------------------ the worker side
def _operations() -> dict:
    from . import checks, errors
    from .registry import resolve

    candidates: dict[str, Any] = {}

    def candidate(spec: str) -> Any:
        if spec not in candidates:
            candidates[spec] = resolve(spec)
        return candidates[spec]

    return {
        "reference": errors.record_reference,
        "candidate": lambda spec, case: errors.record_candidate(candidate(spec), case),
        "forward": lambda spec, case, repeat: checks.check_forward(candidate(spec), case, repeat),
        "ping": lambda: "pong",
    }


def _serve() -> None:
    import traceback

    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the port prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import torch

    from .verdict import ConformanceFailure

    torch.set_num_threads(1)
    operations = _operations()
    while True:
        try:
            operation, args = _read_frame(sys.stdin.buffer.fileno())
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", operations[operation](*args))
        except ConformanceFailure as failure:
            reply = ("failed", failure)
        except BaseException:  # report, and stay alive for the next call
            reply = ("error", traceback.format_exc())
        _write_frame(protocol_out, reply)


if __name__ == "__main__":
    _serve()
