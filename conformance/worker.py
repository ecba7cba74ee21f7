"""A worker process: answers one service's requests until its input closes.

Started as ``python -m conformance.worker SERVICE`` (requests on stdin, replies on a duplicate of
stdout), or forked by :mod:`conformance.forkserver` (both on its connection).  ``SERVICE`` names a module
that has ``prepare()``, called once before the first request (in the server, before any fork), and
``answer(request)``, whose return value goes back as :class:`~conformance.process_messages.Answered`.
The worker answers :class:`~conformance.process_messages.Ping` and
:class:`~conformance.process_messages.AdoptPath` itself.  Standard library only: what a request means
is the service's business.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from types import ModuleType
from typing import Any

from .framing import read_frame, write_frame
from .process_messages import AdoptPath, Answered, Errored, Ping

__all__ = ["load_service", "serve"]


def load_service(name: str) -> ModuleType:
    """Import the service module ``name`` and prepare it (see the module docstring)."""
    service = importlib.import_module(name)
    service.prepare()
    return service


def _adopt(request: AdoptPath) -> None:
    """Take the client's import path, and its environment where given."""
    sys.path[:] = list(request.path)
    if request.environ is not None:
        for name in set(os.environ) - set(request.environ):
            del os.environ[name]
        os.environ.update(request.environ)


def _answer(service: ModuleType, request: Any) -> Any:
    if isinstance(request, Ping):
        return Answered("pong")
    if isinstance(request, AdoptPath):
        _adopt(request)
        return Answered(None)
    try:
        return Answered(service.answer(request))
    except BaseException:  # noqa: BLE001 - the service's own fault: report it, and stay alive for the next call
        return Errored(traceback.format_exc())


def serve(service: ModuleType, requests: int = 0, replies: Any = None) -> None:
    """Answer the requests read from fd ``requests`` on the stream ``replies`` until end of input."""
    # Ctrl-C reaches the whole process group: it is the client's to handle (it stops the run, and this
    # process ends with it), not a KeyboardInterrupt traceback from each worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(1), "wb") if replies is None else replies
    os.dup2(2, 1)  # whatever the port prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    while True:
        try:
            request = read_frame(requests)
        except (EOFError, ConnectionError):
            return
        reply = _answer(service, request)
        try:
            write_frame(protocol_out, reply)
        except OSError:  # the client is gone (stopped, killed): nobody to answer, nothing to report
            return


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m conformance.worker SERVICE_MODULE")
    serve(load_service(sys.argv[1]))
