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
  (``torch.zeros(..., dtype=torch.float)`` in ``forward``), so a float64 model called without
  ``hx`` raises ``mat1 and mat2 must have the same dtype``.  With an explicit ``hx`` float64 works.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import torch
from torch.ao.nn import quantizable

from conformance.adapters import Adapter, ArrayInput, ArrayResult, Capabilities
from conformance.arrays import LSTMConfig

__all__ = ["QuantizableLSTM"]


def _to_torch(value: Any) -> Any:
    """NumPy arrays as tensors, keeping tuples/lists (and anything else) as the caller built them."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_torch(v) for v in value)
    return value


class QuantizableLSTM(Adapter):
    """torch.nn.LSTM checked against torch.ao.nn.quantizable.LSTM in floating point."""

    capabilities: ClassVar[Capabilities] = Capabilities(errors="raises").without(
        "proj_size", "packed", "packed_unsorted", "unbatched", "dropout")
    expected_failures = "expected/torch-quantizable.txt"

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
                        state[f"{cell}.{gates}.{attribute}"] = torch.tensor(self.weights[torch_name])
        self.module.load_state_dict(state, strict=True)

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        self.module.train(training)
        args = (_to_torch(input),) if hx is None else (_to_torch(input), _to_torch(hx))
        with torch.no_grad():
            output, (h_n, c_n) = self.module(*args)
        return output.numpy(), (h_n.numpy(), c_n.numpy())
