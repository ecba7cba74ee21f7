"""Running calls in a separate worker process, so that a crash or a hang cannot end the run.

torch 2.13 itself segfaults on some invalid packed calls (pytorch/pytorch#173946), and a port
may crash or hang on anything.  Invalid calls therefore run in a long-lived worker process
(started once, restarted after a crash or a time-out).  A call that kills the worker comes back
as ``("crashed", "was killed by signal 11 (SIGSEGV)")``, one that runs too long as
``("crashed", "did not finish within 30 s")``, and the run goes on.

The worker (:mod:`conformance.worker`) is a plain subprocess speaking pickled frames on its stdin
and on a duplicate of its stdout; anything the port prints goes to stderr.
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

__all__ = ["Worker", "prestart", "run_isolated", "run_in_fork", "read_frame", "write_frame", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0
_HEADER = struct.Struct("<Q")


def write_frame(stream: Any, payload: Any) -> None:
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


def read_frame(fd: int) -> Any:
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
        self.prestarted_with: Optional[set] = None  # sys.path when prestart() launched the process

    def prestart(self) -> None:
        """Launch the worker now, so that it imports torch while pytest starts up (issue 6: ~1 s per run).

        The first call checks that no import path was added meanwhile (the worker's PYTHONPATH is
        this process's ``sys.path`` at launch), and relaunches it if one was.
        """
        if self.process is None:
            self.prestarted_with = {p for p in sys.path if p}
            self.process = self._launch()

    @staticmethod
    def _launch() -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen([sys.executable, "-m", "conformance.worker"], stdin=subprocess.PIPE,
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
        if self.prestarted_with is not None:  # the current folder is on the worker's path anyway (registry)
            added = {p for p in sys.path if p} - self.prestarted_with - {os.getcwd()}
            self.prestarted_with = None
            if added and self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait()
                self.process = None
        process = self.process if self.process is not None and self.process.poll() is None else self._start()
        try:
            write_frame(process.stdin, (operation, args))
        except BrokenPipeError:
            return self._crashed()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            self._replace()
            return "crashed", f"did not finish within {timeout:g} s (a per-case time limit)"
        try:
            return read_frame(process.stdout.fileno())
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


def prestart() -> None:
    """Start this process's worker now (see :meth:`Worker.prestart`)."""
    _WORKER.prestart()


def run_isolated(operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Any]:
    """Run a registered operation in this process's worker."""
    return _WORKER.call(operation, *args, timeout=timeout)


def run_in_fork(function: Any, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Any]:
    """Run ``function`` in a forked child: ``("ok", value)``, ``("error", text)`` or ``("crashed", what)``.

    Only for single-threaded torch code (the worker sets one thread): fork is unsafe with threads.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, and leave without running any cleanup
        os.close(read_end)
        try:
            payload = pickle.dumps(("ok", function(*args)))
        except BaseException as exc:
            payload = pickle.dumps(("error", repr(exc)))
        with os.fdopen(write_end, "wb") as stream:
            stream.write(payload)
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], timeout)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read_end, "rb") as stream:
        data = stream.read() if ready else b""
    _, status = os.waitpid(pid, 0)
    if data:
        try:
            return pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - a child with a corrupted heap may send garbage
            return "crashed", f"sent back an unreadable result ({type(exc).__name__})"
    if not ready:
        return "crashed", f"did not finish within {timeout:g} s"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return "crashed", f"was killed by signal {number} ({signal.Signals(number).name})"
    return "crashed", f"exited with status {os.WEXITSTATUS(status)}"
