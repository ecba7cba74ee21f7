"""A NumPy port of ``torch.nn.LSTM``: the ``_VF.lstm`` a reader can follow, forward and backward.

torch hides the recurrence in C++ (``aten/src/ATen/native/RNN.cpp``).  This file does the same
work in plain NumPy, step by step, and says in comments what torch does without saying: the
``[i | f | g | o]`` row blocks, the two bias vectors, the ``layer * D + direction`` layout of
``h_n``, where each direction of a packed sequence starts and stops, how ``hx`` is permuted for
``enforce_sorted=False``, where the projection and dropout apply, and what unbatched input means.

It is a conformance-suite adapter (:class:`NumpyLSTM`) and doubles as a readable specification.
Every call torch rejects is rejected here too, in one place (:meth:`NumpyLSTM._check_call`),
including the packed calls torch itself mishandles (a bad hx there gives torch an incidental C++
error, is silently accepted, or crashes it).
Arithmetic follows ATen's native (non-oneDNN) path: the input projection of all steps is computed
first, ``x @ W_ih.T + b_ih``, then each step adds ``h @ W_hh.T + b_hh``.  Set
:attr:`NumpyLSTM.compute_dtype` in a subclass to compute in higher precision.

The backward pass (:meth:`NumpyLSTM.backward`, the vector-Jacobian product autograd computes for
``nn.LSTM``) is backpropagation through time written out by hand.  It reruns the forward keeping a
tape (:class:`_Step`: each step's gate values and the state it started from), then walks every
(layer, direction) back from its last step to its first with :func:`_cell_step_backward`, the
derivative of :func:`_cell_step`.  Dense and packed input share that walk; they differ only in which
rows of the state a step touched, which the tape records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np

from conformance.adapters import Adapter, ArrayInput, ArrayResult, ArrayState, Capabilities
from conformance.arrays import LSTMConfig, PackedArrays
from conformance.dtypes import HALF, numpy_dtype

__all__ = ["NumpyLSTM"]


@dataclass(frozen=True)
class _DirectionWeights:
    """The parameters of one (layer, direction) pair, in torch's layout."""

    w_ih: np.ndarray  # (4H, features in)
    w_hh: np.ndarray  # (4H, Hout)
    b_ih: Optional[np.ndarray]  # (4H,) or None when bias=False (both biases go together)
    b_hh: Optional[np.ndarray]  # (4H,)
    w_hr: Optional[np.ndarray]  # (P, H) or None when proj_size == 0


@dataclass(frozen=True)
class _Step:
    """One step of one direction as its backward pass needs it: an entry of the forward's tape.

    The gates are kept after their nonlinearity, because each nonlinearity's derivative is a
    function of its output: ``sigmoid'(x) = s (1 - s)`` and ``tanh'(x) = 1 - t**2``.
    """

    at: Union[int, slice]  # the step's rows of the direction's output: time t (dense), a row range (packed)
    h_prev: np.ndarray  # (rows, Hout): the h this step started from; rows = the state rows it updated
    c_prev: np.ndarray  # (rows, H)
    i: np.ndarray  # (rows, H): sigmoid of the input gate
    f: np.ndarray  # sigmoid of the forget gate
    g: np.ndarray  # tanh of the cell candidate
    o: np.ndarray  # sigmoid of the output gate
    tanh_c: np.ndarray  # tanh of the new cell state
    h_cell: np.ndarray  # o * tanh(c_new): the new h before the projection (h itself when proj_size == 0)


#: Runs one direction of one layer: (x_projected, h0, c0, weights, reverse, tape) -> (output, h_n, c_n).
#: With a tape (a list), each step appends its :class:`_Step` in the order the steps ran.
_DirectionRunner = Callable[
    [np.ndarray, np.ndarray, np.ndarray, _DirectionWeights, bool, Optional[list]],
    tuple[np.ndarray, np.ndarray, np.ndarray],
]


@dataclass
class _DirectionGrads:
    """The gradients of one (layer, direction)'s parameters, summed over every step and batch row."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    w_hr: Optional[np.ndarray]

    @classmethod
    def zeros_like(cls, w: _DirectionWeights) -> "_DirectionGrads":
        def zeros(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else np.zeros_like(a)

        return cls(np.zeros_like(w.w_ih), np.zeros_like(w.w_hh), zeros(w.b_ih), zeros(w.b_hh), zeros(w.w_hr))

    def named(self, layer: int, suffix: str) -> dict[str, np.ndarray]:
        """By torch's parameter names (``weight_ih_l0_reverse``, ...); absent parameters left out."""
        kinds = {"weight_ih": self.w_ih, "weight_hh": self.w_hh, "bias_ih": self.b_ih, "bias_hh": self.b_hh,
                 "weight_hr": self.w_hr}
        return {f"{kind}_l{layer}{suffix}": grad for kind, grad in kinds.items() if grad is not None}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-x) overflows to inf for very negative x; 1 / (1 + inf) is the correct limit 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _input_projection(x: np.ndarray, w: _DirectionWeights) -> np.ndarray:
    """``x @ W_ih.T + b_ih`` for every step at once (ATen precomputes this too).

    ``x`` is ``(L, N, F)`` for dense input or ``(rows, F)`` for packed data; the result has
    ``4H`` features in the same layout.
    """
    projected = x @ w.w_ih.T
    if w.b_ih is not None:
        projected += w.b_ih
    return projected


def _cell_step(
    x_projected: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    w: _DirectionWeights,
    tape: Optional[list] = None,
    at: Union[int, slice] = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step for a batch of rows: returns the new ``(h, c)``.

    ``x_projected`` is this step's ``x @ W_ih.T + b_ih``; ``h`` is ``(rows, Hout)``, ``c`` is
    ``(rows, H)``.  With ``tape``, appends the step's :class:`_Step` (placed at ``at`` of the
    output) for the backward pass; the arithmetic is the same either way.
    """
    # Both biases are added: gates = (h W_hh^T + b_hh) + (x W_ih^T + b_ih), in ATen's order.
    gates = h @ w.w_hh.T
    if w.b_hh is not None:
        gates += w.b_hh
    gates += x_projected
    # The 4H rows of every weight and bias are four blocks in the order input, forget,
    # cell candidate ("g"), output.
    i, f, g, o = np.split(gates, 4, axis=-1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    h_cell = o * tanh_c
    # proj_size: h is projected to P features; the cell state c keeps all H.
    h_new = h_cell @ w.w_hr.T if w.w_hr is not None else h_cell
    if tape is not None:
        tape.append(_Step(at, h, c, i, f, g, o, tanh_c, h_cell))
    return h_new, c_new


def _cell_step_backward(
    step: _Step, dh: np.ndarray, dc: np.ndarray, w: _DirectionWeights, grads: _DirectionGrads
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The derivative of :func:`_cell_step`: returns ``(d_gates, dh_prev, dc_prev)``.

    ``dh`` (rows, Hout) and ``dc`` (rows, H) are the gradients of the loss with respect to the
    step's new h and c: everything that used them (this step's output, the next step, h_n/c_n).
    ``d_gates`` (rows, 4H) is the gradient of the pre-activation gates, which is also the gradient
    of this step's ``x_projected`` (it is added to the gates as is).  The gradients of W_hh, b_hh
    and W_hr are added into ``grads``; W_ih's and b_ih's are taken for all steps at once by
    :func:`_input_projection_backward`.
    """
    if w.w_hr is not None:
        # h_new = h_cell @ W_hr^T: W_hr collects dh^T h_cell, and h_cell receives dh @ W_hr.
        grads.w_hr += dh.T @ step.h_cell
        dh = dh @ w.w_hr
    # h_cell = o * tanh(c_new).  c_new is reached two ways: directly (dc, from the next step and
    # c_n) and through h (dh * o * tanh'(c_new)); the two add.
    do = dh * step.tanh_c
    dc = dc + dh * step.o * (1.0 - step.tanh_c * step.tanh_c)
    # c_new = f * c_prev + i * g: each factor's gradient is dc times the other factor.
    di = dc * step.g
    df = dc * step.c_prev
    dg = dc * step.i
    # The previous cell state reaches c_new only through the forget gate, so its gradient is
    # dc * f: no weight matrix and no squashing on this path.  This is what lets the gradient of c
    # travel many steps back (as long as f stays near 1), where h's gradient is multiplied by W_hh
    # and the gates' derivatives at every step.
    dc_prev = dc * step.f
    # Through the nonlinearities, written with their outputs: sigmoid' = s (1 - s), tanh' = 1 - t^2.
    d_gates = np.concatenate(
        [
            di * step.i * (1.0 - step.i),
            df * step.f * (1.0 - step.f),
            dg * (1.0 - step.g * step.g),
            do * step.o * (1.0 - step.o),
        ],
        axis=-1,
    )  # back in the [i | f | g | o] block order of the weights' rows
    # gates = h_prev @ W_hh^T + b_hh + x_projected.
    grads.w_hh += d_gates.T @ step.h_prev
    if grads.b_hh is not None:
        grads.b_hh += d_gates.sum(axis=0)
    dh_prev = d_gates @ w.w_hh
    return d_gates, dh_prev, dc_prev


def _input_projection_backward(
    d_projected: np.ndarray, x: np.ndarray, w: _DirectionWeights, grads: _DirectionGrads
) -> np.ndarray:
    """The derivative of :func:`_input_projection`: adds W_ih's and b_ih's gradients into
    ``grads`` and returns the gradient of ``x`` (same layout as ``x``).

    Every step used the same W_ih, so its gradient is one sum over all steps and rows.
    """
    flat_d = d_projected.reshape(-1, d_projected.shape[-1])
    grads.w_ih += flat_d.T @ x.reshape(-1, x.shape[-1])
    if grads.b_ih is not None:
        grads.b_ih += flat_d.sum(axis=0)
    return d_projected @ w.w_ih


def _run_direction(
    x_projected: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    w: _DirectionWeights,
    reverse: bool,
    tape: Optional[list] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one direction over dense ``(L, N, 4H)`` input; returns ``(output, h_n, c_n)``.

    Every sequence has all L steps (padding, if any, is processed as real input).  The reverse
    direction walks t = L-1 .. 0 and writes each step's output at its own t, so its output comes
    back in time order and its final state is the one after t = 0.
    """
    steps = x_projected.shape[0]
    output = np.empty((steps,) + h0.shape, dtype=h0.dtype)
    h, c = h0, c0
    for t in (reversed(range(steps)) if reverse else range(steps)):
        h, c = _cell_step(x_projected[t], h, c, w, tape, at=t)
        output[t] = h
    return output, h, c


def _run_packed_direction(
    x_projected: np.ndarray,
    batch_sizes: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    w: _DirectionWeights,
    reverse: bool,
    tape: Optional[list] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one direction over packed ``(rows, 4H)`` data; returns ``(output, h_n, c_n)``.

    The batch is sorted by decreasing length, so at step t the active sequences are rows
    ``[0, batch_sizes[t])`` of the state.  ``h0``/``c0`` are in that sorted order.

    - Forward: rows drop out as their sequences end and are not touched again, so each row of
      the final state is the state after that sequence's own last step.
    - Reverse: t runs from last to first and the active set only grows.  A row that becomes
      active at step t has not been touched yet, so it still holds its h0/c0: each sequence's
      reverse pass starts at its own last valid step from h0, and ends after t = 0.
    """
    offsets = np.concatenate(([0], np.cumsum(batch_sizes)))
    output = np.empty((x_projected.shape[0], h0.shape[-1]), dtype=h0.dtype)
    h, c = h0.copy(), c0.copy()  # updated row-wise below; the caller's h0/c0 stay as they are
    steps = len(batch_sizes)
    for t in (reversed(range(steps)) if reverse else range(steps)):
        rows = slice(offsets[t], offsets[t + 1])
        active = int(batch_sizes[t])
        h_active, c_active = h[:active], c[:active]
        if tape is not None:
            # The tape keeps the state this step starts from, and the next line overwrites h and c.
            h_active, c_active = h_active.copy(), c_active.copy()
        h[:active], c[:active] = _cell_step(x_projected[rows], h_active, c_active, w, tape, at=rows)
        output[rows] = h[:active]
    return output, h, c


def _backprop_direction(
    tape: Sequence[_Step],
    d_output: np.ndarray,
    dh_n: np.ndarray,
    dc_n: np.ndarray,
    w: _DirectionWeights,
    grads: _DirectionGrads,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through time over one direction's tape: returns ``(d_x_projected, dh0, dc0)``.

    ``d_output`` is the gradient of this direction's output (``(L, N, Hout)`` dense, ``(rows, Hout)``
    packed); ``dh_n``/``dc_n`` those of its final state.  The steps are undone in the reverse of the
    order they ran (t = L-1 .. 0 for the forward direction, t = 0 .. L-1 for the reverse one), so
    ``dh``/``dc`` always hold the gradient of the state the next step to undo produced: they start
    as the final state's, and each step adds its own output's gradient to ``dh`` (h_new is both
    that output and the next step's input).

    Packed input: a step updated only the first ``rows`` rows of the state (the sequences still
    running at that time), so it reads and replaces only those rows of ``dh``/``dc``; the other rows
    pass through untouched, as their states did.  A sequence's row enters the walk, holding its
    h_n/c_n gradient, at the last step its direction ran for it: for the forward direction the step
    at the sequence's own last position (its h_n is the state after that step, however much longer
    other sequences run); for the reverse direction t = 0.  The row leaves the walk after the first
    step that ran for it, and what is left in it then is h0's (and c0's) gradient: from t = 0 for the
    forward direction, and for the reverse direction from the sequence's own last position, where its
    reverse pass started from h0, not from the longest sequence's last step.
    Dense input is the case where every step updates all rows.
    """
    dh, dc = dh_n.copy(), dc_n.copy()
    d_projected = np.zeros(d_output.shape[:-1] + (4 * dc.shape[-1],), dtype=dc.dtype)
    for step in reversed(tape):
        rows = step.h_prev.shape[0]
        d_projected[step.at], dh[:rows], dc[:rows] = _cell_step_backward(
            step, dh[:rows] + d_output[step.at], dc[:rows], w, grads
        )
    return d_projected, dh, dc


def _dropout_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """Inverted dropout's multiplier: 0 with probability p, else 1/(1-p), drawn per element.

    The layer output is multiplied by it, so the same multiplier is its derivative: the backward pass
    multiplies the gradient by the mask the forward drew (a dropped element passes no gradient).
    """
    if p >= 1.0:
        # everything dropped (no dividing by 1 - p = 0); multiplied by the zero mask as torch does, so a NaN stays NaN
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape) >= p  # a fresh Bernoulli per element: not shared over time
    return keep.astype(dtype) / dtype.type(1.0 - p)


def _describe(value: object) -> str:
    shape = getattr(value, "shape", None)
    return f"a single {type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__


def _as_array(value: object, what: str) -> np.ndarray:
    """``value`` as an ndarray; anything that is not array-like (None, a list of floats) is an error."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"{what} must be an array, got {type(value).__name__}")


def _check_batch_sizes(batch_sizes: np.ndarray, rows: int) -> None:
    """A PackedSequence's batch_sizes: 1-D int64, positive, non-increasing, summing to the data rows."""
    if batch_sizes.ndim != 1 or batch_sizes.size == 0 or batch_sizes.dtype != np.int64:
        raise ValueError(
            f"batch_sizes must be a non-empty 1-D int64 array, got shape {batch_sizes.shape} {batch_sizes.dtype}"
        )
    if batch_sizes[-1] <= 0 or np.any(np.diff(batch_sizes) > 0):
        raise ValueError(f"batch_sizes must be positive and non-increasing, got {batch_sizes.tolist()}")
    if int(batch_sizes.sum()) != rows:
        raise ValueError(f"batch_sizes sum to {int(batch_sizes.sum())}, but the packed data has {rows} rows")


class NumpyLSTM(Adapter):
    """``torch.nn.LSTM``'s forward and backward in NumPy: all features and dtypes.

    A float16 or bfloat16 model is computed in float32 and its results rounded once to the model's
    dtype: more accurate than torch, which rounds to half precision between its operations."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(errors="raises", gradients=True)

    #: The dtype arithmetic is done in.  ``None`` computes in the config's dtype (float32 for a half-precision
    #: one); a subclass may set ``np.float64`` or ``np.longdouble`` to compute in higher precision.  Inputs and
    #: weights are cast to it, and results are cast back to the config's dtype.
    compute_dtype: ClassVar[Optional[type]] = None

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self.dtype = numpy_dtype(config.dtype)
        self.weights = {name: np.asarray(value, dtype=self.dtype) for name, value in self.weights.items()}
        default = np.dtype(np.float32) if config.dtype in HALF else self.dtype
        self._compute = np.dtype(self.compute_dtype) if self.compute_dtype is not None else default
        # self._layers[k][d] holds layer k, direction d (0 forward, 1 reverse).
        self._layers = [
            [self._direction_weights(layer, suffix) for suffix in ("", "_reverse")[: config.num_directions]]
            for layer in range(config.num_layers)
        ]
        #: The dropout multipliers the most recent training forward applied, one per layer output
        #: but the last (empty when no dropout applies); None until a training forward has run.
        #: backward(training=True) differentiates under these.
        self._dropout_masks: Optional[tuple[np.ndarray, ...]] = None

    def _direction_weights(self, layer: int, suffix: str) -> _DirectionWeights:
        def get(kind: str) -> np.ndarray:
            return np.asarray(self.weights[f"{kind}_l{layer}{suffix}"], dtype=self._compute)

        cfg = self.config
        return _DirectionWeights(
            w_ih=get("weight_ih"),
            w_hh=get("weight_hh"),
            b_ih=get("bias_ih") if cfg.bias else None,
            b_hh=get("bias_hh") if cfg.bias else None,
            w_hr=get("weight_hr") if cfg.proj_size > 0 else None,
        )

    # ------------------------------------------------------------------ forward

    def forward(self, input: ArrayInput, hx: Optional[ArrayState], *, training: bool) -> ArrayResult:
        input, hx = self._check_call(input, hx)
        if isinstance(input, PackedArrays):
            return self._forward_packed(input, hx, training)
        return self._forward_dense(input, hx, training)

    # ------------------------------------------------------------------ backward

    def backward(
        self, input: ArrayInput, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], *, training: bool
    ) -> dict[str, np.ndarray]:
        """The vector-Jacobian product of :meth:`forward` at ``(input, hx)``: what autograd computes.

        ``cotangents`` holds the gradients of a loss with respect to ``"output"`` (the packed data,
        for packed input), ``"h_n"`` and ``"c_n"``, shaped as :meth:`forward` returns them; one left
        out is zero.  Returns the loss's gradients with respect to ``"input"`` (the packed data, for
        packed input), ``"h0"`` and ``"c0"`` when ``hx`` is given (in the caller's layout and batch
        order), and every parameter by torch's name, all in the config's dtype.

        With ``training=True`` this is the derivative of the most recent ``forward(...,
        training=True)`` on the same arguments, under the dropout masks that call drew (a fresh draw
        would differentiate a different function).
        """
        input, hx = self._check_call(input, hx)
        masks = self._masks_for_backward(training)
        unknown = set(cotangents) - {"output", "h_n", "c_n"}
        if unknown:
            raise ValueError(f"cotangents are for 'output', 'h_n' and 'c_n'; got {sorted(unknown)}")
        if isinstance(input, PackedArrays):
            return self._backward_packed(input, hx, cotangents, masks)
        return self._backward_dense(input, hx, cotangents, masks)

    # ------------------------------------------------------------------ validation

    def _check_call(self, input: ArrayInput, hx: object) -> tuple[ArrayInput, Optional[ArrayState]]:
        """Reject every call torch rejects; return ``(input, hx)`` as arrays.

        torch validates dense calls in Python (``LSTM.forward`` / ``check_forward_args``) and
        leaves packed calls to C++, where a bad hx gives an incidental error, is silently
        accepted, or crashes (``torch-lstm-2.13.md`` 1b, 1c).  This port checks both kinds the
        same way: rank, dtype and features of the input, then hx as a pair of arrays of exactly
        ``(L*D, N, Hout)`` and ``(L*D, N, H)`` in the weights' dtype, then a non-empty sequence.
        """
        cfg = self.config
        batch: Optional[int]  # None: unbatched
        if isinstance(input, PackedArrays):
            data = _as_array(input.data, "packed data")
            batch_sizes = _as_array(input.batch_sizes, "batch_sizes")
            if data.ndim != 2:
                raise ValueError(f"packed data must be 2-D (rows, input_size), got shape {data.shape}")
            _check_batch_sizes(batch_sizes, rows=data.shape[0])
            input = input._replace(data=data, batch_sizes=batch_sizes)
            batch, steps, kind = int(batch_sizes[0]), len(batch_sizes), "packed"
        else:
            data = _as_array(input, "input")
            if data.ndim not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {data.ndim}D instead")
            input, unbatched = data, data.ndim == 2
            time_axis = 1 if cfg.batch_first and not unbatched else 0
            batch = None if unbatched else data.shape[1 - time_axis]
            steps, kind = data.shape[time_axis], "unbatched 2-D" if unbatched else "batched 3-D"
        if data.dtype != self.dtype:
            raise ValueError(
                f"RNN input dtype ({data.dtype}) does not match weight dtype ({self.dtype}). "
                f"Convert input: input.astype({self.dtype}), or use a {data.dtype} model"
            )
        if data.shape[-1] != cfg.input_size:
            raise RuntimeError(
                f"input.shape[-1] must be equal to input_size. Expected {cfg.input_size}, got {data.shape[-1]}"
            )
        if hx is not None:
            hx = self._check_hx(hx, batch, kind)
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        return input, hx

    def _check_hx(self, hx: object, batch: Optional[int], kind: str) -> ArrayState:
        """``hx`` must be ``(h0, c0)``: two arrays of the expected shape and the weights' dtype.

        ``batch`` is None for unbatched input, whose states have no batch dimension; ``kind``
        names the input form in messages.  Shapes are checked in the caller's batch order, before
        any permutation, so a packed hx with extra batch rows or mismatched layer counts is
        rejected rather than sliced or crashed on.
        """
        cfg = self.config
        if not isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be a tuple (h0, c0) of two arrays, got {_describe(hx)}")
        if len(hx) != 2:
            raise ValueError(f"hx must be a tuple (h0, c0) of exactly two arrays, got {len(hx)} items")
        h0, c0 = _as_array(hx[0], "hx[0] (h0)"), _as_array(hx[1], "hx[1] (c0)")
        rank = 2 if batch is None else 3
        if h0.ndim != rank or c0.ndim != rank:
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {rank}-D but got ({h0.ndim}-D, {c0.ndim}-D) arrays"
            )
        states = cfg.num_layers * cfg.num_directions
        lead = (states,) if batch is None else (states, batch)
        for index, (state, features) in enumerate(((h0, cfg.output_size), (c0, cfg.hidden_size))):
            expected = lead + (features,)
            if state.shape != expected:
                raise RuntimeError(f"Expected hidden[{index}] size {expected}, got {list(state.shape)}")
            if state.dtype != self.dtype:
                raise RuntimeError(
                    f"hidden[{index}] dtype ({state.dtype}) does not match weight dtype ({self.dtype})"
                )
        return h0, c0

    # ------------------------------------------------------------------ layouts

    def _dense_working(self, input: np.ndarray, hx: Optional[ArrayState]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense input and hx in the layout the recurrence runs in: ``x`` time-major ``(L, N, F)``,
        ``h0``/``c0`` ``(L*D, N, .)``.

        Unbatched ``(L, H_in)`` is a batch of one, squeezed afterwards (:meth:`_dense_result`);
        batch_first is ignored for it.  hx is never batch_first.
        """
        x = self._time_major(np.asarray(input, dtype=self._compute), unbatched=input.ndim == 2)
        if input.ndim == 2 and hx is not None:
            hx = (np.asarray(hx[0])[:, None, :], np.asarray(hx[1])[:, None, :])
        h0, c0 = self._initial_state(hx, batch=x.shape[1])
        return x, h0, c0

    def _time_major(self, sequence: np.ndarray, unbatched: bool) -> np.ndarray:
        """A dense sequence (input, output or their gradients) from the caller's layout to ``(L, N, .)``."""
        if unbatched:
            return sequence[:, None, :]
        return sequence.swapaxes(0, 1) if self.config.batch_first else sequence

    def _dense_result(self, sequence: np.ndarray, states: tuple[np.ndarray, ...], unbatched: bool) -> tuple:
        """The inverse of :meth:`_time_major` for a sequence and of the unsqueeze for states, cast to the
        config's dtype: ``(sequence, states)`` in the caller's layout."""
        if unbatched:
            sequence, states = sequence[:, 0], tuple(s[:, 0] for s in states)
        elif self.config.batch_first:
            sequence = sequence.swapaxes(0, 1)
        return self._cast(sequence), tuple(self._cast(s) for s in states)

    def _packed_working(
        self, packed: PackedArrays, hx: Optional[ArrayState]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _DirectionRunner]:
        """Packed data and hx in the layout the recurrence runs in: ``(data, h0, c0, run)``, the
        batch in sorted order.  Packed data is always time-major over the sorted batch; batch_first
        does not apply."""
        data = np.asarray(packed.data, dtype=self._compute)
        batch_sizes = np.asarray(packed.batch_sizes, dtype=np.int64)
        if hx is not None and packed.sorted_indices is not None:
            # The caller's hx is in original batch order; the recurrence runs in sorted order.
            order = np.asarray(packed.sorted_indices)
            hx = (np.asarray(hx[0])[:, order], np.asarray(hx[1])[:, order])
        h0, c0 = self._initial_state(hx, batch=int(batch_sizes[0]))

        def run(projected: np.ndarray, h: np.ndarray, c: np.ndarray, w: _DirectionWeights, reverse: bool,
                tape: Optional[list] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return _run_packed_direction(projected, batch_sizes, h, c, w, reverse, tape)

        return data, h0, c0, run

    # ------------------------------------------------------------------ forward and backward, per input kind

    def _forward_dense(self, input: np.ndarray, hx: Optional[ArrayState], training: bool) -> ArrayResult:
        x, h0, c0 = self._dense_working(input, hx)
        output, h_n, c_n = self._run_layers(x, h0, c0, _run_direction, self._masks_for_forward(x, training))
        return self._dense_result(output, (h_n, c_n), unbatched=input.ndim == 2)

    def _forward_packed(self, packed: PackedArrays, hx: Optional[ArrayState], training: bool) -> ArrayResult:
        data, h0, c0, run = self._packed_working(packed, hx)
        output, h_n, c_n = self._run_layers(data, h0, c0, run, self._masks_for_forward(data, training))

        if packed.unsorted_indices is not None:
            # Final states go back to the caller's order; the output data stays sorted.
            order = np.asarray(packed.unsorted_indices)
            h_n, c_n = h_n[:, order], c_n[:, order]
        result = PackedArrays(self._cast(output), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return result, (self._cast(h_n), self._cast(c_n))

    def _backward_dense(
        self, input: np.ndarray, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], masks: tuple
    ) -> dict[str, np.ndarray]:
        # The cotangents arrive in the layout forward returns and go through the same reshaping
        # as its inputs; the gradients go back through the inverse, like forward's results.
        unbatched = input.ndim == 2
        x, h0, c0 = self._dense_working(input, hx)
        cfg = self.config
        states = cfg.num_layers * cfg.num_directions
        lead = (states,) if unbatched else (states, x.shape[1])
        d_output = self._cotangent(cotangents, "output", input.shape[:-1] + (cfg.num_directions * cfg.output_size,))
        dh_n = self._cotangent(cotangents, "h_n", lead + (cfg.output_size,))
        dc_n = self._cotangent(cotangents, "c_n", lead + (cfg.hidden_size,))
        if unbatched:
            dh_n, dc_n = dh_n[:, None], dc_n[:, None]
        grads, d_x, dh0, dc0 = self._backprop_layers(
            x, h0, c0, _run_direction, masks, self._time_major(d_output, unbatched), dh_n, dc_n
        )
        d_input, d_hx = self._dense_result(d_x, (dh0, dc0), unbatched)
        return self._gradients(grads, d_input, d_hx if hx is not None else None)

    def _backward_packed(
        self, packed: PackedArrays, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], masks: tuple
    ) -> dict[str, np.ndarray]:
        data, h0, c0, run = self._packed_working(packed, hx)
        cfg = self.config
        lead = (cfg.num_layers * cfg.num_directions, h0.shape[1])
        # The output's gradient is in the packed (sorted) row order the output data has.
        d_output = self._cotangent(cotangents, "output", (data.shape[0], cfg.num_directions * cfg.output_size))
        dh_n = self._cotangent(cotangents, "h_n", lead + (cfg.output_size,))
        dc_n = self._cotangent(cotangents, "c_n", lead + (cfg.hidden_size,))
        if packed.unsorted_indices is not None:
            # forward took the columns unsorted_indices of the sorted h_n/c_n; their gradients go back
            # to the columns they were taken from.
            order = np.asarray(packed.unsorted_indices)
            dh_n, dc_n = _put_back(dh_n, order), _put_back(dc_n, order)
        grads, d_data, dh0, dc0 = self._backprop_layers(data, h0, c0, run, masks, d_output, dh_n, dc_n)
        if hx is not None and packed.sorted_indices is not None:
            # forward took hx's columns sorted_indices; the gradients return to the caller's order.
            order = np.asarray(packed.sorted_indices)
            dh0, dc0 = _put_back(dh0, order), _put_back(dc0, order)
        d_hx = (self._cast(dh0), self._cast(dc0)) if hx is not None else None
        return self._gradients(grads, self._cast(d_data), d_hx)

    # ------------------------------------------------------------------ shared machinery

    def _initial_state(self, hx: Optional[ArrayState], batch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(h0, c0)`` of shape ``(num_layers * D, batch, Hout / H)``: zeros when hx is None."""
        cfg = self.config
        if hx is None:
            states = cfg.num_layers * cfg.num_directions
            return (
                np.zeros((states, batch, cfg.output_size), dtype=self._compute),
                np.zeros((states, batch, cfg.hidden_size), dtype=self._compute),
            )
        # Read-only use from here on: nothing writes into these, so the caller's hx is safe.
        return np.asarray(hx[0], dtype=self._compute), np.asarray(hx[1], dtype=self._compute)

    def _masks_for_forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, ...]:
        """The dropout masks of this forward: fresh ones in training mode (remembered for
        :meth:`backward`), none in eval mode.  ``x`` is the working-layout input."""
        if not training:
            return ()
        masks = self._draw_dropout_masks(x.shape[:-1])
        self._dropout_masks = masks
        return masks

    def _draw_dropout_masks(self, positions: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """One multiplier per layer output but the last, shaped like that output (``positions`` are
        its leading dimensions: ``(L, N)`` dense, ``(rows,)`` packed); empty when no dropout applies.

        Dropout sits between layers only: never on the last layer's output, and h_n/c_n are the
        pre-dropout states.
        """
        cfg = self.config
        p = cfg.dropout if cfg.num_layers > 1 else 0.0
        if p <= 0.0:
            return ()
        rng = np.random.default_rng()
        shape = positions + (cfg.num_directions * cfg.output_size,)
        return tuple(_dropout_mask(shape, p, rng, self._compute) for _ in range(cfg.num_layers - 1))

    def _masks_for_backward(self, training: bool) -> tuple[np.ndarray, ...]:
        """The masks :meth:`backward` differentiates under: those of the latest training forward."""
        cfg = self.config
        if not training or cfg.num_layers == 1 or cfg.dropout <= 0.0:
            return ()  # without dropout between layers, training mode computes what eval mode does
        if self._dropout_masks is None:
            raise ValueError(
                "backward(training=True) is the derivative of the most recent forward(training=True) on the "
                "same arguments, under the dropout masks it drew, and no training forward has run on this "
                "instance: call forward(input, hx, training=True) first"
            )
        return self._dropout_masks

    def _cotangent(self, cotangents: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
        """``cotangents[name]`` in the compute dtype, checked against ``shape`` (the result's); zeros if absent."""
        value = cotangents.get(name)
        if value is None:
            return np.zeros(shape, dtype=self._compute)
        if isinstance(value, PackedArrays):
            value = value.data
        value = np.asarray(_as_array(value, f"the cotangent of {name}"), dtype=self._compute)
        if value.shape != shape:
            raise ValueError(f"the cotangent of {name} must be shaped as forward returns {name}, "
                             f"{shape}, got {value.shape}")
        return value

    def _run_layers(
        self,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        run: _DirectionRunner,
        masks: Sequence[np.ndarray] = (),
        tapes: Optional[list] = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack the layers; ``run`` runs one direction (dense or packed) of one layer.

        ``x`` is ``(L, N, F)`` or packed ``(rows, F)``; the layer output keeps that layout with
        ``D * Hout`` features, forward direction first.  ``masks`` are the dropout multipliers of
        the layer outputs but the last (empty: no dropout).  Returns ``(output, h_n, c_n)``.  With
        ``tapes`` (a list), appends per layer ``(layer_input, [tape of each direction])`` for the
        backward pass.
        """
        cfg = self.config
        directions = cfg.num_directions
        h_n, c_n = np.empty_like(h0), np.empty_like(c0)
        layer_input = x
        for layer, layer_weights in enumerate(self._layers):
            outputs, layer_tapes = [], []
            for direction, w in enumerate(layer_weights):
                # h0/c0/h_n/c_n index = layer * D + direction (view(num_layers, D, N, .)).
                index = layer * directions + direction
                tape: Optional[list] = None if tapes is None else []
                out, h_n[index], c_n[index] = run(
                    _input_projection(layer_input, w), h0[index], c0[index], w, direction == 1, tape
                )
                outputs.append(out)
                layer_tapes.append(tape)
            if tapes is not None:
                tapes.append((layer_input, layer_tapes))
            layer_input = np.concatenate(outputs, axis=-1) if directions == 2 else outputs[0]
            # Dropout sits between layers only: never on the last layer's output, and h_n/c_n
            # (saved above) are the pre-dropout states.
            if masks and layer < cfg.num_layers - 1:
                layer_input = layer_input * masks[layer]
        return layer_input, h_n, c_n

    def _backprop_layers(
        self,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        run: _DirectionRunner,
        masks: Sequence[np.ndarray],
        d_output: np.ndarray,
        dh_n: np.ndarray,
        dc_n: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Backpropagation through the stacked layers, in the working layout and compute dtype:
        returns ``(parameter gradients by name, d_x, dh0, dc0)``.

        Reruns the forward with a tape, then takes the layers last to first.  The last layer's output
        gradient is ``d_output``; every other layer's is the next layer's input gradient times the
        dropout mask forward applied there (the mask is the derivative of the multiplication).  Each
        direction takes its own ``Hout`` features of that gradient, and the input gradients of the
        two directions add, since both read the same layer input.  h_n/c_n's gradient enters each
        (layer, direction) at its own final state, as forward saved it before dropout.
        """
        cfg = self.config
        positions = x.shape[:-1] + (cfg.num_directions * cfg.output_size,)
        for mask in masks:
            if mask.shape != positions:
                raise ValueError(
                    "backward(training=True) must get the arguments of the most recent forward(training=True): "
                    f"its dropout masks are for layer outputs of shape {mask.shape}, these arguments give {positions}"
                )
        tapes: list = []
        self._run_layers(x, h0, c0, run, masks, tapes)
        grads: dict[str, np.ndarray] = {}
        dh0, dc0 = np.empty_like(h0), np.empty_like(c0)
        hout = cfg.output_size
        d_layer_output = d_output
        for layer in reversed(range(cfg.num_layers)):
            layer_input, layer_tapes = tapes[layer]
            d_layer_input = np.zeros_like(layer_input)
            for direction, w in enumerate(self._layers[layer]):
                index = layer * cfg.num_directions + direction
                direction_grads = _DirectionGrads.zeros_like(w)
                d_projected, dh0[index], dc0[index] = _backprop_direction(
                    layer_tapes[direction],
                    d_layer_output[..., direction * hout : (direction + 1) * hout],
                    dh_n[index],
                    dc_n[index],
                    w,
                    direction_grads,
                )
                d_layer_input += _input_projection_backward(d_projected, layer_input, w, direction_grads)
                grads.update(direction_grads.named(layer, ("", "_reverse")[direction]))
            if masks and layer > 0:
                d_layer_input = d_layer_input * masks[layer - 1]
            d_layer_output = d_layer_input
        return grads, d_layer_output, dh0, dc0

    def _gradients(
        self, grads: Mapping[str, np.ndarray], d_input: np.ndarray, d_hx: Optional[tuple[np.ndarray, ...]]
    ) -> dict[str, np.ndarray]:
        """The result of :meth:`backward`: input, then h0/c0 when hx was given, then the parameters in
        torch's order, all in the config's dtype (``d_input`` and ``d_hx`` are cast already)."""
        result = {"input": d_input}
        if d_hx is not None:
            result["h0"], result["c0"] = d_hx
        result.update({name: self._cast(grads[name]) for name in self.config.weight_names()})
        return result

    def _cast(self, array: np.ndarray) -> np.ndarray:
        """Results go back to the config's dtype (a no-op unless compute_dtype differs)."""
        return array.astype(self.dtype, copy=False)


def _put_back(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The derivative of taking the batch columns ``order`` (a permutation), ``taken = a[:, order]``:
    ``taken``'s gradient goes back to the columns it came from."""
    result = np.empty_like(values)
    result[:, order] = values
    return result
