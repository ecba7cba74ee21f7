"""Keras 3's ``keras.layers.LSTM`` on the torch backend, stacked and wrapped as torch stacks it.

The port is Keras's own LSTM layer and RNN loop (``keras==3.15.1``, ``KERAS_BACKEND=torch``,
``use_cudnn=False`` so Keras never hands the work to torch's own LSTM kernel; no TensorFlow).
This module sets ``KERAS_BACKEND=torch`` before importing Keras, and points ``KERAS_HOME`` (where
Keras writes ``keras.json``) at a temporary folder unless it is already set.

Weight mapping, per layer and direction (Keras's gate order i, f, c, o is torch's i, f, g, o):

* ``kernel = weight_ih.T``, ``recurrent_kernel = weight_hh.T``, ``bias = bias_ih + bias_hh``
  (``use_bias=False`` when ``bias=False``);
* ``num_layers`` is a stack of LSTM layers, each returning sequences and states;
* ``bidirectional`` is ``keras.layers.Bidirectional`` with a ``go_backwards=True`` backward layer;
* ``h0`` / ``c0`` row ``layer * D + direction`` is that layer's ``initial_state`` (``[h, c]``, or
  ``[h_fw, c_fw, h_bw, c_bw]`` for Bidirectional), and the returned states are stacked back;
* packed input goes in as a padded batch with a boolean ``mask`` (Keras's own mechanism for
  variable lengths); ``batch_first``, time-major and unbatched input are transposes done here.

Gradients (``Capabilities(gradients=True)``): Keras's layers on the torch backend are torch operations,
so :meth:`KerasLSTM.backward` runs the same layer stack as :meth:`KerasLSTM.forward` (one ``_run``) again,
with the input and initial states as torch tensors that require grad, and takes ``torch.autograd.grad``
with respect to them and to the torch Parameters behind each direction's Keras variables (a Keras
Variable's ``.value``): ``kernel`` and ``recurrent_kernel`` map back to ``weight_ih`` and ``weight_hh``
transposed, and the merged ``bias`` gradient is both ``bias_ih``'s and ``bias_hh``'s.  The call is
deterministic (no dropout), so the second run is the function the forward computed.

What it lacks: ``proj_size`` (no projection in Keras's LSTM) and inter-layer dropout (Keras's
``dropout=`` argument is a per-layer input dropout with one mask for all steps, not torch's
dropout between layers).

float64 is declared, and known to diverge.  Keras builds float64 LSTM layers and returns float64
tensors, but on the torch backend ``ops.matmul`` of two float64 tensors computes in float32
(keras-team/keras#23704), so a float64 model is only float32-accurate: about 1e-8 from the float64
oracle where the suite allows 5e-12; its gradients, through the same matmuls, likewise.
``expected/keras.txt`` expects exactly the float64 examples to fail (``when dtype=float64``, for the
forward and the gradient tests): every other example still fails on any other divergence, and
``tests/test_real_ports.py`` checks the defect is still there.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional

import numpy as np

from implementations._extras import missing_port

_loaded = sys.modules.get("keras")
if _loaded is not None and getattr(getattr(_loaded, "backend", None), "backend", lambda: "torch")() != "torch":
    raise ImportError(f"keras was already imported with the {_loaded.backend.backend()} backend; "
                      "implementations.keras_lstm needs KERAS_BACKEND=torch set before keras is imported")
os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))

try:
    import keras
except ImportError as exc:
    raise missing_port("keras", exc) from None

import torch  # noqa: E402  (Keras's backend here: its tensors and variables are torch's)

from conformance.adapters import Adapter, ArrayInput, ArrayResult, ArrayState, Capabilities  # noqa: E402
from conformance.arrays import LSTMConfig  # noqa: E402
from conformance.dtypes import numpy_dtype, to_numpy, to_torch  # noqa: E402
from implementations._layout import (time_major, time_major_cotangents, torch_layout,  # noqa: E402
                                     torch_layout_gradients, torch_parameter_gradients)

__all__ = ["KerasLSTM"]


@dataclass
class _Run:
    """One pass through the layer stack, as torch tensors: the time-major input ``x`` (T, N, F) and the
    ``(num_layers * D, N, H)`` initial states it started from (``None`` without hx), and what it returned:
    the last layer's output, time-major, and the stacked final states."""

    x: torch.Tensor
    state: Optional[tuple[torch.Tensor, torch.Tensor]]
    output: torch.Tensor
    h_n: torch.Tensor
    c_n: torch.Tensor
    unbatched: bool


class KerasLSTM(Adapter):
    """torch.nn.LSTM checked against Keras 3's LSTM layer (torch backend, no cuDNN)."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(errors="raises", gradients=True).without(
        "proj_size", "dropout")
    lstm_conformance_expected_failures = "expected/keras.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self._layers = []
        #: The Keras LSTM layer of each (layer, torch's direction suffix), whose variables backward() differentiates.
        self._directions: dict[tuple[int, str], keras.layers.LSTM] = {}
        features = config.input_size
        for layer in range(config.num_layers):
            self._layers.append(self._build_layer(layer, features))
            features = config.hidden_size * config.num_directions

    def _lstm(self, go_backwards: bool = False) -> keras.layers.LSTM:
        cfg = self.config
        # zero initializers: torch's weights replace them at once, and Keras's orthogonal initializer runs a QR
        # decomposition that torch's CPU backend has no float16 or bfloat16 kernel for
        return keras.layers.LSTM(cfg.hidden_size, use_bias=cfg.bias, return_sequences=True, return_state=True,
                                 go_backwards=go_backwards, use_cudnn=False, dtype=cfg.dtype,
                                 kernel_initializer="zeros", recurrent_initializer="zeros")

    def _keras_weights(self, layer: int, suffix: str) -> list[np.ndarray]:
        def get(kind: str) -> np.ndarray:
            return np.asarray(self.weights[f"{kind}_l{layer}{suffix}"], dtype=self.config.dtype)

        arrays = [get("weight_ih").T, get("weight_hh").T]
        if self.config.bias:
            arrays.append(get("bias_ih") + get("bias_hh"))
        return arrays

    def _build_layer(self, layer: int, features: int) -> keras.layers.Layer:
        shape = (None, None, features)
        if not self.config.bidirectional:
            lstm = self._lstm()
            lstm.build(shape)
            lstm.set_weights(self._keras_weights(layer, ""))
            self._directions[(layer, "")] = lstm
            return lstm
        wrapper = keras.layers.Bidirectional(self._lstm(), backward_layer=self._lstm(go_backwards=True),
                                             merge_mode="concat", dtype=self.config.dtype)
        wrapper.build(shape)
        wrapper.forward_layer.set_weights(self._keras_weights(layer, ""))
        wrapper.backward_layer.set_weights(self._keras_weights(layer, "_reverse"))
        self._directions[(layer, "")] = wrapper.forward_layer
        self._directions[(layer, "_reverse")] = wrapper.backward_layer
        return wrapper

    def _run(self, input: ArrayInput, hx: Optional[object], training: bool, requires_grad: bool = False) -> _Run:
        """The layer stack on one call; with ``requires_grad`` the input and initial states are leaves that
        require grad, so that autograd can differentiate the results with respect to them."""
        cfg = self.config
        D = cfg.num_directions
        x, lengths, unbatched, arrays = time_major(input, hx, cfg)
        mask = None if lengths is None else np.arange(x.shape[0])[None, :] < lengths[:, None]  # True on valid steps

        x = keras.ops.convert_to_tensor(np.ascontiguousarray(x)).requires_grad_(requires_grad)
        state = None if arrays is None else tuple(
            keras.ops.convert_to_tensor(np.ascontiguousarray(s)).requires_grad_(requires_grad) for s in arrays)
        layer_input = x.transpose(0, 1).contiguous()  # Keras is batch-major
        keras_mask = None if mask is None else keras.ops.convert_to_tensor(mask)
        h_n, c_n = [], []
        for layer, module in enumerate(self._layers):
            initial = None
            if state is not None:
                initial = []
                for direction in range(D):
                    index = layer * D + direction
                    initial += [state[0][index], state[1][index]]
            result = module(layer_input, initial_state=initial, mask=keras_mask, training=training)
            layer_input, finals = result[0], result[1:]  # finals: [h, c] per direction
            h_n += finals[0::2]
            c_n += finals[1::2]
        return _Run(x, state, layer_input.transpose(0, 1), torch.stack(h_n), torch.stack(c_n), unbatched)

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        run = self._run(input, hx, training)
        output, h_n, c_n = (keras.ops.convert_to_numpy(t) for t in (run.output, run.h_n, run.c_n))
        return torch_layout(output, h_n, c_n, input, run.unbatched, self.config)

    def backward(self, input: ArrayInput, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        """The vector-Jacobian product by torch's autograd through Keras's own layers: the call is run again
        (it is deterministic: no dropout) with the input and states requiring grad, and differentiated with
        respect to them and to the torch Parameters behind the Keras variables (``kernel``,
        ``recurrent_kernel``, ``bias``), which are mapped back to torch's names."""
        cfg = self.config
        run = self._run(input, hx, training, requires_grad=True)
        laid = time_major_cotangents(cotangents, input, run.unbatched, cfg)
        outputs, grads = [], []
        for tensor, cotangent in zip((run.output, run.h_n, run.c_n), laid):
            if cotangent is not None:
                outputs.append(tensor)
                grads.append(to_torch(np.ascontiguousarray(cotangent)).to(tensor.dtype))
        cells = {key: lstm.cell for key, lstm in self._directions.items()}
        variables = {key: [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cfg.bias else [])
                     for key, cell in cells.items()}
        wrt = [run.x, *(run.state or ())] + [v.value for key in variables for v in variables[key]]
        found = (torch.autograd.grad(outputs, wrt, grads, allow_unused=True) if outputs else [None] * len(wrt))
        # A tensor the loss does not reach (a layer above the one a loss on its states uses) has zero gradient.
        arrays = [np.zeros(tuple(t.shape), dtype=numpy_dtype(cfg.dtype)) if g is None else to_numpy(g)
                  for t, g in zip(wrt, found)]
        d_x, arrays = arrays[0], arrays[1:]
        d_state = None
        if run.state is not None:
            d_state, arrays = (arrays[0], arrays[1]), arrays[2:]
        result = torch_layout_gradients(d_x, d_state, input, run.unbatched, cfg)
        for (layer, suffix), found_vars in variables.items():
            count = len(found_vars)
            mine, arrays = arrays[:count], arrays[count:]
            result.update(torch_parameter_gradients(cfg, layer, suffix, mine[0], mine[1],
                                                    mine[2] if cfg.bias else None))
        return result
