"""NumPy-side data types that non-torch ports receive and return.

A port written against NumPy never sees a torch object: the configuration is a plain
dataclass, weights are ``{torch_name: ndarray}``, and a packed batch is the four arrays a
``torch.nn.utils.rnn.PackedSequence`` holds.  The helpers convert between the packed layout
and the padded-plus-lengths layout most frameworks use (masks, ``seq_lengths``,
``sequence_lens``), so an adapter never has to reimplement torch's packing rules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Optional

import numpy as np

__all__ = ["LSTMConfig", "PackedArrays", "packed_to_padded", "padded_to_packed"]


@dataclass(frozen=True)
class LSTMConfig:
    """The arguments ``torch.nn.LSTM`` was built with; ``dtype`` is ``"float32"``, ``"float64"``, ``"float16"`` or
    ``"bfloat16"`` (see :mod:`conformance.dtypes` for the arrays of each)."""

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


def _check_packed(packed: PackedArrays) -> None:
    """Raise ValueError unless the parts fit together as torch's packing functions make them: 2-D data,
    ``batch_sizes`` 1-D int64, positive, non-increasing and counting the data's rows, and the two index
    arrays both absent or inverse permutations of the batch."""
    data, counts = np.asarray(packed.data), np.asarray(packed.batch_sizes)
    if data.ndim != 2:
        raise ValueError(f"packed data must be 2-D (rows, features), got shape {data.shape}")
    if counts.ndim != 1 or counts.size == 0 or counts.dtype != np.int64:
        raise ValueError(f"batch_sizes must be a non-empty 1-D int64 array, got shape {counts.shape} {counts.dtype}")
    if counts[-1] <= 0 or np.any(np.diff(counts) > 0) or int(counts.sum()) != data.shape[0]:
        raise ValueError(f"batch_sizes {counts.tolist()} must be positive, non-increasing and count the "
                         f"{data.shape[0]} rows of the packed data")
    indices = (packed.sorted_indices, packed.unsorted_indices)
    if all(i is None for i in indices):
        return
    batch = np.arange(counts[0])
    order, inverse = (None if i is None else np.asarray(i) for i in indices)
    if order is None or inverse is None \
            or any(o.shape != batch.shape or not np.array_equal(np.sort(o), batch) for o in (order, inverse)) \
            or not np.array_equal(order[inverse], batch):
        raise ValueError(f"sorted_indices {_listed(indices[0])} and unsorted_indices {_listed(indices[1])} must be "
                         f"inverse permutations of the batch of {counts[0]}")


def _listed(indices: Optional[np.ndarray]) -> Any:
    return None if indices is None else np.asarray(indices).tolist()


def _lengths_sorted(batch_sizes: np.ndarray) -> np.ndarray:
    """Length of each sorted sequence: the number of steps whose batch still includes it."""
    batch = int(batch_sizes[0])
    return np.array([(batch_sizes > k).sum() for k in range(batch)], dtype=np.int64)


def packed_to_padded(packed: PackedArrays, padding_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(padded, lengths)``: time-major ``(T, N, *)`` in the caller's batch order.

    This is what ``pad_packed_sequence(packed)`` returns, without torch.  A structure whose parts do
    not fit together (a PackedSequence built by hand) raises ValueError, as ``nn.LSTM`` must refuse it.
    """
    _check_packed(packed)
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
