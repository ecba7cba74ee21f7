"""Drop-ins that bring their own packing functions, which the suite checks against torch's."""

from __future__ import annotations

import types

import torch
import torch.nn.utils.rnn as torch_rnn

from tests.ports.scratch_lstm import ScratchLSTM


class WithTorchPacking(ScratchLSTM):
    """A correct port whose packing functions are torch's own."""

    lstm_conformance_packing = torch_rnn


def _pack_padded_without_checks(padded, lengths, batch_first=False, enforce_sorted=True):
    """Sorts the lengths itself and never checks them: enforce_sorted and bad lengths are ignored."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64).clamp(min=1)
    return torch_rnn.pack_padded_sequence(padded, lengths, batch_first=batch_first, enforce_sorted=False)


class UncheckedPacking(ScratchLSTM):
    """Its pack_padded_sequence silently accepts unsorted, zero and negative lengths."""

    lstm_conformance_packing = types.SimpleNamespace(pack_padded_sequence=_pack_padded_without_checks,
                                                     pack_sequence=torch_rnn.pack_sequence)
