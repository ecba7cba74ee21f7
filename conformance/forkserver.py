"""One process per run that imports the workers' service once and forks ready worker processes.

A worker started as ``python -m conformance.worker SERVICE`` imports its service (the suite's imports
torch, seconds of CPU), and under ``-n 2`` several such imports compete for the cores before the first
test.  Instead, pytest (the xdist controller under xdist) forks this server as it configures, before it
has any thread; the server imports and prepares the service once, then forks a worker for each
connection: the first worker of each pytest process that runs tests, and each replacement after a crash
or a time-out (a fork, where an import took a second).  Standard library only: the service is named
by the caller.

Linux only (fork, ``PR_SET_PDEATHSIG``, Unix sockets).  Elsewhere, with ``--lstm-isolation inline``,
and whenever the server cannot be reached, :mod:`conformance.isolation` starts
``python -m conformance.worker SERVICE`` instead.  The design: ``docs/architecture.md``, "The worker server";
its figures: ``docs/performance.md``.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Any, Optional

from . import worker
from .children import die_with_parent
from .framing import read_frame, write_frame

__all__ = ["ENV_VAR", "ServedWorker", "address", "start"]

#: ``<pid of the process that started the server>:<service>:<socket path>``, for the xdist workers it spawns.
ENV_VAR = "LSTM_CONFORMANCE_WORKER_SERVER"
_WORKER, _STATUS = b"w", b"s"
_PID = struct.Struct("<q")
_UNKNOWN = -1
_STARTED: list = []  # [pid, folder, socket path, service] of the server this process started
_UNUSABLE: list = []  # servers that failed to fork a worker


def start(service: str) -> Optional[str]:
    """Fork a server for ``service`` (a module name, see :mod:`conformance.worker`) now; its address, also
    put into ``ENV_VAR`` for the xdist workers to come.

    Only from a process with a single Python thread (fork copies one thread; a lock another held
    would stay locked forever in the child).  None where a server cannot be started.
    """
    if _STARTED:
        return address(service)
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return None
    try:
        folder = tempfile.mkdtemp(prefix="lstm-conformance-")
    except OSError:
        return None
    path = os.path.join(folder, "workers")
    try:  # fails on a path longer than a Unix socket's ~107 bytes (a long TMPDIR) too
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    with warnings.catch_warnings():
        # Python >= 3.12 warns on fork when the process has other OS threads: here only native pools
        # (OpenBLAS's, which re-creates them after a fork); no Python thread holds a lock
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _serve(listener, folder, service)
            code = 0
        except BaseException:  # noqa: BLE001 - report, and never return into pytest's code
            traceback.print_exc()
        finally:
            os._exit(code)
    listener.close()
    _STARTED[:] = [pid, folder, path, service]
    os.environ[ENV_VAR] = f"{os.getpid()}:{service}:{path}"
    atexit.register(_stop)
    return path


def address(service: str) -> Optional[str]:
    """The server for ``service`` this process may use: its own, or the one its parent (the xdist
    controller) started."""
    if _STARTED:
        path, served = _STARTED[2], _STARTED[3]
    else:
        owner, _, rest = os.environ.get(ENV_VAR, "").partition(":")
        served, _, path = rest.partition(":")
        if not (path and owner.isdigit() and int(owner) == os.getppid()):
            return None  # none, or one inherited from further up (a test's pytest subprocess): not this run's
    return None if path in _UNUSABLE or served != service else path


def _stop() -> None:
    """End the server and its workers; reaped, their CPU time counts in this process's (bench's cpu_s)."""
    pid, folder = _STARTED[0], _STARTED[1]
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.002)
    except (ProcessLookupError, ChildProcessError):
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _serve(listener: socket.socket, folder: str, service_name: str) -> None:
    """The server: import the service once, then fork a worker per connection and report how workers ended.

    SIGTERM ends it, quietly however often it comes: from the process that started it (:func:`_stop`),
    at that process's end (``PR_SET_PDEATHSIG``), or sent to the whole process group by whatever stops
    the run (a CI runner, ``kill -- -PGID``).  Its handler raises nothing, so that no signal can land
    in the clean-up as an exception: it only wakes the loop (a byte on the wakeup pipe), which then
    ends the workers and removes the socket's ``folder`` (a killed pytest runs no atexit clean-up).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle; this ends with it
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the only handler here: a byte on `wake` is a SIGTERM
    die_with_parent(signum=signal.SIGTERM)
    workers: set[int] = set()  # running
    try:
        import faulthandler

        faulthandler.disable()  # pytest's, inherited: a worker's crash is reported as a signal, not a dump
        service = worker.load_service(service_name)
        ended: dict[int, int] = {}  # pid -> wait status, until someone asks
        while True:
            ready, _, _ = select.select([listener.fileno(), wake], [], [], 1.0)
            _reap(workers, ended)
            if wake in ready:
                break
            if ready:
                _answer(listener, workers, ended, service, (wake, woken))
    finally:
        for pid in workers:  # end the workers still running, and reap them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        shutil.rmtree(folder, ignore_errors=True)


def _answer(listener: socket.socket, workers: set, ended: dict, service: Any, pipe: tuple) -> None:
    """One request: ``w`` (fork a worker serving this connection) or ``s<pid>`` (how it ended)."""
    connection, _ = listener.accept()
    try:
        connection.settimeout(5.0)
        request = _receive(connection, 1)
        if request == _WORKER:
            workers.add(_fork_worker(listener, connection, service, pipe))
        elif request == _STATUS:
            pid = _PID.unpack(_receive(connection, _PID.size))[0]
            connection.sendall(_PID.pack(_status(pid, workers, ended)))
    except OSError:
        pass
    finally:
        connection.close()


def _fork_worker(listener: socket.socket, connection: socket.socket, service: Any, pipe: tuple) -> int:
    """Fork a worker serving ``connection``; its pid.

    SIGTERM is blocked across the fork: the worker ends on it by default, like any process, and a
    SIGTERM that arrives before it has dropped the server's handler waits until it has.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return pid
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # one sent since the fork ends this process now
    code = 1
    try:
        listener.close()
        for end in pipe:
            os.close(end)
        die_with_parent()  # the server ends with pytest, and its workers with it
        connection.settimeout(None)
        channel = connection.makefile("wb")
        write_frame(channel, os.getpid())  # the first frame: which process serves this connection
        worker.serve(service, connection.fileno(), channel)
        code = 0
    except BaseException:  # noqa: BLE001 - whatever ends the worker is printed for the log
        traceback.print_exc()
    finally:
        os._exit(code)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        data += chunk
    return data


def _reap(workers: set, ended: dict) -> None:
    for pid in list(workers):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, _UNKNOWN
        if done:
            workers.discard(pid)
            ended[pid] = status


def _status(pid: int, workers: set, ended: dict) -> int:
    """How worker ``pid`` ended (a wait status); waits up to 5 s for a worker still exiting."""
    deadline = time.monotonic() + 5.0
    _reap(workers, ended)
    while pid in workers and time.monotonic() < deadline:
        time.sleep(0.005)
        _reap(workers, ended)
    return ended.pop(pid, _UNKNOWN)


class ServedWorker:
    """A worker forked by the server, with the part of ``subprocess.Popen`` that Worker uses.

    Connecting does not wait for the server (it may still be importing torch): the worker's first
    frame, its pid, is read on the first use of :attr:`stdout` or :attr:`pid`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.returncode: Optional[int] = None
        self._pid: Optional[int] = None
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(path)
            self._socket.sendall(_WORKER)
        except OSError:
            self._socket.close()
            raise
        self.stdin = self._socket.makefile("wb")

    @property
    def pid(self) -> Optional[int]:
        if self._pid is None and self.returncode is None:
            try:
                ready, _, _ = select.select([self._socket], [], [], 60.0)
                self._pid = read_frame(self._socket.fileno()) if ready else None
            except (EOFError, OSError):
                self._pid = None
            if self._pid is None:  # the server did not fork a worker: this one counts as dead, and
                self.returncode = -signal.SIGKILL  # the next ones are started as subprocesses
                _UNUSABLE.append(self.path)
        return self._pid

    @property
    def stdout(self) -> socket.socket:
        self.pid  # noqa: B018 - the handshake: the pid frame comes before any reply
        return self._socket

    def poll(self) -> Optional[int]:
        if self.returncode is None and self.pid is not None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:  # gone, and reaped by the server
                return self.wait()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """The worker's exit code as Popen gives it (negative: killed by that signal), from the server."""
        if self.returncode is None:
            status = _UNKNOWN
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as query:
                    query.settimeout(10.0)
                    query.connect(self.path)
                    query.sendall(_STATUS + _PID.pack(self.pid or 0))
                    status = _PID.unpack(_receive(query, _PID.size))[0]
            except OSError:
                pass
            self.returncode = os.waitstatus_to_exitcode(status) if status != _UNKNOWN else -signal.SIGKILL
            for channel in (self.stdin, self._socket):
                try:  # a frame the worker never read (interrupted) cannot be flushed to it any more
                    channel.close()
                except OSError:
                    pass
        return self.returncode
