"""Frames between the suite's own processes (pytest, the worker server, workers, forked calls): an
8-byte little-endian length, then a pickle of that many bytes.

Pickle, because both ends are this package in the same interpreter build; a port's own program speaks
:mod:`conformance.wire` instead.  Standard library only.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, Optional

__all__ = ["read_frame", "write_frame"]

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


