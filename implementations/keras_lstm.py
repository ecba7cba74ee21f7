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

What it lacks: ``proj_size`` (no projection in Keras's LSTM) and inter-layer dropout (Keras's
``dropout=`` argument is a per-layer input dropout with one mask for all steps, not torch's
dropout between layers).

float64 is declared, and known to diverge.  Keras builds float64 LSTM layers and returns float64
tensors, but on the torch backend ``ops.matmul`` of two float64 tensors computes in float32
(keras-team/keras#23704), so a float64 model is only float32-accurate: about 1e-8 from the float64
oracle where the suite allows 5e-12.  ``expected/keras.txt`` expects exactly the float64 examples
to fail (``when dtype=float64``): the float64 test is an expected failure, every other test still
fails on any other divergence, and ``tests/test_real_ports.py`` checks the defect is still there.
"""

from __future__ import annotations

import os
import sys
import tempfile
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

from conformance.adapters import Adapter, ArrayInput, ArrayResult, Capabilities  # noqa: E402
from conformance.arrays import LSTMConfig, PackedArrays, padded_to_packed  # noqa: E402
from implementations._layout import time_major  # noqa: E402

__all__ = ["KerasLSTM"]


class KerasLSTM(Adapter):
    """torch.nn.LSTM checked against Keras 3's LSTM layer (torch backend, no cuDNN)."""

    capabilities: ClassVar[Capabilities] = Capabilities(errors="raises").without("proj_size", "dropout")
    expected_failures = "expected/keras.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self._layers = []
        features = config.input_size
        for layer in range(config.num_layers):
            self._layers.append(self._build_layer(layer, features))
            features = config.hidden_size * config.num_directions

    def _lstm(self, go_backwards: bool = False) -> keras.layers.LSTM:
        cfg = self.config
        return keras.layers.LSTM(cfg.hidden_size, use_bias=cfg.bias, return_sequences=True, return_state=True,
                                 go_backwards=go_backwards, use_cudnn=False, dtype=cfg.dtype)

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
            return lstm
        wrapper = keras.layers.Bidirectional(self._lstm(), backward_layer=self._lstm(go_backwards=True),
                                             merge_mode="concat", dtype=self.config.dtype)
        wrapper.build(shape)
        wrapper.forward_layer.set_weights(self._keras_weights(layer, ""))
        wrapper.backward_layer.set_weights(self._keras_weights(layer, "_reverse"))
        return wrapper

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        cfg = self.config
        D = cfg.num_directions
        x, lengths, unbatched, state = time_major(input, hx, cfg)
        x = x.swapaxes(0, 1)  # Keras is batch-major
        mask = None if lengths is None else np.arange(x.shape[1])[None, :] < lengths[:, None]  # True on valid steps

        layer_input = keras.ops.convert_to_tensor(np.ascontiguousarray(x))
        keras_mask = None if mask is None else keras.ops.convert_to_tensor(mask)
        h_n, c_n = [], []
        for layer, module in enumerate(self._layers):
            initial = None
            if state is not None:
                initial = []
                for direction in range(D):
                    index = layer * D + direction
                    initial += [keras.ops.convert_to_tensor(np.ascontiguousarray(state[0][index])),
                                keras.ops.convert_to_tensor(np.ascontiguousarray(state[1][index]))]
            result = module(layer_input, initial_state=initial, mask=keras_mask, training=training)
            layer_input, finals = result[0], result[1:]  # finals: [h, c] per direction
            h_n += finals[0::2]
            c_n += finals[1::2]

        output = keras.ops.convert_to_numpy(layer_input)
        h_n = np.stack([keras.ops.convert_to_numpy(h) for h in h_n])
        c_n = np.stack([keras.ops.convert_to_numpy(c) for c in c_n])
        if isinstance(input, PackedArrays):
            return padded_to_packed(output.swapaxes(0, 1), input), (h_n, c_n)
        if unbatched:
            return output[0], (h_n[:, 0], c_n[:, 0])
        if not cfg.batch_first:
            output = output.swapaxes(0, 1)
        return output, (h_n, c_n)
