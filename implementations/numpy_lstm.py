"""A NumPy port of ``torch.nn.LSTM``'s forward: the ``_VF.lstm`` a reader can follow.

torch hides the recurrence in C++ (``aten/src/ATen/native/RNN.cpp``).  This file does the same
work in plain NumPy, step by step, and says in comments what torch does without saying: the
``[i | f | g | o]`` row blocks, the two bias vectors, the ``layer * D + direction`` layout of
``h_n``, where each direction of a packed sequence starts and stops, how ``hx`` is permuted for
``enforce_sorted=False``, where the projection and dropout apply, and what unbatched input means.

It is a conformance-suite adapter (:class:`NumpyLSTM`) and doubles as a readable specification.
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
        return np.zeros_like(x)  # everything dropped; avoids dividing by 1 - p = 0
    keep = rng.random(x.shape) >= p  # a fresh Bernoulli per element: not shared over time
    return x * (keep.astype(x.dtype) / x.dtype.type(1.0 - p))


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
        if isinstance(input, PackedArrays):
            return self._forward_packed(input, hx, training)
        return self._forward_dense(input, hx, training)

    def _forward_dense(self, input: np.ndarray, hx: Optional[ArrayState], training: bool) -> ArrayResult:
        x = np.asarray(input, dtype=self._compute)
        if x.ndim not in (2, 3):
            raise ValueError(f"NumpyLSTM: expected 2-D (unbatched) or 3-D input, got {x.ndim}-D")
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
