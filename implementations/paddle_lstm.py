"""PaddlePaddle's ``paddle.nn.LSTM`` (CPU), checked against torch.nn.LSTM.

The port is ``paddle.nn.LSTM`` from ``paddlepaddle==3.3.1``.  Paddle runs it two ways, both its
own: with four parameters per cell (no projection) it calls its fused ``rnn`` kernel
(``_C_ops.rnn``), otherwise (``proj_size``) it runs its ``LSTMCell``s layer by layer in Python.
Built with ``direction="bidirect"`` for ``bidirectional=True``, ``time_major = not batch_first``,
``dropout`` as given (Paddle applies it between layers in training mode, as torch does), and
``bias_ih_attr=bias_hh_attr=False`` for ``bias=False`` (Paddle then keeps frozen zero biases).

Weight mapping: Paddle uses torch's layout and gate order.  The weights are set through the
per-layer cells (``lstm[k].cell`` or ``lstm[k].cell_fw`` / ``cell_bw``):
``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as they are, and ``weight_ho = weight_hr.T``.
The torch-style attributes Paddle also sets (``weight_ih_l0`` ...) are not used: with
``proj_size`` (or ``bias=False``) they are zipped against the wrong parameters.  float64 models
are built under ``paddle.set_default_dtype("float64")`` (restored afterwards).

Calls: ``initial_states`` is ``(h0, c0)`` in torch's layout, handed over in the caller's
structure (Paddle checks it); packed input goes in as a padded time-major batch with
``sequence_length`` (Paddle's own mechanism); unbatched input gets a batch axis of one here.

What it lacks: ``bias=False``.  Paddle builds the model, but its fused CPU kernel crashes the
process (SIGSEGV in ``phi::RnnKernel``, ``DenseTensor::check_memory_size``) on the first call of a
model without biases (PaddlePaddle/Paddle#70231, open).  Every generated case may have
``bias=False``, so declaring it would make every test of the suite fail on this one defect (or,
listed as expected failures, hide any other); declared absent (``no_bias``), it is reported as
unsupported, and ``tests/test_real_ports.py`` checks that the crash is still there (it fails once
Paddle runs such a model: the signal to declare ``no_bias`` again).  Everything else torch's LSTM
has is declared, float64 and ``proj_size`` included.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines ("pir interpreter ...")

from implementations._extras import missing_port  # noqa: E402

try:
    import paddle
except ImportError as exc:
    raise missing_port("paddle", exc) from None

from conformance.adapters import Adapter, ArrayInput, ArrayResult, Capabilities  # noqa: E402
from conformance.arrays import LSTMConfig, PackedArrays, packed_to_padded, padded_to_packed  # noqa: E402

__all__ = ["PaddleLSTM"]

paddle.set_device("cpu")


def _to_paddle(value: Any) -> Any:
    """NumPy arrays as Paddle tensors, keeping tuples/lists (and anything else) as the caller built them."""
    if isinstance(value, np.ndarray):
        return paddle.to_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_paddle(v) for v in value)
    return value


def _add_batch_axis(hx: Any) -> Any:
    """Unbatched ``(h0, c0)`` of shape ``(L * D, H)`` as a batch of one.

    Paddle has no unbatched mode, so this translation is the adapter's: it only accepts the 2-D
    states that belong with unbatched input (a 3-D state would otherwise pass as a valid batch
    of one).  Anything that is not a pair of arrays is handed to Paddle as it is.
    """
    if isinstance(hx, (tuple, list)):
        for index, state in enumerate(hx):
            if isinstance(state, np.ndarray) and state.ndim != 2:
                raise RuntimeError(f"for unbatched 2-D input, hx[{index}] must be 2-D, got {state.ndim}-D")
        return type(hx)(v[:, None, :] if isinstance(v, np.ndarray) else v for v in hx)
    return hx


class PaddleLSTM(Adapter):
    """torch.nn.LSTM checked against paddle.nn.LSTM."""

    capabilities: ClassVar[Capabilities] = Capabilities(errors="raises").without("no_bias")
    expected_failures = "expected/paddle.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        previous = paddle.get_default_dtype()
        paddle.set_default_dtype(config.dtype)
        try:
            no_bias = {} if config.bias else {"bias_ih_attr": False, "bias_hh_attr": False}
            self.module = paddle.nn.LSTM(
                config.input_size, config.hidden_size, num_layers=config.num_layers,
                direction="bidirect" if config.bidirectional else "forward",
                time_major=not config.batch_first, dropout=config.dropout, proj_size=config.proj_size, **no_bias)
        finally:
            paddle.set_default_dtype(previous)
        for layer in range(config.num_layers):
            rnn = self.module[layer]
            cells = [rnn.cell_fw, rnn.cell_bw] if config.bidirectional else [rnn.cell]
            for cell, suffix in zip(cells, ("", "_reverse")):
                def get(kind: str) -> np.ndarray:
                    return np.asarray(self.weights[f"{kind}_l{layer}{suffix}"], dtype=config.dtype)

                cell.weight_ih.set_value(get("weight_ih"))
                cell.weight_hh.set_value(get("weight_hh"))
                if config.bias:
                    cell.bias_ih.set_value(get("bias_ih"))
                    cell.bias_hh.set_value(get("bias_hh"))
                if config.proj_size > 0:
                    cell.weight_ho.set_value(np.ascontiguousarray(get("weight_hr").T))
        self.module.flatten_parameters()  # Paddle's own re-sync of the fused kernel's weights

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        self.module.train() if training else self.module.eval()
        lengths = None
        if isinstance(input, PackedArrays):
            x, lengths = packed_to_padded(input)  # time-major, caller's batch order
            if self.config.batch_first:
                x = x.swapaxes(0, 1)
            unbatched = False
        else:
            x = np.asarray(input)
            unbatched = x.ndim == 2
            if unbatched:  # Paddle takes batched input only
                x = x[:, None, :] if not self.config.batch_first else x[None]
                hx = _add_batch_axis(hx)
        args: dict[str, Any] = {}
        if hx is not None:
            args["initial_states"] = _to_paddle(hx)
        if lengths is not None:
            args["sequence_length"] = paddle.to_tensor(lengths.astype(np.int64))
        with paddle.no_grad():
            output, (h_n, c_n) = self.module(paddle.to_tensor(np.ascontiguousarray(x)), **args)
        output, h_n, c_n = output.numpy(), h_n.numpy(), c_n.numpy()

        if isinstance(input, PackedArrays):
            if self.config.batch_first:
                output = output.swapaxes(0, 1)
            return padded_to_packed(output, input), (h_n, c_n)
        if unbatched:
            output = output[:, 0] if not self.config.batch_first else output[0]
            return output, (h_n[:, 0], c_n[:, 0])
        return output, (h_n, c_n)
