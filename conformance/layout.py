"""How a case's results are laid out: time-major outputs, state rows, each sequence's length.

Shared by the judging (dropout, gradients) and the diagnosis (localisation, hints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .arrays import LSTMConfig
from .case import Case

if TYPE_CHECKING:
    import torch

__all__ = ["sequence_lengths", "state_rows", "time_major"]

#: An array or a tensor: what :func:`time_major` takes, and returns in kind.
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")

def time_major(output: ArrayT, config: LSTMConfig, case: Case) -> ArrayT:
    """An output as (T, N, features): unbatched gets a batch axis, batch_first is transposed."""
    if case.call.unbatched:
        return output[:, None]
    if config.batch_first and not case.call.packed:
        return output.swapaxes(0, 1)
    return output


def state_rows(state: np.ndarray, case: Case) -> np.ndarray:
    """h_n or c_n as (layers * directions, N, features)."""
    return state[:, None] if case.call.unbatched else state


def sequence_lengths(case: Case, steps: int, batch: int) -> np.ndarray:
    """Each batch element's length, in the caller's order: the packed lengths, or ``steps`` for all."""
    if case.call.packed:
        return np.asarray(case.call.lengths, dtype=np.int64)
    return np.full(batch, steps, dtype=np.int64)
