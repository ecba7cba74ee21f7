"""Broken and correct drop-in ports on the layout axis: memory layouts and argument forms.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with one realistic bug in how it
takes its arguments: it assumes a memory layout (views that are transposed, expanded, sliced or at a
storage offset, all of which torch takes), a way of passing them (by position, hx as a tuple), or a
packed structure made by torch's packing functions.  Each shows only on the layouts or argument forms
the suite draws (``conformance.case.LAYOUTS``, ``STATE_LAYOUTS``, ``ARGUMENT_FORMS``) or on a hand-built
``PackedSequence`` (``conformance.bad_calls.PACKED_STRUCTURE_FAULTS``): on contiguous tensors passed
positionally, and on packed input from torch's packing functions, each is ScratchLSTM.

``LAYOUTS_CATALOGUE`` maps a short kebab-case name to each broken class; ``LAYOUTS_CORRECT`` the correct
ports the suite must accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from .scratch_lstm import ScratchLSTM

__all__ = ["LAYOUTS_CATALOGUE", "LAYOUTS_CORRECT", "AnySequenceHx", "ContiguousFirst", "InputOffsetIgnored",
           "ListHxIgnored", "ListHxRejected", "PackedStructureTrusted", "PositionalOnly", "StatesFlattenedWithView",
           "StatesReadFromStorage"]


def _storage_from_start(tensor: Tensor) -> Tensor:
    """The first ``numel`` elements of ``tensor``'s storage in its shape: what a kernel handed the storage's
    own pointer (``untyped_storage().data_ptr()``) reads, whatever the view's strides and offset."""
    memory = torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(tensor.untyped_storage())
    return memory[:tensor.numel()].view(tensor.shape)


# ---------------------------------------------------------------------------- memory layouts


class StatesFlattenedWithView(ScratchLSTM):
    """Flattens h0/c0 to (layers * directions * batch, features) rows with .view(), which needs compatible strides: raises on a transposed (batch-first buffer) or expanded h0 with 2+ layers and 2+ batch elements, which torch takes."""

    def _initial_states(self, hx):
        batch = hx[0].shape[1]
        rows = [state.view(-1, state.shape[-1]) for state in hx[:2]]
        return tuple(r.view(-1, batch, r.shape[-1]) for r in rows)


class StatesReadFromStorage(ScratchLSTM):
    """Reads h0/c0 from their storage's start as C-contiguous (a C kernel given untyped_storage().data_ptr()): wrong values for transposed, expanded, sliced or offset states."""

    def _initial_states(self, hx):
        return _storage_from_start(hx[0]), _storage_from_start(hx[1])


class InputOffsetIgnored(ScratchLSTM):
    """Honours the input's strides but reads from its storage's start, ignoring the storage offset (a pointer taken from the storage, not data_ptr()): wrong values for an input at an offset."""

    def _prepare_input(self, input):
        return torch.as_strided(input, input.shape, input.stride(), 0)


class ContiguousFirst(ScratchLSTM):
    """Correct: makes every tensor it is given contiguous before anything else (the input, the packed data, h0 and c0)."""

    def forward(self, input, hx=None):
        if isinstance(input, torch.nn.utils.rnn.PackedSequence):
            input = torch.nn.utils.rnn.PackedSequence(input.data.contiguous(), *input[1:])
        else:
            input = input.contiguous()
        if isinstance(hx, (tuple, list)):
            hx = type(hx)(state.contiguous() if isinstance(state, Tensor) else state for state in hx)
        return super().forward(input, hx)


# ---------------------------------------------------------------------------- argument forms


class PositionalOnly(ScratchLSTM):
    """forward(self, x, state=None) instead of nn.LSTM's (input, hx=None): a call by keyword (input=x, hx=(h0, c0)) raises TypeError."""

    def forward(self, x, state=None):  # the bug is the signature
        return super().forward(x, state)


class ListHxIgnored(ScratchLSTM):
    """Takes hx only as a tuple (isinstance(hx, tuple)) and treats anything else as no hx: hx given as a list [h0, c0] is replaced by zeros."""

    def forward(self, input, hx=None):
        return super().forward(input, hx if isinstance(hx, tuple) else None)


class ListHxRejected(ScratchLSTM):
    """Declares hx as Optional[Tuple[Tensor, Tensor]] and checks it, as TorchScript does: hx given as a list [h0, c0] raises TypeError."""

    def forward(self, input, hx=None):
        if hx is not None and not isinstance(hx, tuple):
            raise TypeError(f"hx must be a tuple (h0, c0), got {type(hx).__name__}")
        return super().forward(input, hx)


class AnySequenceHx(ScratchLSTM):
    """Correct: takes hx as any sequence of two tensors (tuple, list, or another sequence type), by position or by keyword."""

    def forward(self, input, hx: Optional[Sequence[Tensor]] = None):
        return super().forward(input, tuple(hx) if isinstance(hx, Sequence) else hx)


# ---------------------------------------------------------------------------- hand-built packed input


class PackedStructureTrusted(ScratchLSTM):
    """Trusts a hand-built PackedSequence: no check that batch_sizes are int64, non-increasing and count the data's rows, so it returns a result where torch's kernel raises."""

    def _check_batch_sizes(self, data, batch_sizes):
        return [int(b) for b in batch_sizes]


# ---------------------------------------------------------------------------- registries

LAYOUTS_CATALOGUE: dict[str, type] = {
    "states-flattened-with-view": StatesFlattenedWithView,
    "states-read-from-storage": StatesReadFromStorage,
    "input-offset-ignored": InputOffsetIgnored,
    "positional-only": PositionalOnly,
    "list-hx-ignored": ListHxIgnored,
    "list-hx-rejected": ListHxRejected,
    "packed-structure-trusted": PackedStructureTrusted,
}

LAYOUTS_CORRECT: dict[str, type] = {"contiguous-first": ContiguousFirst, "any-sequence-hx": AnySequenceHx}
