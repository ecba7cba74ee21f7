"""Messages with arrays in them, as the bytes of one frame: a JSON document, then the arrays' raw bytes.

A frame's body (see :mod:`conformance.processes` for the framing) is::

    u32 little-endian: the length J of the JSON text | J bytes of JSON (UTF-8) | the binary section

An array anywhere in the document is the object ``{"$array": DTYPE, "shape": [...], "offset": O,
"nbytes": N}``: its elements, in C order and little-endian, are bytes ``O .. O + N`` of the binary
section.  Arrays travel exactly: no decimal text, NaN's payload and the sign of zero included.
``N`` must be the product of the shape times the dtype's size; the arrays may come in any order but
must not overlap, and together they cover the binary section exactly.

DTYPE is a name: ``float16``, ``bfloat16`` (raw bfloat16 bit patterns, 2 bytes), ``float32``,
``float64``, ``int32``, ``int64``.  bfloat16 arrays are ``ml_dtypes.bfloat16`` arrays on the Python
side (what an adapter receives where the suite checks bfloat16).

Anything else (a JSON text that does not parse, a descriptor with a wrong field, bytes that do not
match the stated dtype and shape) raises :class:`WireError` naming the place in the document.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

__all__ = ["DTYPES", "WireError", "decode", "document", "encode", "wire_dtype"]

_LENGTH = struct.Struct("<I")
ARRAY_KEY = "$array"
_DESCRIPTOR_KEYS = {ARRAY_KEY, "shape", "offset", "nbytes"}

#: Wire name -> the little-endian NumPy dtype its bytes are read as (bfloat16: the raw 16-bit patterns).
DTYPES: dict[str, str] = {"float16": "<f2", "bfloat16": "<u2", "float32": "<f4", "float64": "<f8",
                          "int32": "<i4", "int64": "<i8"}
_BY_KIND = {("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64", ("i", 4): "int32", ("i", 8): "int64"}


class WireError(ValueError):
    """Bytes or a document that are not a valid message; the message says what and where."""


def wire_dtype(dtype: np.dtype) -> str:
    """The wire name of a NumPy dtype; WireError for one that cannot travel."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return "bfloat16"
    name = _BY_KIND.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise WireError(f"arrays of dtype {dtype} cannot be sent (the wire carries {', '.join(DTYPES)})")
    return name


def encode(message: Any) -> bytes:
    """A frame body for ``message``: JSON values, with NumPy arrays anywhere in it (tuples become lists).

    Arrays are read through NumPy (a view of any strides, stride 0 included, is sent as the values it
    holds), never as raw memory."""
    chunks: list[bytes] = []
    offset = [0]

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            name = wire_dtype(value.dtype)
            data = np.ascontiguousarray(value)
            raw = (data.view(np.uint16) if name == "bfloat16" else data).astype(DTYPES[name], copy=False).tobytes()
            descriptor = {ARRAY_KEY: name, "shape": list(value.shape), "offset": offset[0], "nbytes": len(raw)}
            chunks.append(raw)
            offset[0] += len(raw)
            return descriptor
        if isinstance(value, dict):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    document = walk(message)
    try:
        text = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"cannot be sent as JSON: {exc}") from None
    return _LENGTH.pack(len(text)) + text + b"".join(chunks)


def document(body: bytes) -> Any:
    """The JSON document of a frame body as it is, arrays still as their descriptors (for a schema check)."""
    return _split(body)[0]


def decode(body: bytes) -> Any:
    """The message in a frame body, its arrays as NumPy arrays (copies, writable)."""
    document, binary = _split(body)
    spans: list[tuple[int, int, str]] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            if ARRAY_KEY in value:
                return _array(value, where, binary, spans)
            return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    message = walk(document, "message")
    _check_coverage(spans, len(binary))
    return message


def _split(body: bytes) -> tuple[Any, memoryview]:
    """The parsed JSON document and the binary section of a frame body."""
    if len(body) < _LENGTH.size:
        raise WireError(f"a frame of {len(body)} bytes is too short for the 4-byte length of its JSON text")
    length = _LENGTH.unpack_from(body)[0]
    end = _LENGTH.size + length
    if end > len(body):
        raise WireError(f"the JSON text's length says {length} bytes, but the frame has only "
                        f"{len(body) - _LENGTH.size} after it")
    try:
        document = json.loads(body[_LENGTH.size:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"the JSON text does not parse: {exc}; it begins {body[_LENGTH.size:end][:80]!r}") from None
    return document, memoryview(body)[end:]


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _array(descriptor: dict, where: str, binary: memoryview, spans: list) -> np.ndarray:
    keys = set(descriptor)
    if keys != _DESCRIPTOR_KEYS:
        wrong = sorted(keys - _DESCRIPTOR_KEYS) or sorted(_DESCRIPTOR_KEYS - keys)
        raise WireError(f"the array at {where} has {'unknown' if keys - _DESCRIPTOR_KEYS else 'no'} "
                        f"field(s) {wrong}; an array is {{\"$array\", \"shape\", \"offset\", \"nbytes\"}}")
    name, shape, offset, nbytes = (descriptor[k] for k in (ARRAY_KEY, "shape", "offset", "nbytes"))
    if name not in DTYPES:
        raise WireError(f"the array at {where} states dtype {name!r}; known: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_natural(n) for n in shape):
        raise WireError(f"the array at {where} states shape {shape!r}; a shape is a list of whole numbers >= 0")
    if not (_natural(offset) and _natural(nbytes)):
        raise WireError(f"the array at {where} states offset {offset!r} and nbytes {nbytes!r}; both are "
                        "whole numbers >= 0")
    itemsize = np.dtype(DTYPES[name]).itemsize
    needed = math.prod(shape) * itemsize
    if nbytes != needed:
        raise WireError(f"the array at {where} states dtype {name} and shape {shape} ({needed} bytes), "
                        f"but nbytes {nbytes}")
    if offset + nbytes > len(binary):
        raise WireError(f"the array at {where} (bytes {offset}..{offset + nbytes}) extends past the binary "
                        f"section's {len(binary)} bytes")
    if nbytes:  # an empty array takes no bytes: its offset is only checked to be in range
        spans.append((offset, nbytes, where))
    array = np.frombuffer(binary[offset:offset + nbytes], dtype=DTYPES[name]).reshape(shape)
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise WireError(f"the array at {where} is bfloat16, which needs the ml_dtypes package here "
                            "(pip install ml_dtypes)") from None
        return array.copy().view(ml_dtypes.bfloat16)
    return array.astype(array.dtype.newbyteorder("="), copy=True)


def _check_coverage(spans: list[tuple[int, int, str]], size: int) -> None:
    """The arrays' byte ranges do not overlap and cover the binary section exactly."""
    position, previous = 0, ""
    for offset, nbytes, where in sorted(spans):
        if offset < position:
            raise WireError(f"the arrays at {previous} and {where} overlap (bytes from {offset} to {position})")
        if offset > position:
            raise WireError(f"bytes {position}..{offset} of the binary section belong to no array")
        position, previous = offset + nbytes, where
    if position != size:
        raise WireError(f"bytes {position}..{size} of the binary section belong to no array "
                        f"(the arrays described take {position} of its {size} bytes)")
