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

Gradients (``Capabilities(gradients=True)``) are Paddle's own: ``paddle.grad`` on Paddle's tape of the
call (its fused kernel's ``RnnGradKernel``, or autograd through the cells with ``proj_size``), with
respect to the input and states as Paddle received them and to every cell parameter, laid out back as
torch's (``weight_hr = weight_ho.T``).  A training-mode :meth:`PaddleLSTM.forward` is recorded, and
:meth:`PaddleLSTM.backward` differentiates that tape, so under the dropout masks that call drew.  In
eval mode the fused kernel keeps nothing for its backward: ``paddle.grad`` raises "Tensor holds no
memory" (PaddlePaddle/Paddle#49015), where torch differentiates either mode.  The adapter does not work
around it (running the call in training mode would hide what a Paddle user meets):
``expected/paddle.txt`` expects the eval-mode gradient examples to fail, and ``tests/test_real_ports.py``
checks that the limitation is still there.

Known divergences, expected by ``expected/paddle.txt`` (``when ...`` entries) and each checked by
``tests/test_real_ports.py``:

* with ``sequence_length`` the fused kernel's ``weight_hh_reverse`` gradient is wrong for a sequence
  shorter than the longest when that direction's ``h0`` is non-zero (the other gradients are right);
* Paddle's dropout takes its probability in float32 (the fused kernel's ``float dropout_prob``
  attribute; ``F.dropout``, on the ``proj_size`` path, divides by ``1 - p`` rounded to float32), so a
  float64 model in training mode with dropout is scaled between layers to float32 accuracy only (a
  forward divergence, which the gradient tests meet in their forward too);
* on the ``proj_size`` path ``F.dropout`` with ``p = 1`` returns zeros, so a NaN in the input does
  not reach the layers above as torch's ``NaN * 0`` does.

What it lacks: ``bias=False``.  Paddle builds the model, but its fused CPU kernel crashes the
process (SIGSEGV in ``phi::RnnKernel``, ``DenseTensor::check_memory_size``) on the first call of a
model without biases (PaddlePaddle/Paddle#70231, open).  Every generated case may have
``bias=False``, so declaring it would make every test of the suite fail on this one defect (or,
listed as expected failures, hide any other); declared absent (``no_bias``), it is reported as
unsupported, and ``tests/test_real_ports.py`` checks that the crash is still there (it fails once
Paddle runs such a model: the signal to declare ``no_bias`` again).  Everything else torch's LSTM
has is declared, float64 and ``proj_size`` included, except float16 and bfloat16: Paddle's fused CPU
``rnn`` kernel is registered for float32 and float64 only, so half-precision models are not claimed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines ("pir interpreter ...")

from implementations._extras import missing_port

try:
    import paddle
except ImportError as exc:
    raise missing_port("paddle", exc) from None

from conformance.adapters import Adapter, ArrayInput, ArrayResult, ArrayState, Capabilities
from conformance.arrays import LSTMConfig, PackedArrays, packed_to_padded, padded_to_packed
from implementations._layout import time_major_cotangents, torch_layout_gradients

__all__ = ["PaddleLSTM"]

paddle.set_device("cpu")


def _to_paddle(value: Any, leaves: bool = False) -> Any:
    """NumPy arrays as Paddle tensors, keeping tuples/lists (and anything else) as the caller built them.
    With ``leaves``, floating-point tensors take gradients (``stop_gradient=False``), so that a recorded
    call can be differentiated with respect to them."""
    if isinstance(value, np.ndarray):
        tensor = paddle.to_tensor(value)
        if leaves and np.issubdtype(value.dtype, np.floating):
            tensor.stop_gradient = False
        return tensor
    if isinstance(value, (tuple, list)):
        return type(value)(_to_paddle(v, leaves) for v in value)
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


def _same_arrays(a: Any, b: Any) -> bool:
    """Whether two call arguments (arrays, PackedArrays, tuples of them, None) hold the same values."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(_same_arrays(x, y) for x, y in zip(a, b)))
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@dataclass
class _Run:
    """One call of the Paddle module with its tape: the arguments it was for, the input and initial states
    as Paddle received them (batched; time-major, or batch-major with ``batch_first``), and its results."""

    input: ArrayInput
    hx: Any
    training: bool
    x: Any
    states: Optional[tuple[Any, Any]]
    output: Any
    h_n: Any
    c_n: Any
    unbatched: bool


class PaddleLSTM(Adapter):
    """torch.nn.LSTM checked against paddle.nn.LSTM."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(dtypes={"float32", "float64"}, errors="raises",
                                                        gradients=True).without("no_bias")
    lstm_conformance_expected_failures = "expected/paddle.txt"

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
        #: The cell of each (layer, torch's direction suffix): its parameters are the ones Paddle runs.
        self._cells: dict[tuple[int, str], Any] = {}
        for layer in range(config.num_layers):
            rnn = self.module[layer]
            cells = [rnn.cell_fw, rnn.cell_bw] if config.bidirectional else [rnn.cell]
            for cell, suffix in zip(cells, ("", "_reverse")):
                self._cells[(layer, suffix)] = cell

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
        self._last: Optional[_Run] = None

    def _run(self, input: ArrayInput, hx: Optional[object], training: bool, record: bool = False) -> _Run:
        """One call of the module; with ``record`` autograd records it (the input and states are leaves that
        take gradients, the parameters always do), else it runs under ``paddle.no_grad()``."""
        cfg = self.config
        self.module.train() if training else self.module.eval()
        lengths = None
        given = hx
        if isinstance(input, PackedArrays):
            x, lengths = packed_to_padded(input)  # time-major, caller's batch order
            if cfg.batch_first:
                x = x.swapaxes(0, 1)
            unbatched = False
        else:
            x = np.asarray(input)
            unbatched = x.ndim == 2
            if unbatched:  # Paddle takes batched input only
                x = x[:, None, :] if not cfg.batch_first else x[None]
                hx = _add_batch_axis(hx)
        args: dict[str, Any] = {}
        states = None
        if hx is not None:
            args["initial_states"] = _to_paddle(hx, record)
            states = tuple(args["initial_states"][:2])
        if lengths is not None:
            args["sequence_length"] = paddle.to_tensor(lengths.astype(np.int64))
        x = _to_paddle(np.ascontiguousarray(x), record)
        with contextlib.nullcontext() if record else paddle.no_grad():
            output, (h_n, c_n) = self.module(x, **args)
        return _Run(input, given, training, x, states, output, h_n, c_n, unbatched)

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        self._last = None
        # A training call is recorded: its tape holds the dropout masks this call drew, which backward()
        # differentiates under.
        run = self._run(input, hx, training, record=training)
        self._last = run if training else None
        output, h_n, c_n = run.output.numpy(), run.h_n.numpy(), run.c_n.numpy()

        if isinstance(input, PackedArrays):
            if self.config.batch_first:
                output = output.swapaxes(0, 1)
            return padded_to_packed(output, input), (h_n, c_n)
        if run.unbatched:
            output = output[:, 0] if not self.config.batch_first else output[0]
            return output, (h_n[:, 0], c_n[:, 0])
        return output, (h_n, c_n)

    def backward(self, input: ArrayInput, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        """The vector-Jacobian product by ``paddle.grad`` on the tape of the latest :meth:`forward` (which, in
        training mode, holds the dropout masks Paddle drew in that call); a call with other arguments is run
        again first.  Gradients are taken with respect to the input and states as Paddle received them and
        to each cell's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch's layout) and
        ``weight_ho`` (``weight_hr.T``), then laid out as torch's."""
        cfg = self.config
        run = self._last
        if not training or run is None or not (_same_arrays(run.input, input) and _same_arrays(run.hx, hx)):
            run = self._run(input, hx, training, record=True)
        laid = time_major_cotangents(cotangents, input, run.unbatched, cfg)
        outputs, grads = [], []
        for tensor, cotangent in zip((run.output, run.h_n, run.c_n), laid):
            if cotangent is None:
                continue
            if tensor is run.output and cfg.batch_first:  # Paddle's output is batch-major here
                cotangent = cotangent.swapaxes(0, 1)
            outputs.append(tensor)
            grads.append(paddle.to_tensor(np.ascontiguousarray(cotangent, dtype=cfg.dtype)))
        names = []
        wrt = [run.x, *(run.states or ())]
        for (layer, suffix), cell in self._cells.items():
            kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if cfg.bias else [])
            kinds += ["weight_ho"] if cfg.proj_size > 0 else []
            for kind in kinds:
                names.append((kind, layer, suffix))
                wrt.append(getattr(cell, kind))
        found = (paddle.grad(outputs, wrt, grads, retain_graph=True, allow_unused=True) if outputs
                 else [None] * len(wrt))
        # A tensor the loss does not reach (a layer above the one a loss on its states uses) has zero gradient.
        arrays = [np.zeros(tuple(t.shape), dtype=cfg.dtype) if g is None else g.numpy() for t, g in zip(wrt, found)]
        d_x, arrays = arrays[0], arrays[1:]
        if cfg.batch_first:
            d_x = d_x.swapaxes(0, 1)  # time-major, as torch_layout_gradients takes it
        d_state = None
        if run.states is not None:
            d_state, arrays = (arrays[0], arrays[1]), arrays[2:]
        result = torch_layout_gradients(d_x, d_state, input, run.unbatched, cfg)
        for (kind, layer, suffix), gradient in zip(names, arrays):
            if kind == "weight_ho":
                result[f"weight_hr_l{layer}{suffix}"] = np.ascontiguousarray(gradient.T)
            else:
                result[f"{kind}_l{layer}{suffix}"] = gradient
        return result
