"""Running the reference, ``torch.nn.LSTM``, and its float64 evaluation on a case.

The float64 evaluation (the *oracle*) runs the same module, with its weights and inputs
promoted exactly to float64.  torch's float64 LSTM agrees with exact arithmetic to about 1e-16,
so the oracle measures how far torch's own float32 result is from the truth; the tolerance
policy in :mod:`conformance.compare` is built on that measurement.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Optional

from .case import Case
from .outcome import Outcome, from_torch
from .timing import timed  # lstm-conformance bench (issue 6): times the forward calls only

__all__ = ["Expected", "copy_args", "evaluate", "expected_for", "to_float64"]


@dataclass
class Expected:
    """What torch does with a case: the module, the call arguments, its result and the oracle."""

    model: Any
    args: tuple
    reference: Outcome
    oracle: Outcome
    warnings: list  # raised while constructing the module (nn.LSTM warns about dropout with one layer)


def copy_args(value: Any, memo: Optional[dict] = None) -> Any:
    """A copy of call arguments (tensors, packed sequences, tuples of them) that keeps what a call may
    depend on: strides, requires_grad, and one tensor passed twice (``c0 = h0``) staying one tensor."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    memo = {} if memo is None else memo
    if isinstance(value, PackedSequence):
        return PackedSequence(*(copy_args(t, memo) for t in value))
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            copy = value.new_empty_strided(value.size(), value.stride()).copy_(value.detach())
            memo[id(value)] = copy.requires_grad_(value.requires_grad)
        return memo[id(value)]
    if isinstance(value, (tuple, list)):
        return type(value)(copy_args(v, memo) for v in value)
    return value


def to_float64(value: Any) -> Any:
    """Exact float64 copies of tensors, packed sequences and tuples of them."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return PackedSequence(value.data.detach().double(), value.batch_sizes,
                              value.sorted_indices, value.unsorted_indices)
    if isinstance(value, torch.Tensor):
        return value.detach().double()
    if isinstance(value, tuple):
        return tuple(to_float64(v) for v in value)
    return value


def _call(model: Any, args: tuple, packed: bool, label: str) -> tuple[Any, Outcome]:
    """``model(*args)``: torch's raw output (what a next layer would take) and its result as arrays."""
    with warnings.catch_warnings():
        # torch warns once per process that projections bypass oneDNN; it says nothing about the case.
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        with timed(label):  # bench: "reference" (torch) or "oracle" (its float64 evaluation)
            result = model(*args)
        outcome = from_torch(result, packed, where="torch.nn.LSTM")
    return result[0], outcome


def evaluate(model: Any, args: tuple, packed: bool, dtype: str) -> tuple[Any, Outcome, Outcome]:
    """Run torch's ``model`` on ``args``: its raw output, its result, and the oracle (the float64
    evaluation of the same module and arguments; torch's own result for a float64 model)."""
    raw, reference = _call(model, args, packed, "reference")
    if dtype == "float64":
        return raw, reference, reference
    _, oracle = _call(copy.deepcopy(model).double(), to_float64(args), packed, "oracle")
    return raw, reference, oracle


def expected_for(case: Case) -> Expected:
    """Build the case, run torch on it, and run the float64 oracle when the case is float32."""
    caught: list = []
    model, args = case.build(warnings_out=caught)
    _, reference, oracle = evaluate(model, args, case.call.packed, case.config.dtype)
    return Expected(model, args, reference, oracle, caught)
