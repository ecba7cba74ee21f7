"""A helper program run as a child process that answers length-prefixed frames on stdin and stdout.

This module knows nothing of what the frames mean (see :mod:`conformance.wire` for their content and
:mod:`conformance.process_ports` for the LSTM messages); it owns the process:

* **framing**: a frame is a 4-byte little-endian unsigned length, then that many bytes (as the
  protobuf conformance runner frames its requests);
* **start-up**: the program is started in a session of its own (its process group, so that a wrapper
  script's children end with it) and, on Linux, with ``PR_SET_PDEATHSIG``: when the process that
  started it dies, however it dies, the kernel kills it;
* **time limits**: every reply is awaited for a given number of seconds at most; past it the process
  is killed;
* **failures**: a crash (end of its stdout), a time-out and a frame that cannot be a frame (a length
  past :data:`MAX_FRAME`, a body cut short) raise a :class:`ProcessFailure` that says what the process
  did (its exit status or signal, the last lines it wrote to stderr, the bytes of a bad frame) and
  leave the process killed and reaped, so that the next use starts a fresh one;
* **reaping**: every process started here is stopped when this interpreter exits (``atexit``), and
  killed by the kernel when it is killed.

Its stderr goes to a temporary file, so that the last lines can be quoted in a failure without a
thread draining a pipe.  Standard library only.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO, NoReturn, Optional

from .children import die_with_parent, ended

__all__ = ["ChildProcess", "FrameError", "MAX_FRAME", "ProcessCrashed", "ProcessFailure", "ProcessTimedOut",
           "ProtocolError", "running_children"]

#: A frame's header: the length of its body, 4 bytes little-endian.
HEADER = struct.Struct("<I")
#: The longest frame body accepted.  A larger length is taken for text written where frames go
#: (``"hell"`` of ``hello`` reads as 1.8 GB), not for a real frame.
MAX_FRAME = 1 << 30
#: stderr lines quoted in a failure.
STDERR_LINES = 12
#: stderr kept between exchanges: past this size the file is cut back to its tail.
_STDERR_KEPT = 1 << 20
_STDERR_TAIL = 1 << 14
#: How long a process that closed its stdout is given to exit before it counts as hung there.
_EXIT_GRACE = 2.0


class ProcessFailure(BaseException):
    """The child process crashed, hung past a limit, or sent what is not a valid frame or message.

    A ``BaseException``: it is not an error the program *answered* with (those are replies), and no
    ``except Exception`` on its way up (a port's error handling, a check that records exceptions) may
    take it for one.  ``str()`` is the whole account: what the process did, and its last stderr lines.
    """


class ProcessCrashed(ProcessFailure):
    """The process ended (or closed its stdout) while a reply was awaited."""


class ProcessTimedOut(ProcessFailure):
    """No complete reply within the time limit."""


class FrameError(ProcessFailure):
    """Bytes that cannot be a frame: a length past the limit, or a body cut short."""


class ProtocolError(ProcessFailure):
    """A well-framed reply whose content breaks the protocol (raised by the layer that reads it)."""


_CHILDREN: list["ChildProcess"] = []  # started here and not yet stopped


def running_children() -> list["ChildProcess"]:
    """The child processes started by this interpreter that are still running."""
    return [child for child in _CHILDREN if child.running]


def _stop_all() -> None:
    for child in list(_CHILDREN):
        child.stop()


atexit.register(_stop_all)


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    die_with_parent(signum=signal.SIGKILL)


class ChildProcess:
    """One run of a program that answers frames; :meth:`start` it, then :meth:`exchange` frames.

    ``name`` says what it is in every message (``"port 'tfjs'"``).  ``environment`` is added to this
    process's environment.  After a :class:`ProcessFailure` the process is gone; :meth:`start` runs a
    fresh one.
    """

    def __init__(self, argv: Sequence[str], folder: Optional[str] = None,
                 environment: Optional[Mapping[str, str]] = None, name: str = "process") -> None:
        self.argv = list(argv)
        self.folder = folder
        self.environment = dict(environment or {})
        self.name = name
        self.process: Optional[subprocess.Popen] = None
        self._stderr: Optional[IO[bytes]] = None
        self.starts = 0  # how many times a process was started: a restart changes it

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the program (stopping a previous run first).  A program that cannot be started at all
        (not found, not executable) raises :class:`ProcessCrashed` saying so."""
        self.stop()
        self._stderr = tempfile.TemporaryFile(prefix="lstm-conformance-stderr-")
        fd = self._stderr.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)  # see _trim_stderr
        linux = sys.platform.startswith("linux")
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=self.folder,
                env={**os.environ, **self.environment}, start_new_session=True,
                preexec_fn=_child_setup if linux else None)
        except OSError as exc:
            self._close_stderr()
            raise ProcessCrashed(f"{self.name} could not be started ({' '.join(self.argv)} in "
                                 f"{self.folder or os.getcwd()}): {exc.strerror or exc}") from None
        self.starts += 1
        _CHILDREN.append(self)

    def stop(self, grace: float = 1.0) -> None:
        """End the process: close its stdin (a well-behaved program exits on end of input), wait up to
        ``grace`` seconds, then kill its whole process group.  Idempotent."""
        process = self.process
        if process is not None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self._kill_group()
            if process.stdout is not None:
                process.stdout.close()
        self.process = None
        self._close_stderr()
        if self in _CHILDREN:
            _CHILDREN.remove(self)

    def _kill_group(self) -> None:
        """Kill the process and everything in its process group (a wrapper's children too), and reap it."""
        process = self.process
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.kill()
        except ProcessLookupError:
            pass
        process.wait()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # ------------------------------------------------------------------ frames
    def exchange(self, frame: bytes, timeout: float) -> bytes:
        """Send one frame and return the body of the next frame the process sends, within ``timeout``
        seconds; raises :class:`ProcessFailure` (the process is then stopped)."""
        self.send([frame], timeout)
        return self.receive(timeout)

    def send(self, frames: list[bytes], timeout: float) -> None:
        """Write ``frames`` (in one go: several requests cost one wake-up of the process), within
        ``timeout`` seconds: a process that stops reading cannot block the suite."""
        if not self.running:
            self._crashed("before the request could be sent")
        assert self.process is not None and self.process.stdin is not None
        data = memoryview(b"".join(HEADER.pack(len(frame)) + frame for frame in frames))
        fd = self.process.stdin.fileno()
        deadline = time.monotonic() + timeout
        os.set_blocking(fd, False)
        try:
            while data:
                _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    self.fail(ProcessTimedOut, f"did not read its requests within {timeout:g} s "
                                               f"({len(data)} bytes still to send)")
                data = data[os.write(fd, data[:1 << 16]):]
        except (BrokenPipeError, ConnectionResetError):
            self._crashed("while the request was being sent")
    def receive(self, timeout: float) -> bytes:
        """The body of the next frame, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        header = self._read(HEADER.size, deadline, timeout, "a reply")
        length = HEADER.unpack(header)[0]
        if length > MAX_FRAME:
            more = self._available(64)
            self.fail(FrameError, f"sent a frame header announcing {length} bytes, more than the limit of "
                                  f"{MAX_FRAME} (was something other than a frame written to stdout?); "
                                  f"its first bytes: {(header + more)!r}")
        body = self._read(length, deadline, timeout, f"the {length} bytes its frame header announced",
                          header=header)
        self._trim_stderr()
        return body

    def _read(self, size: int, deadline: float, timeout: float, what: str, header: bytes = b"") -> bytes:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        got = 0
        while got < size:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
            if not ready:
                sent = f" (it sent {got} of them)" if got else ""
                cls = ProcessTimedOut if not got and not header else FrameError
                self.fail(cls, f"did not send {what} within {timeout:g} s{sent}")
            chunk = os.read(fd, size - got)
            if not chunk:
                partial = b"".join(chunks)
                if got or header:
                    self._crashed(f"in the middle of a frame, after {len(header) + got} of its "
                                  f"{len(header) + size} bytes ({(header + partial)[:64]!r})")
                self._crashed("instead of replying")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _available(self, limit: int) -> bytes:
        """Up to ``limit`` bytes already waiting on the process's stdout, without blocking."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], 0.05)
        return os.read(fd, limit) if ready else b""

    # ------------------------------------------------------------------ failures
    def fail(self, cls: type = ProtocolError, message: str = "") -> NoReturn:
        """Stop the process and raise ``cls`` (a :class:`ProcessFailure`) with ``message`` and the last
        lines of its stderr.  For the layer above too: a reply whose content is malformed."""
        tail = self.stderr_tail()
        self.stop(grace=0)
        raise cls(f"{self.name} {message}{_quoted(tail)}")

    def _crashed(self, when: str) -> NoReturn:
        """The process ended or closed its stdout: say how, ``when``."""
        assert self.process is not None
        try:
            code = self.process.wait(_EXIT_GRACE)
            how = ended(code)
        except subprocess.TimeoutExpired:
            how = "closed its stdout without exiting"
        tail = self.stderr_tail()
        self.stop()
        raise ProcessCrashed(f"{self.name} {how} {when}{_quoted(tail)}")

    def stderr_tail(self, lines: int = STDERR_LINES) -> list[str]:
        """The last ``lines`` lines the process wrote to stderr."""
        if self._stderr is None:
            return []
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, min(size, _STDERR_TAIL), max(0, size - _STDERR_TAIL))
        return data.decode("utf-8", "replace").rstrip().splitlines()[-lines:] if data.strip() else []

    def _trim_stderr(self) -> None:
        """Cut a long stderr back to its tail (the file is opened with O_APPEND on both sides, so the
        process's next write lands after what is kept)."""
        if self._stderr is None:
            return
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        if size > _STDERR_KEPT:
            tail = os.pread(fd, _STDERR_TAIL, size - _STDERR_TAIL)
            os.ftruncate(fd, 0)
            os.write(fd, tail)


def _quoted(lines: list[str]) -> str:
    """What the process last wrote to stderr: its last line inline (a one-line summary keeps it), and
    the lines before it below."""
    if not lines:
        return "; it wrote nothing to stderr"
    block = "\n".join(f"    {line}" for line in lines)
    return f"; its last stderr line: {lines[-1].strip()!r}" + (f"; its stderr ended:\n{block}" if len(lines) > 1 else "")
