"""Gradient conformance: the backward pass of a drop-in judged against torch's.

This module finds the problems; :mod:`conformance.checks` runs the gradient checks on them
(``check_gradients``, ``check_double_backward``, ``check_gradient_accumulation``) and adds the diagnosis.

For one :class:`~conformance.case.Case` the check builds torch's module and the candidate's with the
same weights, passes each a copy of the case's arguments (the input, or a packed input's data, and
h0 and c0 require grad where the case says: ``Call.requires_grad``, ``Call.hx_requires_grad``), runs
both forwards with autograd, and judges:

* the forward result, as the forward check does (a port whose forward differs fails with the forward
  check's own failure, diagnosis and reproducer: its backward cannot be judged on another function, and
  its gradient tests group with its forward tests as one root cause);
* the autograd status of every result (the output, or a packed output's data, h_n and c_n): it requires
  grad, and has a ``grad_fn``, exactly when torch's does (nn.LSTM's parameters always require grad, so
  with any of them in the graph every result does);
* vector-Jacobian products: for cotangents drawn from the case's seed, on every result or on a subset
  of them (:func:`cotangent_sets`: a loss on the output only, on the final states only, ...), the
  gradients with respect to the input (or the packed data), h0, c0 and every parameter, by torch's
  names, must match torch's under the policy of :func:`conformance.compare.gradient_tolerance`: judged
  against the float64 oracle (torch's float64 LSTM on the same weights, inputs and cotangents), widened
  by torch's own float32 error.

A packed output's cotangent is drawn in the caller's batch order, padded (T, N, F), and handed to each
implementation in its own packed order, since the order among tied lengths is implementation-defined.

Training mode with a random dropout mask (0 < p < 1 between layers): torch's mask is not the port's, so
torch's gradient is recomputed under the port's.  Where :func:`conformance.dropout.recover` recovers
the mask the port drew in this very forward, element by element and uniquely, torch's layers are run
under that mask (:func:`masked_lstm`) and every gradient is compared.  Elsewhere the cotangent is put on
layer 0's h_n and c_n only: no mask reaches them, so every gradient of that loss (the input's, layer
0's h0, c0 and parameters, and the zeros of the layers above) is the same under any mask.  With
p = 0 or p = 1 the result is deterministic and compared like eval.

:func:`accumulation_problems` checks what a training loop relies on: ``backward()`` adds to a
``.grad`` the caller's tensors and the module's parameters already hold (never overwrites it), and a
second backward through a fresh call on the same instance adds the same gradients again.

The problems found have kind ``"gradient"``; they say which gradient differs (parameter, layer, direction, gate block; or input, h0, c0), listed in
the order the backward pass reaches them (the last layer's parameters first, the input last), and for
a unidirectional model whether only the gradients flowing back through time differ (each sequence's
last step's input gradient right, earlier steps wrong).  Adapters plug in through
``Capabilities(gradients=True)`` and :meth:`conformance.adapters.Adapter.backward`; one that does not
declare it is skipped with the reason.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .candidates import Candidate, CandidateError
from .case import Case
from .dropout import KEPT
from .forward import compare_outcome
from .compare import Tolerance, compare_values, gradient_scale, gradient_tolerance, held_in, within
from .dtypes import eps, is_floating, to_numpy, to_torch
from .outcome import StructureError, from_torch
from .reference import Reference, beyond_unit_scale, copy_args, invoke, jiggler
from .timing import timed
from .verdict import Problem

__all__ = ["GATES", "LOSSES", "RESULTS", "Gradients", "accumulation_problems", "cotangent_sets",
           "double_backward_problems", "double_backward_reason", "gradient_order", "gradient_problems", "masked_lstm",
           "masked_oracle_gradients", "through_time", "unsupported_reason"]

#: The results a loss may use, as nn.LSTM returns them.
RESULTS = ("output", "h_n", "c_n")
#: The losses a case's gradients are checked on, one per case, chosen by its seed (seed 0, where a
#: failing example shrinks to, uses every result): on output, h_n and c_n; on the output only; on the
#: final hidden state only (a classifier on h_n); on the final cell state only; on both final states
#: (a loss that uses only the final state).
LOSSES = (("output", "h_n", "c_n"), ("output",), ("output", "h_n", "c_n"), ("h_n",), ("c_n",), ("h_n", "c_n"))
#: The gate blocks of the rows of weight_ih, weight_hh, bias_ih and bias_hh, in torch's order.
GATES = ("i", "f", "g", "o")
#: How the problems of a gradient check say what the loss used.
_LOSS = {("output", "h_n", "c_n"): "a loss on output, h_n and c_n", ("output",): "a loss on the output only",
         ("h_n",): "a loss on h_n only", ("c_n",): "a loss on c_n only",
         ("h_n", "c_n"): "a loss on h_n and c_n only"}
_LAYER0 = "a loss on layer 0's h_n and c_n only (no dropout mask reaches them)"
_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def unsupported_reason(candidate: Candidate) -> Optional[str]:
    """Why the gradient checks do not run on ``candidate`` (``None``: they do)."""
    if not candidate.gradients:
        return "gradients (the backward pass judged against torch's; declared by Capabilities(gradients=True))"
    return None


def double_backward_reason(candidate: Candidate) -> Optional[str]:
    """Why the double-backward check does not run on ``candidate`` (``None``: it does)."""
    reason = unsupported_reason(candidate)
    if reason is not None:
        return reason
    if candidate.kind != "drop-in":
        return "double backward of adapters (the adapter protocol has a first-order backward() only)"
    if not candidate.double_backward:
        return "double backward (a Hessian-vector product; declared by Capabilities(double_backward=True))"
    return None


def cotangent_sets(case: Case) -> list[tuple[str, ...]]:
    """The losses a case's gradients are checked on (see :data:`LOSSES`): one, chosen by the case's seed.
    A backward pass costs more than its forward, and torch's, its oracle's and the candidate's are run
    for each loss: one loss per case keeps a gradient example within a few forward examples' time."""
    return [LOSSES[case.call.seed % len(LOSSES)]]


def gradient_order(config: Any) -> list[str]:
    """The tensors gradients are taken with respect to, in the order the backward pass reaches them:
    the parameters from the last layer down (torch's names), then the input, h0 and c0."""
    names = config.weight_names()
    layers = sorted({_layer(n) for n in names}, reverse=True)
    ordered = [n for layer in layers for n in names if _layer(n) == layer]
    return ordered + ["input", "h0", "c0"]


def _layer(name: str) -> int:
    """The layer of a parameter named as torch names them (``weight_ih_l1_reverse``: 1)."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not the name of an LSTM parameter")
    return int(match.group(2))


# ------------------------------------------------------------------------------ running with autograd


@dataclass
class _Run:
    """One forward with autograd: the raw result, its results as tensors, what gradients are taken
    with respect to, and where the output's packed rows come from."""

    raw: Any
    results: dict  # "output" (a packed output's data), "h_n", "c_n"
    wrt: dict  # "input", "h0", "c0" (those that require grad), then the parameters by torch's names
    batch_sizes: Any = None  # of a packed output
    sorted_indices: Any = None
    #: An adapter's VJP (cotangents as arrays, laid out for its results -> its gradients by name); ``None``
    #: for a torch module, whose gradients autograd takes.
    backward: Optional[Callable[[dict], Any]] = None


def _wrt_args(args: tuple) -> dict:
    """The caller's tensors that require grad: the input (or the packed data), h0 and c0 (h0 alone
    when one tensor is passed as both)."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    found = {}
    x = args[0]
    data = x.data if isinstance(x, PackedSequence) else x
    if isinstance(data, torch.Tensor) and data.requires_grad:
        found["input"] = data
    if len(args) > 1 and args[1] is not None:
        h0, c0 = args[1]
        if h0.requires_grad:
            found["h0"] = h0
        if c0.requires_grad and c0 is not h0:
            found["c0"] = c0
    return found


def _results(raw: Any, packed: bool) -> tuple[dict, Any, Any]:
    output, (h_n, c_n) = raw
    if packed:
        return {"output": output.data, "h_n": h_n, "c_n": c_n}, output.batch_sizes, output.sorted_indices
    return {"output": output, "h_n": h_n, "c_n": c_n}, None, None


def _float64_args(args: tuple) -> tuple:
    """Exact float64 copies of the call's arguments, keeping requires_grad and one tensor passed twice."""
    return _converted_args(args, lambda t: t.detach().double())


def _converted_args(args: tuple, convert_tensor: Callable[[Any], Any]) -> tuple:
    """The call's arguments with every tensor (a packed input's data too) replaced by ``convert_tensor``
    of it, requiring grad as it did; one tensor passed twice (h0 as c0) stays one tensor."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    memo: dict = {}

    def convert(value: Any) -> Any:
        if isinstance(value, PackedSequence):
            return PackedSequence(convert(value.data), value.batch_sizes, value.sorted_indices, value.unsorted_indices)
        if isinstance(value, torch.Tensor):
            if id(value) not in memo:
                memo[id(value)] = convert_tensor(value).requires_grad_(value.requires_grad)
            return memo[id(value)]
        if isinstance(value, (tuple, list)):
            return type(value)(convert(v) for v in value)
        return value

    return convert(args)


def _quiet_call(function: Any, args: tuple, form: str, label: str) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        with timed(label):
            return invoke(function, args, form)


def _torch_run(model: Any, args: tuple, case: Case, label: str) -> _Run:
    raw = _quiet_call(model, args, case.call.arguments, label)
    results, sizes, order = _results(raw, case.call.packed)
    wrt = {**_wrt_args(args), **dict(model.named_parameters())}
    return _Run(raw, results, wrt, sizes, order)


def _torch_runs(model: Any, args: tuple, case: Case, sensitivity: bool = True) -> tuple[_Run, _Run, Optional[_Run]]:
    """torch's run in the case's dtype, its float64 oracle's (the same run for a float64 model) and, beyond
    unit scale (with ``sensitivity``), the oracle's on data moved by rounding's size; all with autograd."""
    reference = _torch_run(model, copy_args(args), case, "reference")
    oracle = reference if case.config.dtype == "float64" else \
        _torch_run(copy.deepcopy(model).double(), _float64_args(args), case, "oracle")
    perturbed = None
    if sensitivity and beyond_unit_scale(case):
        moved, moved_args = _jiggled(model, args, case.config.dtype)
        perturbed = _torch_run(moved, moved_args, case, "oracle")
    return reference, oracle, perturbed


def _jiggled(model: Any, args: tuple, dtype: str) -> tuple[Any, tuple]:
    """The float64 model and arguments with every element moved by rounding's size
    (:func:`~conformance.reference.jiggler`), as the forward policy's sensitivity measurement does."""
    import torch

    move = jiggler(dtype)

    def jiggle(t: Any) -> Any:
        return move(t).detach()

    moved = copy.deepcopy(model).double()
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.copy_(jiggle(parameter))
    return moved, _converted_args(args, lambda t: jiggle(t.detach().double()))


# ------------------------------------------------------------------------ torch under a given mask


def masked_lstm(config: Any, params: dict, args: tuple, case: Case, masks: tuple, mask_in_backward: bool = True) -> Any:
    """torch's LSTM (its kernel, one layer at a time) on the positional ``args``, with the dropout masks
    ``masks`` between layers (as :func:`conformance.dropout.recover` gives them: (T, N, F) per dropped
    tensor, in the caller's batch order; kept elements scaled by 1 / (1 - p)).  ``params`` maps torch's
    parameter names to the tensors to differentiate; returns ``(output, (h_n, c_n))`` as nn.LSTM does.
    ``mask_in_backward=False`` asks a what-if: the mask scales the values but the gradient passes through
    it unchanged (a backward that ignores the forward's dropout)."""
    import torch
    from torch.nn.utils.rnn import PackedSequence


    x = args[0]
    packed = isinstance(x, PackedSequence)
    dtype = params[config.weight_names()[0]].dtype
    rows = config.num_layers * config.num_directions
    if packed:
        layer_input, batch = x.data, int(x.batch_sizes[0])
    elif case.call.unbatched:
        layer_input, batch = x.unsqueeze(1), 1
    else:
        layer_input = x.transpose(0, 1) if config.batch_first else x
        batch = layer_input.shape[1]
    if len(args) > 1 and args[1] is not None:
        h0, c0 = args[1]
        if case.call.unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        if packed and x.sorted_indices is not None:
            h0, c0 = h0.index_select(1, x.sorted_indices), c0.index_select(1, x.sorted_indices)
    else:
        h0 = torch.zeros(rows, batch, config.output_size, dtype=dtype)
        c0 = torch.zeros(rows, batch, config.hidden_size, dtype=dtype)
    scale = 1.0 / (1.0 - float(config.dropout))
    hs, cs = [], []
    names = config.weight_names()
    for layer in range(config.num_layers):
        weights = [params[n] for n in names if _layer(n) == layer]
        r = slice(layer * config.num_directions, (layer + 1) * config.num_directions)
        state = (h0[r].contiguous(), c0[r].contiguous())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
            if packed:
                out, h, c = torch.lstm(layer_input, x.batch_sizes, state, weights, config.bias, 1, 0.0, False,
                                       config.bidirectional)
            else:
                out, h, c = torch.lstm(layer_input, state, weights, config.bias, 1, 0.0, False,
                                       config.bidirectional, False)
        hs.append(h)
        cs.append(c)
        if layer < config.num_layers - 1:
            keep = torch.from_numpy(masks[layer] == KEPT)
            if packed:
                keep = _packed_rows(keep, x.batch_sizes, x.sorted_indices)
            dropped = out * (keep.to(dtype) * scale)
            out = dropped if mask_in_backward else out + (dropped - out).detach()
        layer_input = out
    h_n, c_n = torch.cat(hs, 0), torch.cat(cs, 0)
    if packed:
        if x.unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, x.unsorted_indices), c_n.index_select(1, x.unsorted_indices)
        return PackedSequence(layer_input, x.batch_sizes, x.sorted_indices, x.unsorted_indices), (h_n, c_n)
    if case.call.unbatched:
        return layer_input.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    output = layer_input.transpose(0, 1) if config.batch_first else layer_input
    return output, (h_n, c_n)


def _packed_rows(padded: Any, batch_sizes: Any, sorted_indices: Any) -> Any:
    """The rows of a packed tensor, from its padded (T, N, ...) form in the caller's batch order."""
    import torch

    order = torch.arange(padded.shape[1]) if sorted_indices is None else sorted_indices
    return torch.cat([padded[t, order[:int(b)]] for t, b in enumerate(batch_sizes)], 0)


def _padded(data: np.ndarray, batch_sizes: Any, sorted_indices: Any, fill: float = 0.0) -> np.ndarray:
    """A packed tensor's rows as (T, N, ...) in the caller's batch order (``fill`` past each sequence's end)."""
    sizes = [int(b) for b in batch_sizes]
    order = np.arange(sizes[0]) if sorted_indices is None else np.asarray(sorted_indices)
    out = np.full((len(sizes), sizes[0], *data.shape[1:]), fill, dtype=data.dtype)
    start = 0
    for t, b in enumerate(sizes):
        out[t, order[:b]] = data[start:start + b]
        start += b
    return out


# -------------------------------------------------------------------------------- cotangents and VJPs


def _cotangents(case: Case, reference: _Run, parts: tuple[str, ...], index: int, layer0_only: bool) -> dict:
    """Cotangents for ``parts``, drawn from the case's seed: normal, in the caller's order (a packed
    output's padded (T, N, F)), float64."""
    import torch

    g = torch.Generator().manual_seed(case.call.seed * 7919 + 104729 * (index + 1))
    found = {}
    for name in parts:
        tensor = reference.results[name]
        shape = tuple(tensor.shape)
        if name == "output" and reference.batch_sizes is not None:
            shape = (len(reference.batch_sizes), int(reference.batch_sizes[0]), tensor.shape[-1])
        cot = torch.randn(shape, generator=g, dtype=torch.float64)
        if layer0_only:  # the rows of layer 0 only (h_n and c_n are rows first, batched or not)
            cot[case.config.num_directions:] = 0.0
        found[name] = cot
    return found


def _for_run(cotangents: dict, run: _Run) -> dict:
    """The cotangents laid out for one run's results (a packed output in that run's packed order)."""
    laid = {}
    for name, cot in cotangents.items():
        tensor = run.results[name]
        if name == "output" and run.batch_sizes is not None:
            cot = _packed_rows(cot, run.batch_sizes, run.sorted_indices)
        laid[name] = cot.to(tensor.dtype) if tuple(cot.shape) == tuple(tensor.shape) else None
    return laid


def _vjp(run: _Run, cotangents: dict, what: str, direction: Optional[dict] = None) -> dict:
    """The vector-Jacobian product of the results with the cotangents, with respect to ``run.wrt``: a
    dict of float64 arrays (``None`` where no gradient reaches that tensor).  A torch module's is taken
    by ``torch.autograd.grad``, an adapter's by its backward() (only the names it returned).

    With ``direction`` (a tensor per name of ``run.wrt``), the double backward instead: the gradient of
    ``sum(<direction[n], gradient[n]>)``, a Hessian-vector product of the loss, with the first gradients
    taken with ``create_graph=True`` (a first gradient outside the graph contributes nothing)."""
    import torch

    laid = _for_run(cotangents, run)
    if run.backward is not None:
        return _adapter_vjp(run, run.backward, laid, what)
    outputs, grads = [], []
    for name, cot in laid.items():
        tensor = run.results[name]
        if cot is not None and tensor.requires_grad:
            outputs.append(tensor)
            grads.append(cot)
    names = [n for n, t in run.wrt.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outputs or not names:
        return dict.fromkeys(run.wrt)
    tensors = [run.wrt[n] for n in names]
    with timed(what):
        found: Sequence[Optional[torch.Tensor]] = torch.autograd.grad(
            outputs, tensors, grads, retain_graph=True, allow_unused=True, create_graph=direction is not None)
        if direction is not None:
            terms = [(g * direction[n].to(g.dtype)).sum() for n, g in zip(names, found)
                     if g is not None and g.requires_grad and n in direction]
            found = (torch.autograd.grad(sum(terms), tensors, retain_graph=True, allow_unused=True) if terms
                     else [None] * len(names))
    result = dict.fromkeys(run.wrt)
    result.update({n: None if g is None else g.detach().double().numpy() for n, g in zip(names, found)})
    return result


def _adapter_vjp(run: _Run, backward: Callable[[dict], Any], laid: dict, what: str) -> dict:
    """An adapter's backward() on the cotangents (arrays in its results' dtype; a result the loss does not
    use is left out), its result checked: the gradients it returned for the names of ``run.wrt``."""
    cotangents = {n: to_numpy(c) for n, c in laid.items() if c is not None}
    with timed(what):
        got = backward(cotangents)
    if not isinstance(got, Mapping):
        raise StructureError(f"backward() returned {type(got).__name__}; expected a dict of gradients by name "
                             f"('input', 'h0', 'c0', and the parameters by torch's names)")
    result = {}
    for name in run.wrt:
        value = got.get(name)
        if value is None:
            continue
        array = np.asarray(value)
        if not is_floating(array):
            raise StructureError(f"backward()'s gradient {name!r} is {type(value).__name__} of dtype {array.dtype}; "
                                 f"expected a floating-point array")
        result[name] = array.astype(np.float64)
    return result


# ------------------------------------------------------------------------------------ judging


@dataclass
class Gradients:
    """One loss's gradients on torch, its float64 oracle (and, beyond unit scale, the oracle on data moved
    by rounding's size) and the candidate, by name; what the candidate's backward left ``None``."""

    loss: str
    reference: dict
    oracle: dict
    candidate: dict
    perturbed: Optional[dict] = None
    compared: dict = field(default_factory=dict)  # name -> (tolerance, ok, mine, oracle, mine None) where judged
    masks: Optional[tuple] = None  # the recovered dropout masks torch's gradients were computed under
    cotangents: Optional[dict] = None  # the loss's cotangents (float64, the caller's layout)
    state: Optional[dict] = None  # the weights, where a recogniser may ask a what-if
    adapter: bool = False  # the candidate's gradients come from an adapter's backward(), not from autograd


def _where(name: str, bad: np.ndarray, case: Case, mine_none: bool, bad_steps: Optional[np.ndarray] = None) -> str:
    """Where a gradient differs, in words: layer, direction and gate blocks of a parameter, the rows of
    h0/c0, the time steps of the input."""
    cfg = case.config
    words = []
    match = _NAME.match(name)
    if mine_none:
        words.append("no gradient reaches it (autograd.grad gives None)")
    if match:
        kind, layer, reverse = match.group(1), int(match.group(2)), bool(match.group(3))
        place = f"layer {layer}" + (f", {'reverse' if reverse else 'forward'} direction" if cfg.bidirectional else "")
        if kind != "weight_hr" and bad.shape[0] % 4 == 0:
            gates_bad = np.asarray(bad.reshape(4, bad.shape[0] // 4, -1).any(axis=(1, 2)))
            blocks = [g for g, on in zip(GATES, gates_bad) if on]
            place += f", gate block{'s' if len(blocks) > 1 else ''} {', '.join(blocks)}"
        words.insert(0, place)
    elif name in ("h0", "c0"):
        rows = bad.reshape(bad.shape[0], -1).any(axis=1)
        words.insert(0, "rows " + ", ".join(_state_row(int(r), cfg) for r in np.nonzero(rows)[0]))
    elif name == "input" and bad_steps is not None:  # (T, N, F): where the input gradient is wrong
        steps = np.nonzero(bad_steps.any(axis=tuple(range(1, bad_steps.ndim))))[0]
        if steps.size:
            words.insert(0, f"time steps {_ranges(steps.tolist())} of {bad_steps.shape[0]}")
    return "; ".join(words)


def _state_row(row: int, cfg: Any) -> str:
    layer, direction = divmod(row, cfg.num_directions)
    return f"{row} (layer {layer}{', reverse' if direction else ''})"


def _ranges(values: list[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")


def _input_time_major(array: np.ndarray, case: Case, args: tuple) -> np.ndarray:
    """An input-shaped array as (T, N, F) in the caller's batch order (a packed one padded)."""
    from torch.nn.utils.rnn import PackedSequence

    x = args[0]
    if isinstance(x, PackedSequence):
        return _padded(array, x.batch_sizes, x.sorted_indices)
    if case.call.unbatched:
        return array[:, None]
    return array.swapaxes(0, 1) if case.config.batch_first else array


def _lengths(case: Case, steps: int, batch: int) -> list[int]:
    return list(case.call.lengths or ()) if case.call.packed else [steps] * batch  # packed: lengths set


def through_time(case: Case, ok: np.ndarray, args: tuple) -> Optional[bool]:
    """For a unidirectional model, from where the input gradient is right (``ok``, shaped as the input or
    the packed data): True when each sequence's last step is right and an earlier step is wrong (only
    the gradient flowing back through time differs); None when it cannot tell (bidirectional, one step,
    nothing wrong)."""
    if case.config.bidirectional:
        return None
    bad = ~_input_time_major(ok, case, args)
    steps, batch = bad.shape[0], bad.shape[1]
    if steps < 2 or not bad.any():
        return None
    last_bad = earlier_bad = False
    for b, n in enumerate(_lengths(case, steps, batch)):
        if n < 1:
            continue
        last_bad |= bool(bad[n - 1, b].any())
        earlier_bad |= bool(bad[:n - 1, b].any())
    return (not last_bad) and earlier_bad


def _judge(case: Case, grads: Gradients, args: tuple, order: list[str], call: int) -> list[Problem]:
    """The gradients of one loss, each against the oracle's under the gradient policy."""
    problems = []
    dtype = case.config.dtype
    largest = gradient_scale(grads.oracle.values())
    if grads.perturbed is not None:  # beyond unit scale: see _saturated_scale
        largest = max(largest, _saturated_scale(grads, args))
    for name in order:
        if name not in grads.oracle and name not in grads.candidate:
            continue
        if name not in grads.candidate:
            missing = (f"its backward() returned no gradient for {name}" if grads.adapter else
                       f"{name} is not among the candidate's tensors that require grad (its named_parameters): "
                       f"no gradient can reach it")
            problems.append(Problem("gradient", missing, tensor=name, call=call, rule="parameter-missing",
                                    region=grads.loss))
            continue
        oracle = grads.oracle.get(name)
        reference = grads.reference.get(name)
        mine = grads.candidate[name]
        shape = None
        for value in (oracle, reference, mine):
            if value is not None:
                shape = value.shape
                break
        if shape is None:  # no gradient reaches it anywhere: nothing to compare
            continue
        zeros = np.zeros(shape)
        oracle = zeros if oracle is None else oracle
        reference = zeros if reference is None else reference
        mine_none = mine is None
        mine = zeros if mine is None else mine
        if mine.shape != oracle.shape:
            problems.append(Problem("gradient", f"the gradient w.r.t. {name} has shape {tuple(mine.shape)}; torch's "
                                                f"has {tuple(oracle.shape)}", tensor=name, call=call,
                                    rule="gradient-shape", region=grads.loss))
            continue
        perturbed = None
        if grads.perturbed is not None:
            perturbed = grads.perturbed.get(name)
            perturbed = zeros if perturbed is None else perturbed
        oracle = held_in(oracle, dtype)
        steps = 1 if name in ("input", "h0", "c0") else case.call.seq_len  # a parameter's sums over every step
        tol = gradient_tolerance(dtype, reference, oracle, perturbed, largest, steps)
        mismatch = compare_values(name, mine, oracle, tol, reference)
        ok = within(mine, oracle, tol, reference)
        grads.compared[name] = (tol, ok, mine, oracle, mine_none)
        if mismatch is None:
            continue
        bad = ~ok
        bad_steps = _input_time_major(bad, case, args) if name == "input" else None
        detail = _where(name, bad, case, mine_none, bad_steps)
        if name == "input" and through_time(case, ok, args):
            detail += "; only the gradient flowing back through time differs: each sequence's last step is right"
        problems.append(Problem("gradient", detail, mismatch=mismatch, tensor=name, call=call,
                                rule="gradient-values", region=grads.loss))
    return problems


def _saturated_scale(grads: Gradients, args: tuple) -> float:
    """How large a gradient of this loss would be with every gate derivative at 1, its absolute
    precision: the largest cotangent times the largest input (or state) value and the largest weight
    (each at least 1).  Beyond unit scale the gates saturate, every derivative through them vanishes,
    and a correct port that computes a gate derivative to absolute precision (as the forward allows a
    gate to be computed) is off by eps of this, not of the vanished gradients."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    def largest(values: Any) -> float:
        arrays = [v.detach().double().numpy() if isinstance(v, torch.Tensor) else v for v in values]
        return gradient_scale(arrays)

    x = args[0].data if isinstance(args[0], PackedSequence) else args[0]
    states = list(args[1]) if len(args) > 1 and args[1] is not None else []
    cotangents = largest((grads.cotangents or {}).values())
    return cotangents * max(1.0, largest([x, *states])) * max(1.0, largest((grads.state or {}).values()))


def _status(torch_run: _Run, mine: _Run) -> list[Problem]:
    """Autograd status: each result requires grad and has a grad_fn exactly when torch's does; every
    parameter torch differentiates requires grad in the candidate."""
    problems = []
    for name in RESULTS:
        theirs, got = torch_run.results[name], mine.results[name]
        want = (bool(theirs.requires_grad), theirs.grad_fn is not None)
        have = (bool(getattr(got, "requires_grad", False)), getattr(got, "grad_fn", None) is not None)
        if want != have:
            label = "the packed output's data" if name == "output" and torch_run.batch_sizes is not None else name
            problems.append(Problem("gradient", f"{label} has requires_grad={have[0]} and "
                                                f"{'a' if have[1] else 'no'} grad_fn; torch's has "
                                                f"requires_grad={want[0]} and {'a' if want[1] else 'no'} grad_fn",
                                    tensor=name, rule="autograd-status"))
    for name, tensor in torch_run.wrt.items():
        got = mine.wrt.get(name)
        if got is not None and tensor.requires_grad and not got.requires_grad:
            problems.append(Problem("gradient", f"the candidate's {name} does not require grad; torch's does",
                                    tensor=name, rule="autograd-status"))
    return problems


# ------------------------------------------------------------------------------------- the check


def _candidate_run(candidate: Candidate, instance: Any, args: tuple, case: Case) -> _Run:
    raw = candidate.call(instance, args, case.call.training, case.call.arguments)
    candidate.outcome(raw, case.call.packed)  # a result not built like torch's: its StructureError
    if candidate.kind == "adapter":
        return _adapter_run(candidate, instance, raw, args, case)
    results, sizes, order = _results(raw, case.call.packed)
    named = dict(instance.named_parameters())
    wrt = {**_wrt_args(args), **{n: named[n] for n in case.config.weight_names() if n in named}}
    return _Run(raw, results, wrt, sizes, order)


def _adapter_run(candidate: Candidate, instance: Any, raw: Any, args: tuple, case: Case) -> _Run:
    """An adapter's forward result as a run whose VJP is its backward() at the same arguments; with one
    tensor passed as both h0 and c0, its gradient is the sum of the two the adapter returns."""
    import torch

    output, (h_n, c_n) = raw
    packed = case.call.packed
    data = output.data if packed else output
    results = {"output": to_torch(np.asarray(data)), "h_n": to_torch(np.asarray(h_n)), "c_n": to_torch(np.asarray(c_n))}
    sizes = torch.as_tensor(np.asarray(output.batch_sizes)) if packed else None
    order = None
    if packed and output.sorted_indices is not None:
        order = torch.as_tensor(np.asarray(output.sorted_indices))
    wrt = {**_wrt_args(args), **dict.fromkeys(case.config.weight_names())}

    def backward(cotangents: dict) -> Any:
        got = candidate.backward(instance, args, cotangents, case.call.training)
        if case.call.same_state and isinstance(got, Mapping) and got.get("h0") is not None \
                and got.get("c0") is not None:
            got = {**got, "h0": np.asarray(got["h0"]) + np.asarray(got["c0"])}
        return got

    return _Run(raw, results, wrt, sizes, order, backward)


def _guarded(what: str, action: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return action()
    except (CandidateError, StructureError):
        raise
    except Exception as exc:
        raise CandidateError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def gradient_problems(candidate: Candidate, case: Case) -> tuple[list[Problem], list, tuple]:
    """The problems of one gradient check, each loss's gradients as compared, and the case's arguments."""
    import torch

    model, args = case.build()
    cfg = case.config
    problems: list[Problem] = []
    grads_seen: list[Gradients] = []
    with torch.enable_grad():
        reference, oracle, perturbed = _torch_runs(model, args, case)
        mine_args = copy_args(args)
        try:
            instance = candidate.build(cfg, model.state_dict())
            mine = _guarded("the forward call", lambda: _candidate_run(candidate, instance, mine_args, case))
            got = candidate.outcome(mine.raw, case.call.packed)
            ref_outcome = from_torch(reference.raw, case.call.packed)
            ref = Reference(model, args, ref_outcome, from_torch(oracle.raw, case.call.packed), [],
                                None if perturbed is None else from_torch(perturbed.raw, case.call.packed))
            recovered: list = []
            problems += compare_outcome(case, ref, got, recovered=recovered)
            if not problems and candidate.kind == "drop-in":  # an adapter's results are arrays: no autograd
                problems += _status(reference, mine)
            if not problems:
                problems += _backward(case, args, reference, oracle, perturbed, mine, recovered, grads_seen)
        except CandidateError as exc:
            problems.append(Problem("raised", f"torch returned a result, but {exc}", rule="raised-on-valid"))
        except StructureError as exc:
            problems.append(Problem("structure", str(exc), rule="malformed"))
    return problems, grads_seen, args


def _backward(case: Case, args: tuple, reference: _Run, oracle: _Run, perturbed: Optional[_Run], mine: _Run,
              recovered: list, grads_seen: list) -> list[Problem]:
    """Every loss's VJPs on torch, the oracle and the candidate, judged; see the module docstring for
    training mode with a random dropout mask."""
    cfg = case.config
    order = gradient_order(cfg)
    layer0_only, masks = False, None
    sets = cotangent_sets(case)
    if not case.deterministic:
        recovery = recovered[0] if recovered else None
        if recovery is not None and recovery.complete:
            masks = recovery.masks
            reference, oracle = _masked_runs(case, args, reference, masks)
        else:
            layer0_only, sets = True, [("h_n", "c_n")]
    for index, parts in enumerate(sets):
        cot = _cotangents(case, reference, parts, index, layer0_only)
        loss = _LAYER0 if layer0_only else _LOSS[parts]
        try:
            theirs = _vjp(reference, cot, "reference")
            truth = theirs if oracle is reference else _vjp(oracle, cot, "oracle")
            moved = None if perturbed is None else _vjp(perturbed, cot, "oracle")
        except RuntimeError as exc:  # torch's own backward refused: nothing to judge the port against
            raise RuntimeError(f"torch's backward failed on a valid case {case!r}: {exc}") from exc
        try:
            with timed("candidate"):
                got = _vjp(mine, cot, "candidate")
        except StructureError as exc:
            return [Problem("structure", f"{exc} ({loss})", rule="malformed")]
        except Exception as exc:  # noqa: BLE001 - whatever the port's backward raises is a difference
            return [Problem("raised", f"torch's backward ran, but the candidate's backward ({loss}) raised "
                                      f"{type(exc).__name__}: {exc}", rule="raised-in-backward")]
        state = {n: t.detach() for n, t in oracle.wrt.items() if n not in ("input", "h0", "c0")}
        grads = Gradients(loss, theirs, truth, got, moved, masks=masks, cotangents=cot, state=state,
                          adapter=mine.backward is not None)
        grads_seen.append(grads)
        problems = _judge(case, grads, args, order, call=1)
        if problems:
            return problems
    return []


def _masked_runs(case: Case, args: tuple, reference: _Run, masks: tuple) -> tuple[_Run, _Run]:
    """torch's layers under the recovered ``masks``: in the case's dtype and in float64, with autograd."""
    import torch

    cfg = case.config
    state = {n: t.detach() for n, t in reference.wrt.items() if n not in ("input", "h0", "c0")}
    runs: list[_Run] = []
    for dtype in ((torch.float64,) if cfg.dtype == "float64" else (getattr(torch, cfg.dtype), torch.float64)):
        params = {n: t.to(dtype).clone().requires_grad_(True) for n, t in state.items()}
        call_args = copy_args(args) if dtype == getattr(torch, cfg.dtype) else _float64_args(args)
        with timed("reference" if len(runs) == 0 and dtype != torch.float64 else "oracle"):
            raw = masked_lstm(cfg, params, call_args, case, masks)
        results, sizes, order = _results(raw, case.call.packed)
        runs.append(_Run(raw, results, {**_wrt_args(call_args), **params}, sizes, order))
    return (runs[0], runs[-1])


def masked_oracle_gradients(case: Case, args: tuple, state: dict, masks: tuple, cotangents: dict,
                            mask_in_backward: bool = True) -> dict:
    """The float64 gradients of torch's layers under ``masks`` (see :func:`masked_lstm`) for
    ``cotangents``, by name: what a recogniser compares a candidate's with."""
    import torch

    with torch.enable_grad():
        params = {n: t.double().clone().requires_grad_(True) for n, t in state.items()}
        call_args = _float64_args(args)
        raw = masked_lstm(case.config, params, call_args, case, masks, mask_in_backward)
        results, sizes, order = _results(raw, case.call.packed)
        run = _Run(raw, results, {**_wrt_args(call_args), **params}, sizes, order)
        return _vjp(run, cotangents, "oracle")


# ------------------------------------------------------------------------------- double backward


#: How the problems of the double-backward check say what was differentiated.
_SECOND = "the double backward (the gradient of <v, the gradient of {loss}>, a Hessian-vector product)"


def _directions(case: Case, run: _Run) -> dict:
    """The vector ``v`` of a Hessian-vector product: normal, float64, one tensor per name of ``run.wrt``,
    drawn from the case's seed."""
    import torch

    g = torch.Generator().manual_seed(case.call.seed * 6007 + 15485863)
    return {name: torch.randn(tuple(t.shape), generator=g, dtype=torch.float64) for name, t in run.wrt.items()}


def double_backward_problems(candidate: Candidate, case: Case) -> list[Problem]:
    """The double backward a gradient penalty takes: for the case's loss (:func:`cotangent_sets`) and a
    random ``v``, the gradient of ``<v, the loss's gradient>`` with respect to the input, h0, c0 and every
    parameter (a Hessian-vector product) must match the float64 oracle's under the gradient policy.  A
    first gradient taken outside the graph (a ``.detach()`` or ``torch.no_grad()`` in a hand-written
    backward) is what this finds: its first-order gradients are right.  A port whose forward or first
    gradients differ fails as those checks do."""
    import torch

    reason = double_backward_reason(candidate)
    if reason is not None:
        raise ValueError(f"{candidate.name} declares no support for {reason}")
    if not case.deterministic:
        raise ValueError(f"the double-backward check needs a case without a random dropout mask: {case!r}")
    model, args = case.build()
    cfg = case.config
    problems: list[Problem] = []
    with torch.enable_grad():
        reference, oracle, perturbed = _torch_runs(model, args, case)
        parts = cotangent_sets(case)[0]
        cot = _cotangents(case, reference, parts, 0, False)
        direction = _directions(case, reference)
        theirs = _vjp(reference, cot, "reference", direction)
        truth = theirs if oracle is reference else _vjp(oracle, cot, "oracle", direction)
        moved = None if perturbed is None else _vjp(perturbed, cot, "oracle", direction)
        mine_args = copy_args(args)
        loss = _SECOND.format(loss=_LOSS[parts])
        try:
            instance = candidate.build(cfg, model.state_dict())
            mine = _guarded("the forward call", lambda: _candidate_run(candidate, instance, mine_args, case))
            try:
                with timed("candidate"):
                    got = _vjp(mine, cot, "candidate", direction)
            except Exception as exc:  # noqa: BLE001 - whatever the port's double backward raises is a difference
                problems.append(Problem("raised", f"torch's double backward ran, but the candidate's ({loss}) "
                                                  f"raised {type(exc).__name__}: {exc}",
                                        rule="raised-in-double-backward"))
            else:
                grads = Gradients(loss, theirs, truth, got, moved)
                problems += _judge(case, grads, args, gradient_order(cfg), call=1)
        except CandidateError as exc:
            problems.append(Problem("raised", f"torch returned a result, but {exc}", rule="raised-on-valid"))
        except StructureError as exc:
            problems.append(Problem("structure", str(exc), rule="malformed"))
    return problems


# -------------------------------------------------------------------------------- accumulation


def accumulation_problems(candidate: Candidate, case: Case) -> list[Problem]:
    """``backward()`` adds to the ``.grad`` the caller's tensors and the module's parameters already
    hold, and a second backward through a fresh call on the same instance adds the same gradients again.

    For a deterministic case: every ``.grad`` starts at a random tensor G; after one call and
    ``torch.autograd.backward`` it must be G + the oracle's gradient, after a second call and backward
    G + twice that, each within the gradient policy (its tolerance doubled for the sum of two).  Where it
    fails, a port whose forward or gradients already differ fails as those checks do."""
    import torch

    if candidate.kind != "drop-in":
        raise ValueError(f"the accumulation check is for torch modules (.grad), not the adapter {candidate.name}")
    if not case.deterministic:
        raise ValueError(f"the accumulation check needs a case without a random dropout mask: {case!r}")
    model, args = case.build()
    cfg = case.config
    problems: list[Problem] = []
    with torch.enable_grad():
        reference, oracle, _ = _torch_runs(model, args, case, sensitivity=False)
        cot = _cotangents(case, reference, RESULTS, 0, False)
        theirs = _vjp(reference, cot, "reference")
        truth = theirs if oracle is reference else _vjp(oracle, cot, "oracle")
        mine_args = copy_args(args)
        try:
            instance = candidate.build(cfg, model.state_dict())
            named = dict(instance.named_parameters())
            leaves = {**_wrt_args(mine_args), **{n: named[n] for n in cfg.weight_names() if n in named}}
            g = torch.Generator().manual_seed(case.call.seed + 1)
            start = {}
            for name, tensor in leaves.items():  # what the caller's .grad held before the first call
                if tensor.requires_grad and tensor.is_leaf:
                    start[name] = torch.randn(tensor.shape, generator=g, dtype=torch.float64).to(tensor.dtype)
                    tensor.grad = start[name].clone()
            for call in (1, 2):
                what_call = "the forward call" if call == 1 else "the second forward call"
                run = _guarded(what_call, lambda: _candidate_run(candidate, instance, mine_args, case))
                laid = _for_run(cot, run)
                outputs = [run.results[n] for n in RESULTS if laid[n] is not None and run.results[n].requires_grad]
                grads = [laid[n] for n in RESULTS if laid[n] is not None and run.results[n].requires_grad]
                if outputs:
                    _guarded("the candidate's backward", lambda: torch.autograd.backward(outputs, grads))
                for name in gradient_order(cfg):
                    if name not in start:
                        continue
                    tensor = leaves[name] if name in ("input", "h0", "c0") else run.wrt.get(name)
                    if tensor is None or truth.get(name) is None:
                        continue
                    base = start[name].double().numpy()
                    have = None if tensor.grad is None else tensor.grad.detach().double().numpy()
                    want = base + call * truth[name]
                    their = theirs.get(name)
                    ref = base + call * (their if their is not None else 0.0)
                    tol = gradient_tolerance(cfg.dtype, ref - base, want - base, None,
                                             call * gradient_scale(truth.values()))
                    tol = Tolerance(2 * call * tol.atol + _rounding(cfg.dtype, base), tol.rtol, tol.torch_error)
                    what = "after one backward" if call == 1 else "after a second call and backward"
                    if have is None:
                        problems.append(Problem("gradient", f"{name}.grad is None {what}; it held a gradient before",
                                                tensor=name, call=call, rule="grad-not-accumulated"))
                        break
                    mismatch = compare_values(name, have - base, want - base, tol)
                    if mismatch is not None:
                        overwritten = _close(have, truth[name], tol) or _close(have, call * truth[name], tol)
                        how = (" (it was overwritten, not added to)" if overwritten else "")
                        problems.append(Problem("gradient", f"{name}.grad {what} is not the .grad it held plus "
                                                            f"{'the gradient' if call == 1 else 'both gradients'}"
                                                            f"{how}", mismatch=mismatch, tensor=name, call=call,
                                                rule="grad-not-accumulated"))
                        break
                if problems:
                    break
        except CandidateError as exc:
            problems.append(Problem("raised", f"torch returned a result, but {exc}", rule="raised-on-valid"))
        except StructureError as exc:
            problems.append(Problem("structure", str(exc), rule="malformed"))
    return problems


def _rounding(dtype: str, base: np.ndarray) -> float:
    """The rounding of adding to ``base`` in ``dtype``: a few eps of its largest element."""
    values = np.abs(base[np.isfinite(base)])
    return 4 * eps(dtype) * (float(values.max()) if values.size else 0.0)


def _close(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> bool:
    with np.errstate(invalid="ignore"):
        return bool((np.abs(a - b) <= tol.atol + tol.rtol * np.abs(b)).all())
