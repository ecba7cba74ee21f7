"""``torch.ao.nn.quantizable.LSTM``, used in floating point (nothing is quantized).

The port is the quantizable LSTM that ships with torch (checked here with torch 2.13.0): an LSTM
rebuilt from ``nn.Linear`` layers and a Python loop over time steps, so that observers can be
attached before quantization.  Before any quantization step it is meant to compute exactly what
``nn.LSTM`` computes.  It is built with its public constructor (``input_size, hidden_size,
num_layers, bias, batch_first, dropout, bidirectional, dtype``) and loaded with its own
``load_state_dict`` (strict, shapes checked):

* ``layers.{k}.layer_fw.cell.igates.weight / .bias = weight_ih_l{k} / bias_ih_l{k}``;
* ``layers.{k}.layer_fw.cell.hgates.weight / .bias = weight_hh_l{k} / bias_hh_l{k}``;
* ``layer_bw`` likewise from the ``_reverse`` parameters.

Inputs and ``(h0, c0)`` are handed over as torch tensors in torch's own layout and structure
(whatever the caller passed), so the port's own checks are what is tested.

Gradients (``Capabilities(gradients=True)``): the port is torch code, so :meth:`QuantizableLSTM.backward`
runs the call again (the same ``_run`` as :meth:`QuantizableLSTM.forward`; deterministic, since the port
applies no dropout) with the input and states as tensors that require grad, and takes
``torch.autograd.grad`` with respect to them and to the port's own parameters, named back by the
mapping above.

What it lacks: ``proj_size``, PackedSequence input and unbatched (2-D) input (its ``forward``
takes a dense 3-D tensor only), and dropout (the ``dropout`` argument is accepted and ignored,
with a warning).

Two upstream defects make part of an axis fail; both axes are declared, and
``expected/torch-quantizable.txt`` expects exactly the failing examples (``when ...`` entries), so
every test still fails on any other divergence.  ``tests/test_real_ports.py`` checks both are
still there:

* with ``num_layers >= 2`` and ``bidirectional=True`` the constructor gives layers 2..n
  ``hidden_size`` inputs instead of ``2 * hidden_size``, so torch's weights do not load
  (pytorch/pytorch#89357; ``LSTM.from_float`` in the prepare flow sidesteps it by building the
  layers from the float weights' shapes).  Single-layer bidirectional models work.
* without ``hx`` the port creates float32 zero states whatever the model's dtype
  (``torch.zeros(..., dtype=torch.float)`` in ``forward``), so a float64, float16 or bfloat16 model
  called without ``hx`` raises ``mat1 and mat2 must have the same dtype`` (in the forward and gradient
  tests alike).  With an explicit ``hx`` every dtype works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import torch
from torch.ao.nn import quantizable

from conformance.adapters import Adapter, ArrayInput, ArrayResult, ArrayState, Capabilities
from conformance.arrays import LSTMConfig
from conformance.dtypes import to_numpy, to_torch

__all__ = ["QuantizableLSTM"]

#: The port's parameter names (``layers.{k}.layer_fw.cell.igates.weight``, ...) -> torch's.
_NAME = re.compile(r"^layers\.(\d+)\.layer_(fw|bw)\.cell\.(igates|hgates)\.(weight|bias)$")


def _torch_name(name: str) -> str:
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a parameter of the quantizable LSTM")
    layer, direction, gates, attribute = match.groups()
    return f"{attribute}_{'ih' if gates == 'igates' else 'hh'}_l{layer}{'_reverse' if direction == 'bw' else ''}"


def _to_torch(value: Any, leaves: bool = False) -> Any:
    """NumPy arrays as tensors, keeping tuples/lists (and anything else) as the caller built them.  With
    ``leaves``, floating-point tensors are copies that require grad, for backward() to differentiate."""
    if isinstance(value, np.ndarray):
        tensor = to_torch(value)
        if leaves and tensor.is_floating_point():
            tensor = tensor.detach().clone().requires_grad_(True)
        return tensor
    if isinstance(value, (tuple, list)):
        return type(value)(_to_torch(v, leaves) for v in value)
    return value


@dataclass
class _Run:
    """One call of the port: the tensors it was given (the input, and hx as the caller built it) and its results."""

    input: Any
    hx: Any
    output: torch.Tensor
    h_n: torch.Tensor
    c_n: torch.Tensor


class QuantizableLSTM(Adapter):
    """torch.nn.LSTM checked against torch.ao.nn.quantizable.LSTM in floating point."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(errors="raises", gradients=True).without(
        "proj_size", "packed", "packed_unsorted", "unbatched", "dropout")
    lstm_conformance_expected_failures = "expected/torch-quantizable.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        # Its warnings ("dropout option for quantizable LSTM is ignored") reach the suite as they are.
        self.module = quantizable.LSTM(
            config.input_size, config.hidden_size, num_layers=config.num_layers, bias=config.bias,
            batch_first=config.batch_first, dropout=config.dropout, bidirectional=config.bidirectional,
            dtype=getattr(torch, config.dtype))
        state = {}
        for layer in range(config.num_layers):
            for suffix, direction in (("", "layer_fw"), ("_reverse", "layer_bw"))[: config.num_directions]:
                cell = f"layers.{layer}.{direction}.cell"
                for gates, kind in (("igates", "ih"), ("hgates", "hh")):
                    names = [("weight", f"weight_{kind}_l{layer}{suffix}")]
                    if config.bias:
                        names.append(("bias", f"bias_{kind}_l{layer}{suffix}"))
                    for attribute, torch_name in names:
                        state[f"{cell}.{gates}.{attribute}"] = to_torch(self.weights[torch_name]).clone()
        self.module.load_state_dict(state, strict=True)

    def _run(self, input: ArrayInput, hx: Optional[object], training: bool, requires_grad: bool = False) -> _Run:
        """One call of the port; with ``requires_grad`` the input and states are leaves that require grad,
        else it runs under ``torch.no_grad()``."""
        self.module.train(training)
        x, state = _to_torch(input, requires_grad), _to_torch(hx, requires_grad)
        args = (x,) if hx is None else (x, state)
        with torch.enable_grad() if requires_grad else torch.no_grad():
            output, (h_n, c_n) = self.module(*args)
        return _Run(x, state, output, h_n, c_n)

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        run = self._run(input, hx, training)
        return to_numpy(run.output), (to_numpy(run.h_n), to_numpy(run.c_n))

    def backward(self, input: ArrayInput, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        """The vector-Jacobian product by ``torch.autograd.grad`` through the port's own ``nn.Linear`` gates and
        time loop: the call is run again (it is deterministic: the port applies no dropout) with the input and
        states requiring grad, and differentiated with respect to them and to the gates' parameters, which
        are named back as torch's (``igates`` are ``weight_ih`` / ``bias_ih``, ``hgates`` the ``_hh`` ones,
        ``layer_bw`` the ``_reverse`` ones).  Inputs and results are in torch's own layout: nothing is laid out."""
        run = self._run(input, hx, training, requires_grad=True)
        outputs, grads = [], []
        for name, tensor in (("output", run.output), ("h_n", run.h_n), ("c_n", run.c_n)):
            if cotangents.get(name) is not None:
                outputs.append(tensor)
                grads.append(to_torch(np.ascontiguousarray(cotangents[name])).to(tensor.dtype))
        names = ["input"] + (["h0", "c0"] if hx is not None else [])
        wrt = [run.input] + (list(run.hx[:2]) if hx is not None else [])
        for name, parameter in self.module.named_parameters():
            names.append(_torch_name(name))
            wrt.append(parameter)
        found = torch.autograd.grad(outputs, wrt, grads, allow_unused=True) if outputs else [None] * len(wrt)
        # A tensor the loss does not reach (a layer above the one a loss on its states uses) has zero gradient.
        return {name: to_numpy(torch.zeros_like(tensor) if g is None else g)
                for name, tensor, g in zip(names, wrt, found)}
