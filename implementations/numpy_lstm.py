"""A NumPy port of ``torch.nn.LSTM``'s forward: the ``_VF.lstm`` a reader can follow.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Optional

import numpy as np

from conformance.adapters import Adapter, ArrayInput, ArrayResult, ArrayState, Capabilities
from conformance.arrays import LSTMConfig, PackedArrays

__all__ = ["NumpyLSTM"]


@dataclass(frozen=True)
class _DirectionWeights:
    """The parameters of one (layer, direction) pair, in torch's layout."""

    w_ih: np.ndarray  # (4H, features in)
    w_hh: np.ndarray  # (4H, Hout)
    b_ih: Optional[np.ndarray]  # (4H,) or None when bias=False (both biases go together)
    b_hh: Optional[np.ndarray]  # (4H,)
    w_hr: Optional[np.ndarray]  # (P, H) or None when proj_size == 0


#: Runs one direction of one layer: (x_projected, h0, c0, weights, reverse) -> (output, h_n, c_n).
_DirectionRunner = Callable[
    [np.ndarray, np.ndarray, np.ndarray, _DirectionWeights, bool], tuple[np.ndarray, np.ndarray, np.ndarray]
]


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
    x_projected: np.ndarray, h: np.ndarray, c: np.ndarray, w: _DirectionWeights
) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step for a batch of rows: returns the new ``(h, c)``.

    ``x_projected`` is this step's ``x @ W_ih.T + b_ih``; ``h`` is ``(rows, Hout)``, ``c`` is
    ``(rows, H)``.
    """
    # Both biases are added: gates = (h W_hh^T + b_hh) + (x W_ih^T + b_ih), in ATen's order.
    gates = h @ w.w_hh.T
    if w.b_hh is not None:
        gates += w.b_hh
    gates += x_projected
    # The 4H rows of every weight and bias are four blocks in the order input, forget,
    # cell candidate ("g"), output.
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h_new = _sigmoid(o) * np.tanh(c_new)
    if w.w_hr is not None:
        # proj_size: h is projected to P features; the cell state c keeps all H.
        h_new = h_new @ w.w_hr.T
    return h_new, c_new


def _run_direction(
    x_projected: np.ndarray, h0: np.ndarray, c0: np.ndarray, w: _DirectionWeights, reverse: bool
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
        h, c = _cell_step(x_projected[t], h, c, w)
        output[t] = h
    return output, h, c


def _run_packed_direction(
    x_projected: np.ndarray,
    batch_sizes: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    w: _DirectionWeights,
    reverse: bool,
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
        h[:active], c[:active] = _cell_step(x_projected[rows], h[:active], c[:active], w)
        output[rows] = h[:active]
    return output, h, c


def _dropout(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        # everything dropped (no dividing by 1 - p = 0); multiplied by the zero mask as torch does, so a NaN stays NaN
        return x * x.dtype.type(0.0)
    keep = rng.random(x.shape) >= p  # a fresh Bernoulli per element: not shared over time
    return x * (keep.astype(x.dtype) / x.dtype.type(1.0 - p))


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
    """``torch.nn.LSTM``'s forward in NumPy: all features, float32 and float64."""

    capabilities: ClassVar[Capabilities] = Capabilities(errors="raises")

    #: The dtype arithmetic is done in.  ``None`` computes in the config's dtype; a subclass may
    #: set ``np.float64`` or ``np.longdouble`` to compute in higher precision.  Inputs and weights
    #: are cast to it, and results are cast back to the config's dtype.
    compute_dtype: ClassVar[Optional[type]] = None

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self.dtype = np.dtype(config.dtype)
        self.weights = {name: np.asarray(value, dtype=self.dtype) for name, value in self.weights.items()}
        self._compute = np.dtype(self.compute_dtype) if self.compute_dtype is not None else self.dtype
        # self._layers[k][d] holds layer k, direction d (0 forward, 1 reverse).
        self._layers = [
            [self._direction_weights(layer, suffix) for suffix in ("", "_reverse")[: config.num_directions]]
            for layer in range(config.num_layers)
        ]

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

    def _forward_dense(self, input: np.ndarray, hx: Optional[ArrayState], training: bool) -> ArrayResult:
        x = np.asarray(input, dtype=self._compute)
        unbatched = x.ndim == 2
        if unbatched:
            # Unbatched (L, H_in) is a batch of one, squeezed afterwards; batch_first is ignored.
            x = x[:, None, :]
            hx = None if hx is None else (np.asarray(hx[0])[:, None, :], np.asarray(hx[1])[:, None, :])
        elif self.config.batch_first:
            x = x.swapaxes(0, 1)  # work time-major; hx is never batch_first
        h0, c0 = self._initial_state(hx, batch=x.shape[1])
        output, h_n, c_n = self._run_layers(x, h0, c0, _run_direction, training)

        if unbatched:
            output, h_n, c_n = output[:, 0], h_n[:, 0], c_n[:, 0]
        elif self.config.batch_first:
            output = output.swapaxes(0, 1)
        return self._cast(output), (self._cast(h_n), self._cast(c_n))

    def _forward_packed(self, packed: PackedArrays, hx: Optional[ArrayState], training: bool) -> ArrayResult:
        # Packed data is always time-major over the sorted batch; batch_first does not apply.
        data = np.asarray(packed.data, dtype=self._compute)
        batch_sizes = np.asarray(packed.batch_sizes, dtype=np.int64)
        if hx is not None and packed.sorted_indices is not None:
            # The caller's hx is in original batch order; the recurrence runs in sorted order.
            order = np.asarray(packed.sorted_indices)
            hx = (np.asarray(hx[0])[:, order], np.asarray(hx[1])[:, order])
        h0, c0 = self._initial_state(hx, batch=int(batch_sizes[0]))

        def run(projected: np.ndarray, h: np.ndarray, c: np.ndarray, w: _DirectionWeights, reverse: bool):
            return _run_packed_direction(projected, batch_sizes, h, c, w, reverse)

        output, h_n, c_n = self._run_layers(data, h0, c0, run, training)

        if packed.unsorted_indices is not None:
            # Final states go back to the caller's order; the output data stays sorted.
            order = np.asarray(packed.unsorted_indices)
            h_n, c_n = h_n[:, order], c_n[:, order]
        result = PackedArrays(self._cast(output), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return result, (self._cast(h_n), self._cast(c_n))

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

    def _run_layers(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, run: _DirectionRunner, training: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack the layers; ``run`` runs one direction (dense or packed) of one layer.

        ``x`` is ``(L, N, F)`` or packed ``(rows, F)``; the layer output keeps that layout with
        ``D * Hout`` features, forward direction first.  Returns ``(output, h_n, c_n)``.
        """
        cfg = self.config
        directions = cfg.num_directions
        p = cfg.dropout if training and cfg.num_layers > 1 else 0.0
        rng = np.random.default_rng() if p > 0.0 else None
        h_n, c_n = np.empty_like(h0), np.empty_like(c0)
        layer_input = x
        for layer, layer_weights in enumerate(self._layers):
            outputs = []
            for direction, w in enumerate(layer_weights):
                # h0/c0/h_n/c_n index = layer * D + direction (view(num_layers, D, N, .)).
                index = layer * directions + direction
                out, h_n[index], c_n[index] = run(
                    _input_projection(layer_input, w), h0[index], c0[index], w, direction == 1
                )
                outputs.append(out)
            layer_input = np.concatenate(outputs, axis=-1) if directions == 2 else outputs[0]
            # Dropout sits between layers only: never on the last layer's output, and h_n/c_n
            # (saved above) are the pre-dropout states.
            if rng is not None and layer < cfg.num_layers - 1:
                layer_input = _dropout(layer_input, p, rng)
        return layer_input, h_n, c_n

    def _cast(self, array: np.ndarray) -> np.ndarray:
        """Results go back to the config's dtype (a no-op unless compute_dtype differs)."""
        return array.astype(self.dtype, copy=False)
