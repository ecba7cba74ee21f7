"""Layout translation shared by the adapters that run layer by layer (ONNX Runtime, Keras, Flax), and
its adjoint for their backward passes (cotangents in, gradients out).

These ports take a padded time-major (or batch-major) array plus lengths, and per-layer states,
so each adapter turns torch's input and stacked ``(num_layers * D, ...)`` states into that form.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from conformance.adapters import ArrayInput
from conformance.arrays import LSTMConfig, PackedArrays, packed_to_padded, padded_to_packed

State = tuple[np.ndarray, np.ndarray]


def split_hx(hx: object, rank: int, states: int) -> Optional[State]:
    """torch's ``(h0, c0)`` as two arrays; only what the layer-by-layer split needs is checked here.

    The adapter cuts the stacked ``(num_layers * D, ...)`` states into per-layer inputs, so it has
    to know they are a pair of arrays of the right rank with ``num_layers * D`` rows; batch,
    feature and dtype mismatches are left to the port.
    """
    if hx is None:
        return None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h0, c0) of two arrays, got {type(hx).__name__}"
                        + (f" of {len(hx)} items" if isinstance(hx, (tuple, list)) else ""))
    h0, c0 = (np.asarray(s) for s in hx)
    for name, state in (("h0", h0), ("c0", c0)):
        if state.ndim != rank:
            raise RuntimeError(f"{name} must be {rank}-D, got {state.ndim}-D")
        if state.shape[0] != states:
            raise RuntimeError(f"{name} must have num_layers * num_directions = {states} rows, got {state.shape[0]}")
    return h0, c0


def time_major(input: ArrayInput, hx: object,
               config: LSTMConfig) -> tuple[np.ndarray, Optional[np.ndarray], bool, Optional[State]]:
    """``(x, lengths, unbatched, state)``: x as ``(T, N, F)``; lengths only for packed input;
    state as ``(num_layers * D, N, H)`` arrays (unbatched states get their batch axis back)."""
    lengths = None
    if isinstance(input, PackedArrays):
        x, lengths = packed_to_padded(input)  # time-major, caller's batch order
        unbatched = False
    else:
        x = np.asarray(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"LSTM: expected 2-D (unbatched) or 3-D input, got {x.ndim}-D")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :]
        elif config.batch_first:
            x = x.swapaxes(0, 1)
    state = split_hx(hx, 2 if unbatched else 3, config.num_layers * config.num_directions)
    if state is not None and unbatched:
        state = (state[0][:, None, :], state[1][:, None, :])
    return x, lengths, unbatched, state


def torch_layout(output: np.ndarray, h_n: np.ndarray, c_n: np.ndarray, input: ArrayInput, unbatched: bool,
                 config: LSTMConfig) -> tuple[ArrayInput, State]:
    """The inverse of :func:`time_major`: a ``(T, N, F)`` output and states laid out as torch returns them."""
    if isinstance(input, PackedArrays):
        return padded_to_packed(output, input), (h_n, c_n)
    if unbatched:
        return output[:, 0], (h_n[:, 0], c_n[:, 0])
    if config.batch_first:
        output = output.swapaxes(0, 1)
    return output, (h_n, c_n)


def time_major_cotangents(cotangents: Mapping[str, np.ndarray], input: ArrayInput, unbatched: bool,
                          config: LSTMConfig) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """A backward's ``cotangents`` (of torch's output, or packed output data, h_n and c_n) in
    :func:`time_major`'s form: ``(d_output (T, N, F), d_h_n, d_c_n)`` with a batch axis, ``None`` where
    absent.  This is the adjoint of :func:`torch_layout`: a packed output's cotangent is padded with
    zeros (the padded steps are not part of the result)."""
    d_output, d_h_n, d_c_n = (cotangents.get(name) for name in ("output", "h_n", "c_n"))
    if d_output is not None:
        if isinstance(input, PackedArrays):
            d_output, _ = packed_to_padded(PackedArrays(np.asarray(d_output), *input[1:]))
        elif unbatched:
            d_output = np.asarray(d_output)[:, None, :]
        elif config.batch_first:
            d_output = np.asarray(d_output).swapaxes(0, 1)
    if unbatched:
        d_h_n, d_c_n = (None if d is None else np.asarray(d)[:, None, :] for d in (d_h_n, d_c_n))
    return d_output, d_h_n, d_c_n


def torch_layout_gradients(d_x: np.ndarray, d_state: Optional[State], input: ArrayInput, unbatched: bool,
                           config: LSTMConfig) -> dict[str, np.ndarray]:
    """Gradients with respect to :func:`time_major`'s ``x`` (T, N, F) and ``state`` laid out as torch's
    input (or packed data) and ``(h0, c0)`` (the adjoint of :func:`time_major`), by the names a backward
    returns them under: ``"input"``, and ``"h0"`` and ``"c0"`` when there is a state."""
    if isinstance(input, PackedArrays):
        d_input = padded_to_packed(d_x, input).data
    elif unbatched:
        d_input = d_x[:, 0]
    else:
        d_input = d_x.swapaxes(0, 1) if config.batch_first else d_x
    grads = {"input": d_input}
    if d_state is not None:
        grads["h0"], grads["c0"] = (d_state[0][:, 0], d_state[1][:, 0]) if unbatched else d_state
    return grads


def torch_parameter_gradients(config: LSTMConfig, layer: int, suffix: str, d_kernel: np.ndarray,
                              d_recurrent_kernel: np.ndarray, d_bias: Optional[np.ndarray]) -> dict[str, np.ndarray]:
    """torch's parameter gradients of one (layer, direction) from those of a port that keeps
    ``kernel = weight_ih.T``, ``recurrent_kernel = weight_hh.T`` and one ``bias = bias_ih + bias_hh``:
    both of torch's biases get the merged bias's gradient (each enters the gates once, as it does)."""
    grads = {f"weight_ih_l{layer}{suffix}": np.asarray(d_kernel).T,
             f"weight_hh_l{layer}{suffix}": np.asarray(d_recurrent_kernel).T}
    if config.bias and d_bias is not None:
        grads[f"bias_ih_l{layer}{suffix}"] = np.asarray(d_bias)
        grads[f"bias_hh_l{layer}{suffix}"] = np.asarray(d_bias).copy()
    return grads
