"""ONNX Runtime's LSTM operator, run on a graph built by hand with ``onnx.helper``.

The port is ONNX Runtime's CPU kernel for the ONNX ``LSTM`` operator (``onnxruntime==1.32.0``,
graphs built with ``onnx==1.23.2``, opset 21).  No torch exporter is involved: the adapter writes
one ``LSTM`` node per layer, so what is checked is ONNX Runtime's kernel, not an exporter.

Weight mapping, per layer (both directions stacked on a leading axis of size D):

* ``W = weight_ih`` and ``R = weight_hh`` with the four gate row-blocks reordered from torch's
  ``[i, f, g, o]`` to ONNX's ``[i, o, f, c]``;
* ``B = concat(bias_ih, bias_hh)`` in the same gate order (no ``B`` input when ``bias=False``;
  ONNX's default is zeros);
* ``direction="bidirectional"`` for ``bidirectional=True``;
* ``initial_h`` / ``initial_c`` are rows ``layer * D .. layer * D + D`` of torch's ``h0`` / ``c0``;
* packed input goes in as a padded batch plus ``sequence_lens`` (the operator's own mechanism);
* ``Y`` is ``[L, D, N, H]``; a ``Transpose`` + ``Reshape`` in the graph turns it into the next
  layer's ``[L, N, D * H]`` input, and ``Y_h`` / ``Y_c`` of all layers are concatenated into torch's
  ``(num_layers * D, N, H)``.

float16 graphs run: ONNX Runtime's CPU provider has no float16 LSTM kernel and casts the node's
inputs to float32 and its results back, so a float16 model is computed in float32 and rounded once.

What it lacks: float64 (a double graph loads, but ONNX Runtime's CPU LSTM kernel refuses to run
it: "LSTM operator does not support double yet"), bfloat16 (the ``LSTM`` operator's type constraint
admits float16, float32 and float64 only: a bfloat16 graph fails ``onnx.checker``), ``proj_size`` (the operator has no
projection), dropout (the operator has none; a model is inference-only) and gradients (ONNX
Runtime's training build is not what this package installs: the gradient tests are skipped as
declared absent).  ``batch_first`` and
unbatched input are layout changes done here in NumPy.  The adapter checks only what splitting
the stacked states per layer needs (``_layout.split_hx``: a pair of arrays of the right rank with
``num_layers * D`` rows, which slicing would otherwise silently accept or drop); batch, feature and
dtype mismatches are the operator's to reject.  Reshape keeps T and N from its input (no ``-1``),
so a 0-step or 0-batch result reaches the suite as the LSTM node produced it.

Sessions: one ``InferenceSession`` per model and call signature (with or without ``hx``, with or
without ``sequence_lens``); the plain one is built in ``__init__``, the others on first use.  Time
and batch are symbolic dimensions, so one session serves every input shape.
"""

from __future__ import annotations

from typing import ClassVar, Mapping, Optional

import numpy as np

from implementations._extras import missing_port

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:
    raise missing_port("onnxruntime", exc) from None

from conformance.adapters import Adapter, ArrayInput, ArrayResult, Capabilities
from conformance.arrays import LSTMConfig
from implementations._layout import time_major, torch_layout

__all__ = ["OnnxRuntimeLSTM"]

OPSET = 21
IR_VERSION = 10
#: torch's gate blocks [i, f, g, o] in ONNX's order [i, o, f, c].
_ONNX_GATE_ORDER = (0, 3, 1, 2)


def _reorder_gates(array: np.ndarray) -> np.ndarray:
    blocks = np.split(array, 4, axis=0)
    return np.concatenate([blocks[k] for k in _ONNX_GATE_ORDER], axis=0)


class OnnxRuntimeLSTM(Adapter):
    """torch.nn.LSTM checked against ONNX Runtime's LSTM kernel (float32 and float16, no proj_size, no dropout)."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(dtypes={"float32", "float16"}, errors="raises",
                                                        gradients=False).without("proj_size", "dropout")
    lstm_conformance_expected_failures = "expected/onnxruntime.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self._sessions: dict[tuple[bool, bool], ort.InferenceSession] = {}
        self._session(with_hx=False, with_lens=False)

    # ------------------------------------------------------------------ the graph
    def _initializers(self, layer: int) -> list[TensorProto]:
        cfg = self.config
        suffixes = ("", "_reverse")[: cfg.num_directions]
        dtype = np.dtype(cfg.dtype)

        def stacked(kind: str) -> np.ndarray:
            return np.stack([_reorder_gates(np.asarray(self.weights[f"{kind}_l{layer}{s}"], dtype=dtype))
                             for s in suffixes])

        tensors = [numpy_helper.from_array(stacked("weight_ih"), f"W_{layer}"),
                   numpy_helper.from_array(stacked("weight_hh"), f"R_{layer}")]
        if cfg.bias:
            bias = np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)  # (D, 8H)
            tensors.append(numpy_helper.from_array(bias, f"B_{layer}"))
        return tensors

    def _model(self, with_hx: bool, with_lens: bool) -> onnx.ModelProto:
        cfg = self.config
        D, H = cfg.num_directions, cfg.hidden_size
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(cfg.dtype))
        inputs = [helper.make_tensor_value_info("X", elem, ["T", "N", cfg.input_size])]
        if with_lens:
            inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["N"]))
        # [T, N, D * H] with T and N copied from the input (Reshape's 0 means "keep this dimension"):
        # no -1 to infer, so a 0-step or 0-batch result reaches the caller as the LSTM node made it.
        merge = np.array([0, 0, D * H], dtype=np.int64)
        nodes, initializers = [], [numpy_helper.from_array(merge, "merge_shape")]
        layer_input = "X"
        for layer in range(cfg.num_layers):
            initializers += self._initializers(layer)
            if with_hx:
                inputs += [helper.make_tensor_value_info(f"h0_{layer}", elem, [D, "N", H]),
                           helper.make_tensor_value_info(f"c0_{layer}", elem, [D, "N", H])]
            node_inputs = [layer_input, f"W_{layer}", f"R_{layer}", f"B_{layer}" if cfg.bias else "",
                           "sequence_lens" if with_lens else "",
                           f"h0_{layer}" if with_hx else "", f"c0_{layer}" if with_hx else ""]
            while node_inputs[-1] == "":
                node_inputs.pop()
            nodes.append(helper.make_node(
                "LSTM", node_inputs, [f"Y_{layer}", f"Yh_{layer}", f"Yc_{layer}"], name=f"lstm_{layer}",
                hidden_size=H, direction="bidirectional" if cfg.bidirectional else "forward"))
            # Y is [T, D, N, H]; the next layer (and torch's output) wants [T, N, D * H].
            nodes.append(helper.make_node("Transpose", [f"Y_{layer}"], [f"Yt_{layer}"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt_{layer}", "merge_shape"], [f"out_{layer}"]))
            layer_input = f"out_{layer}"
        nodes.append(helper.make_node("Identity", [layer_input], ["output"]))
        for name, part in (("h_n", "Yh"), ("c_n", "Yc")):
            nodes.append(helper.make_node("Concat", [f"{part}_{k}" for k in range(cfg.num_layers)], [name], axis=0))
        outputs = [helper.make_tensor_value_info("output", elem, ["T", "N", D * H]),
                   helper.make_tensor_value_info("h_n", elem, [cfg.num_layers * D, "N", H]),
                   helper.make_tensor_value_info("c_n", elem, [cfg.num_layers * D, "N", H])]
        graph = helper.make_graph(nodes, "torch_lstm", inputs, outputs, initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="lstm-conformance")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model

    def _session(self, with_hx: bool, with_lens: bool) -> ort.InferenceSession:
        key = (with_hx, with_lens)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[key] = ort.InferenceSession(
                self._model(with_hx, with_lens).SerializeToString(), options, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    # ------------------------------------------------------------------ forward
    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        cfg = self.config
        D = cfg.num_directions
        x, lengths, unbatched, state = time_major(input, hx, cfg)

        feeds = {"X": np.ascontiguousarray(x)}
        if lengths is not None:
            feeds["sequence_lens"] = lengths.astype(np.int32)
        if state is not None:
            for layer in range(cfg.num_layers):
                rows = slice(layer * D, (layer + 1) * D)
                feeds[f"h0_{layer}"] = np.ascontiguousarray(state[0][rows])
                feeds[f"c0_{layer}"] = np.ascontiguousarray(state[1][rows])
        session = self._session(with_hx=state is not None, with_lens=lengths is not None)
        output, h_n, c_n = session.run(["output", "h_n", "c_n"], feeds)

        return torch_layout(output, h_n, c_n, input, unbatched, cfg)
