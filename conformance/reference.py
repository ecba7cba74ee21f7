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
from typing import Any, Callable, Optional

from .case import Case, call_arguments
from .compare import perturbation
from .outcome import Outcome, from_torch
from .timing import timed  # lstm-conformance bench times the forward calls only

__all__ = ["Reference", "beyond_unit_scale", "copy_args", "evaluate", "invoke", "jiggler", "reference_for",
           "perturbed_evaluation", "to_float64"]


@dataclass
class Reference:
    """What a case is judged against: torch's module, the call's arguments (positional: see ``Case.build``),
    torch's result and the oracle's."""

    model: Any
    args: tuple
    torch: Outcome
    oracle: Outcome
    warnings: list  # raised while constructing the module (nn.LSTM warns about dropout with one layer)
    perturbed: Optional[Outcome] = None  # the oracle with every input and weight moved by rounding's size


def copy_args(value: Any, memo: Optional[dict] = None) -> Any:
    """A copy of call arguments (tensors, packed sequences, tuples and lists of them) that keeps what a
    call may depend on: sizes, strides (a stride of 0 included) and storage offset over a copy of the
    memory they span, requires_grad, and one tensor passed twice (``c0 = h0``) staying one tensor."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    memo = {} if memo is None else memo
    if isinstance(value, PackedSequence):
        return PackedSequence(*(copy_args(t, memo) for t in value))
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = _copy_tensor(value).requires_grad_(value.requires_grad)
        return memo[id(value)]
    if isinstance(value, (tuple, list)):
        return type(value)(copy_args(v, memo) for v in value)
    return value


def _copy_tensor(value: Any) -> Any:
    """``value`` with its sizes, strides and storage offset, over a copy of its storage up to its last
    element: what a port reading the memory (rightly or not) reads is the same in the copy."""
    source = value.detach()
    if source.numel() == 0:
        return source.new_empty_strided(source.size(), source.stride())
    extent = source.storage_offset() + 1 + sum((n - 1) * s for n, s in zip(source.size(), source.stride()))
    memory = source.as_strided((extent,), (1,), 0).clone()
    return memory.as_strided(source.size(), source.stride(), source.storage_offset())


def to_float64(value: Any) -> Any:
    """Exact float64 copies of tensors, packed sequences and tuples or lists of them."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return PackedSequence(value.data.detach().double(), value.batch_sizes,
                              value.sorted_indices, value.unsorted_indices)
    if isinstance(value, torch.Tensor):
        return value.detach().double()
    if isinstance(value, (tuple, list)):
        return type(value)(to_float64(v) for v in value)
    return value


def invoke(function: Any, args: tuple, form: str = "positional") -> Any:
    """``function`` called with the positional ``args`` of a case, in the case's argument ``form``."""
    positional, keywords = call_arguments(args, form)
    return function(*positional, **keywords)


def _call(model: Any, args: tuple, packed: bool, label: str, form: str) -> tuple[Any, Outcome]:
    """``model(*args)`` in argument ``form``: torch's raw output (what a next layer would take) and its result
    as arrays."""
    with warnings.catch_warnings():
        # torch warns once per process that projections bypass oneDNN; it says nothing about the case.
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        with timed(label):  # bench: "reference" (torch) or "oracle" (its float64 evaluation)
            result = invoke(model, args, form)
        outcome = from_torch(result, packed, where="torch.nn.LSTM")
    return result[0], outcome


def evaluate(model: Any, args: tuple, packed: bool, dtype: str,
             form: str = "positional") -> tuple[Any, Outcome, Outcome]:
    """Run torch's ``model`` on ``args`` (called in ``form``): its raw output, its result, and the oracle
    (the float64 evaluation of the same module and arguments; torch's own result for a float64 model)."""
    raw, reference = _call(model, args, packed, "reference", form)
    if dtype == "float64":
        return raw, reference, reference
    _, oracle = _call(copy.deepcopy(model).double(), to_float64(args), packed, "oracle", form)
    return raw, reference, oracle


def reference_for(case: Case) -> Reference:
    """Build the case, run torch on it, and run the float64 oracle when the case is float32."""
    caught: list = []
    model, args = case.build(warnings_out=caught)
    _, reference, oracle = evaluate(model, args, case.call.packed, case.config.dtype, case.call.arguments)
    perturbed = perturbed_evaluation(model, args, case) if beyond_unit_scale(case) else None
    return Reference(model, args, reference, oracle, caught, perturbed)


def beyond_unit_scale(case: Case) -> bool:
    """Whether the case holds values other than ``randn`` at unit scale, or weights scaled beyond torch's
    initialisation: where the tolerance policy also measures the case's sensitivity to rounding."""
    call = case.call
    return case.weight_scale != 1.0 or not (call.x_values.plain and call.h0_values.plain and call.c0_values.plain)


def jiggler(dtype: str) -> Callable[[Any], Any]:
    """A function that multiplies each element of a float64 tensor by ``1 + size * u``, ``u`` uniform in
    [-1, 1] from a fixed seed (a new draw for each tensor, in call order) and ``size`` the policy's
    :func:`~conformance.compare.perturbation` for ``dtype``: data moved by about rounding's size."""
    import torch

    size = perturbation(dtype)
    g = torch.Generator().manual_seed(0)

    def jiggle(t: Any) -> Any:
        return t * (1 + size * (2 * torch.rand(t.shape, generator=g, dtype=torch.float64) - 1))

    return jiggle


def perturbed_evaluation(model: Any, args: tuple, case: Case) -> Outcome:
    """The float64 evaluation with every weight and input element moved by :func:`jiggler`: how far a
    result moves when its data move by about rounding's size (see :mod:`conformance.compare`)."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    jiggle = jiggler(case.config.dtype)
    moved = copy.deepcopy(model).double()
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.copy_(jiggle(parameter))
    x, *rest = to_float64(args)
    x = x._replace(data=jiggle(x.data)) if isinstance(x, PackedSequence) else jiggle(x)
    hx = [type(state)(jiggle(t) for t in state) for state in rest]
    with torch.no_grad():
        return _call(moved, (x, *hx), case.call.packed, "oracle", case.call.arguments)[1]
