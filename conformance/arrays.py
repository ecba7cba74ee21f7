"""NumPy-side data types that non-torch ports receive and return.

A port written against NumPy never sees a torch object: the configuration is a plain
dataclass, weights are ``{torch_name: ndarray}``, and a packed batch is the four arrays a
``torch.nn.utils.rnn.PackedSequence`` holds.  The helpers convert between the packed layout
and the padded-plus-lengths layout most frameworks use (masks, ``seq_lengths``,
``sequence_lens``), so an adapter never has to reimplement torch's packing rules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["LSTMConfig", "PackedArrays", "packed_to_padded", "padded_to_packed"]


@dataclass(frozen=True)
class LSTMConfig:
    """The arguments ``torch.nn.LSTM`` was built with; ``dtype`` is ``"float32"`` or ``"float64"``."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    dtype: str = "float32"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of h (and of each direction's output): proj_size if set, else hidden_size."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def torch_kwargs(self) -> dict:
        """Keyword arguments for ``nn.LSTM`` (without dtype)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dtype"}

    def weight_names(self) -> list[str]:
        """Parameter names in ``nn.LSTM``'s registration order."""
        names = []
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[: self.num_directions]:
                names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                if self.bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                if self.proj_size > 0:
                    names.append(f"weight_hr_l{layer}{suffix}")
        return names


class PackedArrays(NamedTuple):
    """The fields of a ``PackedSequence`` as NumPy arrays.

    ``data`` is time-major over the batch sorted by decreasing length: rows
    ``sum(batch_sizes[:t]) : sum(batch_sizes[:t+1])`` are step ``t`` of the
    ``batch_sizes[t]`` longest sequences.  ``sorted_indices[k]`` is the original batch
    position of sorted row ``k``; ``unsorted_indices`` is its inverse.  Both are ``None``
    when the batch was packed with ``enforce_sorted=True``.
    """

    data: np.ndarray
    batch_sizes: np.ndarray
    sorted_indices: Optional[np.ndarray] = None
    unsorted_indices: Optional[np.ndarray] = None


def _lengths_sorted(batch_sizes: np.ndarray) -> np.ndarray:
    """Length of each sorted sequence: the number of steps whose batch still includes it."""
    batch = int(batch_sizes[0])
    return np.array([(batch_sizes > k).sum() for k in range(batch)], dtype=np.int64)


def packed_to_padded(packed: PackedArrays, padding_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(padded, lengths)``: time-major ``(T, N, *)`` in the caller's batch order.

    This is what ``pad_packed_sequence(packed)`` returns, without torch.
    """
    batch_sizes = np.asarray(packed.batch_sizes, dtype=np.int64)
    steps, batch = len(batch_sizes), int(batch_sizes[0])
    data = np.asarray(packed.data)
    padded = np.full((steps, batch) + data.shape[1:], padding_value, dtype=data.dtype)
    offset = 0
    for t, size in enumerate(batch_sizes):
        padded[t, :size] = data[offset : offset + size]
        offset += size
    lengths = _lengths_sorted(batch_sizes)
    if packed.unsorted_indices is not None:
        order = np.asarray(packed.unsorted_indices)
        padded, lengths = padded[:, order], lengths[order]
    return padded, lengths


def padded_to_packed(padded: np.ndarray, like: PackedArrays) -> PackedArrays:
    """Pack a time-major ``(T, N, *)`` array in caller's batch order with ``like``'s structure.

    Use it to return a port's padded output in the packed layout of the input it was given.
    """
    batch_sizes = np.asarray(like.batch_sizes, dtype=np.int64)
    if like.sorted_indices is not None:
        padded = padded[:, np.asarray(like.sorted_indices)]
    rows = [padded[t, :size] for t, size in enumerate(batch_sizes)]
    return PackedArrays(np.concatenate(rows, axis=0), batch_sizes, like.sorted_indices, like.unsorted_indices)
