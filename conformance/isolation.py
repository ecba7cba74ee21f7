"""Running calls in a separate worker process, so that a crash or a hang cannot end the run.

torch itself segfaults on some invalid packed calls (pytorch/pytorch#173946), and a port may crash or
hang on anything.  So calls run in a long-lived worker process (:mod:`conformance.worker`), started
once and replaced after a crash or a time-out; a call that kills it comes back as ``("crashed", ...)``,
one that runs past its limit twice (see :meth:`Worker.call`) as ``("timeout", ...)``, and the run goes
on.  :func:`run_in_fork` runs a call that may corrupt torch's heap in a forked child of the worker.

The worker speaks pickled frames: forked by the run's worker server (:mod:`conformance.forkserver`) on
a Unix socket, or started as ``python -m conformance.worker`` on its stdin and a duplicate of its
stdout.  Anything the port prints goes to stderr.  The design and its reasons: ``docs/architecture.md``,
"Isolation: the worker process"; what a crash or a hang does to a case: ``docs/what-is-checked.md``.
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
import time
from collections.abc import Hashable
from typing import Any, Optional

__all__ = ["ForkedCall", "Worker", "prestart", "run_isolated", "run_in_fork", "read_frame", "write_frame",
           "DEFAULT_TIMEOUT", "RETRY_FACTOR"]

DEFAULT_TIMEOUT = 30.0
#: A call past its limit is retried once, in a fresh worker, with this many times the limit (see :meth:`Worker.call`).
RETRY_FACTOR = 2
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


def _ended(code: int) -> str:
    """How a process ended, from its exit code as subprocess gives it (negative: killed by a signal)."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
        return f"was killed by signal {-code} ({name})"
    return f"exited with status {code}"


def _die_with_parent(deadline: Optional[float] = None, signum: int = signal.SIGKILL) -> None:
    """In a forked child: get ``signum`` when the parent ends (Linux), and end at ``deadline`` seconds at the latest.

    A child hung in a call (torch loops on some corrupted heaps) whose parent was killed first
    would otherwise spin on, an orphan eating a core for the rest of the run.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signum)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() == 1:  # the parent ended before the line above
        os._exit(1)
    if deadline is not None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(max(1, int(deadline) + 1))


class Worker:
    """One worker process; :meth:`call` runs an operation in it with a time limit."""

    def __init__(self) -> None:
        self.process: Any = None  # a subprocess.Popen, or a forkserver.ServedWorker
        self.spare: Any = None  # started after a crash: shrinking crashes again
        self.path: tuple = ()  # the import path the worker process has
        self.timed_out: dict = {}  # (key, limit) -> message, for the calls that ran past their limit twice

    def prestart(self) -> None:
        """Launch the worker now, so that it imports torch while pytest starts up (~1 s per run).

        Each call first gives the worker this process's import path if it changed since (pytest adds
        test folders while collecting); a worker forked by the server also gets the environment.
        """
        if self.process is None:
            self.process = self._launch()
            # a subprocess starts with this import path; a forked worker with the server's, set on its first call
            self.path = tuple(sys.path) if isinstance(self.process, subprocess.Popen) else ()

    @staticmethod
    def _launch() -> Any:
        """A worker forked by this run's server (:mod:`conformance.forkserver`) where there is one,
        else a fresh ``python -m conformance.worker``."""
        from . import forkserver

        server = forkserver.address()
        if server is not None:
            try:
                return forkserver.ServedWorker(server)
            except OSError:
                pass
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen([sys.executable, "-m", "conformance.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)

    def _start(self) -> Any:
        if self.spare is not None and self.spare.poll() is None:
            # crashes come in runs (hypothesis shrinks a crashing case): the next spare starts
            # importing torch now, so that the next crash does not wait for it
            self.process, self.spare = self.spare, self._launch()
        else:
            self.process = self._launch()
        self.path = ()  # a fresh interpreter: its import path is set on the first call
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

    def call(self, operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT,
             key: Optional[Hashable] = None) -> tuple[str, Any]:
        """``("ok", value)``, ``("failed", ConformanceFailure)``, ``("error", traceback_text)``,
        ``("crashed", what happened)`` or ``("timeout", what happened)``.

        A call past ``timeout`` is retried once, in a fresh worker, with ``RETRY_FACTOR`` times the
        limit; only a call past both is a ``"timeout"``.  What tells a slow first call from a hang is
        only whether it ends when given more time: a port that compiles per shape (JAX,
        ``torch.compile``) or pays a one-off cost on its first call in a process may pass the limit
        once and be fast afterwards, and failed at once, hypothesis would replay the example, see it
        pass, and call the run flaky.  The retry gets a longer limit, not a warmed worker: warming one
        means letting the slow call run past the limit anyway, whereas the timed-out worker, perhaps
        hung, is killed at the limit and the retry starts from a known state, paying the one-off costs
        again within the longer limit.  A hang still fails, within ``(1 + RETRY_FACTOR) * timeout``.
        Given a ``key``, a time-out is remembered: the same call again in this process (hypothesis'
        replay of the failing example) gets the same answer at once, neither another wait nor a
        different verdict.
        """
        memo = None if key is None else (key, timeout)
        if memo in self.timed_out:
            return "timeout", self.timed_out[memo]
        status, value = self._call(operation, args, timeout)
        if status != "timeout":
            return status, value
        longer = timeout * RETRY_FACTOR
        status, value = self._call(operation, args, longer)  # the timed-out worker was replaced: a fresh one
        if status != "timeout":
            return status, value
        message = f"did not finish within {timeout:g} s, nor within {longer:g} s on a retry in a fresh worker"
        if memo is not None:
            self.timed_out[memo] = message
        return "timeout", message

    def _call(self, operation: str, args: tuple, timeout: float) -> tuple[str, Any]:
        """One try, in this worker or a fresh one if it is gone, all of it within ``timeout``."""
        process = self.process if self.process is not None and self.process.poll() is None else self._start()
        deadline = time.monotonic() + timeout
        if self.path != tuple(sys.path):  # pytest added a test folder: the port may be imported from there
            # a forked worker has the environment of the server's start: it takes this process's too
            environ = None if isinstance(process, subprocess.Popen) else dict(os.environ)
            status, value = self._send(process, "path", (list(sys.path), environ), deadline, timeout)
            if status != "ok":
                return status, value
            self.path = tuple(sys.path)
        return self._send(process, operation, args, deadline, timeout)

    def _send(self, process: Any, operation: str, args: tuple, deadline: float, timeout: float) -> tuple[str, Any]:
        try:
            write_frame(process.stdin, (operation, args))
        except OSError:  # a pipe or a connection whose other end is gone
            return self._crashed()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            self._replace()
            return "timeout", f"did not finish within {timeout:g} s"
        try:
            return read_frame(process.stdout.fileno())
        except (EOFError, OSError):
            return self._crashed()

    def _crashed(self) -> tuple[str, str]:
        assert self.process is not None
        code = self.process.wait()
        self._replace()
        return "crashed", _ended(code)


_WORKER = Worker()
atexit.register(_WORKER.stop)


def prestart() -> None:
    """Start this process's worker now (see :meth:`Worker.prestart`)."""
    _WORKER.prestart()


def run_isolated(operation: str, *args: Any, timeout: float = DEFAULT_TIMEOUT,
                 key: Optional[Hashable] = None) -> tuple[str, Any]:
    """Run a registered operation in this process's worker (see :meth:`Worker.call`)."""
    return _WORKER.call(operation, *args, timeout=timeout, key=key)


_UNREAPED: list[int] = []  # forked children that sent their result and are still exiting
_FORKS = [0]  # forks so far; every 64th first collapses memory again (the parent's writes split huge pages)


def _collapse_into_huge_pages() -> None:
    """Back this process's private writable memory with 2 MB pages where the kernel can.

    A fork copies a page-table entry per 4 kB page, and tearing the child down walks them again:
    with torch's ~150 MB of heap, ~8 ms of kernel time per forked call here.  With huge pages one
    entry covers 2 MB: measured 12.8 -> 3.9 ms per bare fork, and a third less kernel time over the
    packed-call tests.  ``MADV_COLLAPSE`` exists on Linux >= 6.1; elsewhere the call fails, harmlessly.
    """
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            regions = [line.split() for line in maps]
    except (OSError, AttributeError):
        return
    huge, collapse = 2 << 20, 25  # 2 MB; MADV_COLLAPSE
    for fields in regions:
        low, high = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else ""
        if "w" in fields[1] and "p" in fields[1] and name in ("", "[heap]"):
            start, end = -(-low // huge) * huge, high // huge * huge
            if end > start:
                madvise(start, end - start, collapse)


def _reap_finished() -> None:
    for pid in list(_UNREAPED):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _UNREAPED.remove(pid)


class ForkedCall:
    """A call running in a forked child; :meth:`result` collects it (see :func:`run_in_fork`)."""

    def __init__(self, function: Any, args: tuple, timeout: float) -> None:
        _reap_finished()
        if _FORKS[0] % 64 == 0 and sys.platform.startswith("linux"):
            _collapse_into_huge_pages()
        _FORKS[0] += 1
        self.timeout, self.deadline = timeout, time.monotonic() + timeout
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: compute, send, and leave without running any cleanup
            os.close(read_end)
            _die_with_parent(deadline=timeout)
            try:
                payload = pickle.dumps(("ok", function(*args)))
            except BaseException as exc:  # noqa: BLE001 - the child reports whatever ends it, and exits
                payload = pickle.dumps(("error", repr(exc)))
            with os.fdopen(write_end, "wb") as stream:
                stream.write(payload)
            os._exit(0)
        os.close(write_end)
        self.read_end = read_end

    def _read(self) -> tuple[bytes, bool]:
        """All the child sent, and whether it closed its end before the deadline."""
        chunks: list[bytes] = []
        try:
            while True:
                ready, _, _ = select.select([self.read_end], [], [], max(0.0, self.deadline - time.monotonic()))
                if not ready:
                    return b"".join(chunks), False
                chunk = os.read(self.read_end, 1 << 16)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
        finally:
            os.close(self.read_end)

    def kill(self) -> None:
        """Stop a call whose result nobody will ask for."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self.read_end)
        os.waitpid(self.pid, 0)

    def result(self) -> tuple[str, Any]:
        """``("ok", value)``, ``("error", text)``, ``("crashed", what)`` or ``("timeout", what)``; waits
        until the deadline at most, and is not retried: the child starts from its parent's state each
        time, so a second try would take as long as the first.

        A child that sent back a readable result is not waited for: tearing down a process holding
        torch takes ~3 ms, and what it does after sending cannot change the result.
        """
        data, finished = self._read()
        if finished and data:
            try:
                result = pickle.loads(data)
            except Exception as exc:  # noqa: BLE001 - a child with a corrupted heap may send garbage
                result = "crashed", f"sent back an unreadable result ({type(exc).__name__})"
            _UNREAPED.append(self.pid)
            return result
        if not finished:
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        if not finished:
            return "timeout", f"did not finish within {self.timeout:g} s"
        return "crashed", _ended(os.waitstatus_to_exitcode(status))


def run_in_fork(function: Any, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Any]:
    """Run ``function`` in a forked child: ``("ok", value)``, ``("error", text)``, ``("crashed", what)``
    or ``("timeout", what)``.

    Only for single-threaded torch code (the worker sets one thread): fork is unsafe with threads.
    """
    return ForkedCall(function, args, timeout).result()
