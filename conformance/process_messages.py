"""The process layer's own messages: what a call in another process came back as, and the two requests
every worker answers whatever service it runs.

Standard library only, like the rest of the process layer (``docs/architecture.md``, "Layers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["AdoptPath", "Answered", "CallResult", "Crashed", "Errored", "Ping", "TimedOut"]


@dataclass(frozen=True)
class Answered:
    """The call returned ``value`` (whatever the service answers; a failure it judged is a value too)."""

    value: Any


@dataclass(frozen=True)
class Errored:
    """The service itself raised: ``text`` is its traceback (a fault of the suite, not of the port)."""

    text: str


@dataclass(frozen=True)
class Crashed:
    """The process running the call ended during it; ``what`` says how ("was killed by signal 11 ...")."""

    what: str


@dataclass(frozen=True)
class TimedOut:
    """The call ran past its time limit (the process was killed); ``what`` says which limit."""

    what: str


#: What :meth:`conformance.isolation.Worker.call` and :class:`conformance.children.ForkedCall` return.
CallResult = Union[Answered, Errored, Crashed, TimedOut]


@dataclass(frozen=True)
class Ping:
    """Answered with ``"pong"``: the worker is up (its service imported)."""


@dataclass(frozen=True)
class AdoptPath:
    """Take the client's import path, and its environment where given (a worker forked by the server
    has the server's, from the start of the run)."""

    path: tuple[str, ...]
    environ: Optional[dict[str, str]] = None
