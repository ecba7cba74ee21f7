"""What one implementation did with a case, reduced to comparable NumPy data.

Both torch results and adapter results pass through here.  Structure is checked first (a
tuple ``(output, (h_n, c_n))``, the right container types), and a wrong structure is reported
as a :class:`StructureError` naming what was wrong, never as a crash of the suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .arrays import PackedArrays, packed_to_padded
from .dtypes import to_numpy

__all__ = ["Outcome", "StructureError", "from_torch", "from_arrays"]


class StructureError(AssertionError):
    """The implementation returned something other than ``(output, (h_n, c_n))``."""


@dataclass
class Outcome:
    """Output and final states as arrays, plus the packed structure when the output was packed.

    For packed output, ``output`` is the padded time-major ``(T, N, F)`` array in the caller's
    batch order (what ``pad_packed_sequence`` gives), so that implementations that order tied
    lengths differently still compare equal.
    """

    output: np.ndarray
    h_n: np.ndarray
    c_n: np.ndarray
    packed: bool = False
    batch_sizes: Optional[np.ndarray] = None

    def parts(self) -> dict[str, np.ndarray]:
        return {"output": self.output, "h_n": self.h_n, "c_n": self.c_n}


def _describe(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of length {len(obj)}"
    return type(obj).__module__ + "." + type(obj).__qualname__ if type(obj).__module__ != "builtins" else type(obj).__name__


def _split(result: Any, where: str) -> tuple[Any, Any, Any]:
    """Unpack ``(output, (h_n, c_n))`` and insist on tuples, as nn.LSTM returns."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise StructureError(f"{where} returned a {_describe(result)}; expected a tuple (output, (h_n, c_n))")
    output, hidden = result
    if not isinstance(hidden, tuple) or len(hidden) != 2:
        raise StructureError(f"{where} returned (output, {_describe(hidden)}); expected the states as a tuple (h_n, c_n)")
    return output, hidden[0], hidden[1]


def packed_arrays(packed: Any) -> PackedArrays:
    """A ``PackedSequence``'s fields as NumPy arrays (views of the same memory)."""
    data, batch_sizes, sorted_indices, unsorted_indices = packed
    return PackedArrays(to_numpy(data), to_numpy(batch_sizes),
                        None if sorted_indices is None else to_numpy(sorted_indices),
                        None if unsorted_indices is None else to_numpy(unsorted_indices))


def from_torch(result: Any, packed_input: bool, where: str = "the implementation") -> Outcome:
    """Check and convert what a torch module returned."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    output, h_n, c_n = _split(result, where)
    for name, value in (("h_n", h_n), ("c_n", c_n)):
        if not isinstance(value, torch.Tensor):
            raise StructureError(f"{where} returned {name} as {_describe(value)}; expected a torch.Tensor")
    if packed_input:
        if not isinstance(output, PackedSequence):
            raise StructureError(f"{where} returned output as {_describe(output)} for a PackedSequence input; "
                                 "expected a PackedSequence, as nn.LSTM returns")
        output = packed_arrays(output)
        return from_arrays((output, (to_numpy(h_n), to_numpy(c_n))), packed_input, where)
    if not isinstance(output, torch.Tensor):
        raise StructureError(f"{where} returned output as {_describe(output)}; expected a torch.Tensor")
    return Outcome(to_numpy(output), to_numpy(h_n), to_numpy(c_n))


def from_arrays(result: Any, packed_input: bool, where: str = "the adapter") -> Outcome:
    """Check and convert what an array adapter returned."""
    output, h_n, c_n = _split(result, where)
    for name, value in (("h_n", h_n), ("c_n", c_n)):
        if not isinstance(value, np.ndarray):
            raise StructureError(f"{where} returned {name} as {_describe(value)}; expected a numpy.ndarray "
                                 "(convert with np.asarray)")
    if packed_input:
        if not isinstance(output, PackedArrays):
            raise StructureError(f"{where} returned output as {_describe(output)} for packed input; "
                                 "expected conformance.PackedArrays")
        if not isinstance(output.data, np.ndarray):
            raise StructureError(f"{where} returned packed data as {_describe(output.data)}; expected a numpy.ndarray")
        try:
            padded, _ = packed_to_padded(output)
        except Exception as exc:  # noqa: BLE001 - a malformed PackedArrays is the adapter's fault, not ours
            raise StructureError(f"{where} returned a malformed packed output: {type(exc).__name__}: {exc}") from None
        return Outcome(padded, h_n, c_n, packed=True, batch_sizes=np.asarray(output.batch_sizes))
    if not isinstance(output, np.ndarray):
        raise StructureError(f"{where} returned output as {_describe(output)}; expected a numpy.ndarray")
    return Outcome(output, h_n, c_n)
