"""Child processes: how one ended, a child that dies with its parent, and a call run in a forked child.

A call that may crash the process making it (torch corrupts its heap on some invalid packed calls) runs
in a forked child: :class:`ForkedCall`.  Fork only from a single-threaded process (the worker sets
torch to one thread): fork copies one thread, and a lock another thread held stays locked in the child.
Standard library only.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
from typing import Any, Optional

from .process_messages import Answered, CallResult, Crashed, Errored, TimedOut

__all__ = ["ForkedCall", "die_with_parent", "ended", "run_in_fork"]


def ended(code: int) -> str:
    """How a process ended, from its exit code as subprocess gives it (negative: killed by a signal)."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
        return f"was killed by signal {-code} ({name})"
    return f"exited with status {code}"


def die_with_parent(deadline: Optional[float] = None, signum: int = signal.SIGKILL) -> None:
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


_UNREAPED: list[int] = []  # forked children that sent their result and are still exiting
_FORKS = [0]  # forks so far; every 64th first collapses memory again (the parent's writes split huge pages)


def _collapse_into_huge_pages() -> None:
    """Back this process's private writable memory with 2 MB pages where the kernel can.

    A fork copies a page-table entry per 4 kB page, and tearing the child down walks them again: with a
    large heap, most of a forked call's kernel time.  With huge pages one entry covers 2 MB (the figures:
    ``docs/performance.md``).  ``MADV_COLLAPSE`` exists on Linux >= 6.1; elsewhere the call fails,
    harmlessly.
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
            die_with_parent(deadline=timeout)
            try:
                payload = pickle.dumps(Answered(function(*args)))
            except BaseException as exc:  # noqa: BLE001 - the child reports whatever ends it, and exits
                payload = pickle.dumps(Errored(repr(exc)))
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

    def result(self) -> CallResult:
        """:class:`Answered`, :class:`Errored` (the function raised), :class:`Crashed` or :class:`TimedOut`; waits
        until the deadline at most, and is not retried: the child starts from its parent's state each
        time, so a second try would take as long as the first.

        A child that sent back a readable result is not waited for: tearing down a process with a large
        heap takes time, and what it does after sending cannot change the result.
        """
        data, finished = self._read()
        if finished and data:
            try:
                result: CallResult = pickle.loads(data)
            except Exception as exc:  # noqa: BLE001 - a child with a corrupted heap may send garbage
                result = Crashed(f"sent back an unreadable result ({type(exc).__name__})")
            _UNREAPED.append(self.pid)
            return result
        if not finished:
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        if not finished:
            return TimedOut(f"did not finish within {self.timeout:g} s")
        return Crashed(ended(os.waitstatus_to_exitcode(status)))


def run_in_fork(function: Any, *args: Any, timeout: float) -> CallResult:
    """Run ``function`` in a forked child (see :meth:`ForkedCall.result`).

    Only for single-threaded torch code (the worker sets one thread): fork is unsafe with threads.
    """
    return ForkedCall(function, args, timeout).result()
