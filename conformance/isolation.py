"""The client of a worker process: calls that a crash or a hang cannot take the run down with them.

A port may crash or hang on anything, and torch itself segfaults on some invalid packed calls
(pytorch/pytorch#173946).  So calls run in a long-lived worker process (:mod:`conformance.worker`),
started once and replaced after a crash or a time-out; a call that kills it comes back as
:class:`Crashed`, one that runs past its limit twice (see :meth:`Worker.call`) as :class:`TimedOut`,
and the run goes on.

The worker serves one service, named by its module (the client is given it; this layer knows nothing
of what the requests mean), forked by the run's worker server (:mod:`conformance.forkserver`) on a Unix
socket, or started as ``python -m conformance.worker SERVICE`` on its stdin and a duplicate of its
stdout.  The design and its reasons: ``docs/architecture.md``, "Isolation: the worker process".
Standard library only.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Hashable
from typing import Any, Optional

from . import forkserver
from .children import ended
from .framing import read_frame, write_frame
from .process_messages import AdoptPath, Answered, CallResult, Crashed, TimedOut

__all__ = ["DEFAULT_TIMEOUT", "RETRY_FACTOR", "Worker"]

DEFAULT_TIMEOUT = 30.0
#: A call past its limit is retried once, in a fresh worker, with this many times the limit (see :meth:`Worker.call`).
RETRY_FACTOR = 2


class Worker:
    """One worker process serving ``service`` (a module name; see :mod:`conformance.worker`);
    :meth:`call` sends it a request with a time limit."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.process: Any = None  # a subprocess.Popen, or a forkserver.ServedWorker
        self.spare: Any = None  # started after a crash: shrinking crashes again
        self.path: tuple = ()  # the import path the worker process has
        self.timed_out: dict = {}  # (key, limit) -> the TimedOut, for the calls that ran past their limit twice

    def prestart(self) -> None:
        """Launch the worker now, so that it imports its service while pytest starts up.

        Each call first gives the worker this process's import path if it changed since (pytest adds
        test folders while collecting); a worker forked by the server also gets the environment.
        """
        if self.process is None:
            self.process = self._launch()
            # a subprocess starts with this import path; a forked worker with the server's, set on its first call
            self.path = tuple(sys.path) if isinstance(self.process, subprocess.Popen) else ()

    def _launch(self) -> Any:
        """A worker forked by this run's server for this service (:mod:`conformance.forkserver`) where
        there is one, else a fresh ``python -m conformance.worker SERVICE``."""
        server = forkserver.address(self.service)
        if server is not None:
            try:
                return forkserver.ServedWorker(server)
            except OSError:
                pass
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen([sys.executable, "-m", "conformance.worker", self.service], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)

    def _start(self) -> Any:
        if self.spare is not None and self.spare.poll() is None:
            # crashes come in runs (hypothesis shrinks a crashing case): the next spare starts
            # importing torch now, so that the next crash does not wait for it
            self.process, self.spare = self.spare, self._launch()
        else:
            self.process = self._launch()
            if self.process.poll() is not None:
                # a served worker the server never forked (the server is gone, though its socket still took
                # the connection): the next launch starts a subprocess, so that this call is not a crash
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

    def call(self, request: Any, timeout: float = DEFAULT_TIMEOUT, key: Optional[Hashable] = None) -> CallResult:
        """The service's answer to ``request`` (:class:`Answered`), the traceback of the service's own error
        (:class:`Errored`), or what ended the call: :class:`Crashed` or :class:`TimedOut`.

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
            return self.timed_out[memo]
        result = self._call(request, timeout)
        if not isinstance(result, TimedOut):
            return result
        longer = timeout * RETRY_FACTOR
        result = self._call(request, longer)  # the timed-out worker was replaced: a fresh one
        if not isinstance(result, TimedOut):
            return result
        result = TimedOut(f"did not finish within {timeout:g} s, nor within {longer:g} s on a retry in a fresh worker")
        if memo is not None:
            self.timed_out[memo] = result
        return result

    def _call(self, request: Any, timeout: float) -> CallResult:
        """One try, in this worker or a fresh one if it is gone, all of it within ``timeout``."""
        process = self.process if self.process is not None and self.process.poll() is None else self._start()
        deadline = time.monotonic() + timeout
        if self.path != tuple(sys.path):  # pytest added a test folder: the port may be imported from there
            # a forked worker has the environment of the server's start: it takes this process's too
            environ = None if isinstance(process, subprocess.Popen) else dict(os.environ)
            adopted = self._send(process, AdoptPath(tuple(sys.path), environ), deadline, timeout)
            if not isinstance(adopted, Answered):
                return adopted
            self.path = tuple(sys.path)
        return self._send(process, request, deadline, timeout)

    def _send(self, process: Any, request: Any, deadline: float, timeout: float) -> CallResult:
        try:
            write_frame(process.stdin, request)
        except OSError:  # a pipe or a connection whose other end is gone
            return self._crashed()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            self._replace()
            return TimedOut(f"did not finish within {timeout:g} s")
        try:
            return read_frame(process.stdout.fileno())
        except (EOFError, OSError):
            return self._crashed()

    def _crashed(self) -> Crashed:
        assert self.process is not None
        code = self.process.wait()
        self._replace()
        return Crashed(ended(code))
