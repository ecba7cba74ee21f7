"""Flax NNX's ``OptimizedLSTMCell`` run by ``nnx.RNN`` / ``nnx.Bidirectional``, on JAX.

The port is Flax's LSTM cell and its RNN scan (``flax==0.12.8`` on ``jax==0.10.2`` /
``jaxlib==0.10.2``, CPU).  Each layer is an ``nnx.RNN`` over an ``nnx.OptimizedLSTMCell``, or an
``nnx.Bidirectional`` of a forward and a ``reverse=True, keep_order=True`` RNN; the layers are
stacked here and the whole forward is one ``nnx.jit`` (compiled once per model structure and
input shape).

Weight mapping, per layer and direction (Flax's gate order i, f, g, o is torch's):

* ``dense_i.kernel = weight_ih.T`` (the input Dense has no bias);
* ``dense_h.kernel = weight_hh.T`` and ``dense_h.bias = bias_ih + bias_hh``; with ``bias=False`` the
  cell still has that bias, set to zeros (the same arithmetic as no bias);
* the carry is ``(c, h)``: ``initial_carry`` is ``(c0[k], h0[k])`` for row ``k = layer * D + direction``,
  ``((c, h)_fw, (c, h)_bw)`` for Bidirectional, and the final carries are stacked back into
  torch's ``(num_layers * D, N, H)`` ``h_n`` / ``c_n``;
* packed input goes in as a padded time-major batch with ``seq_lengths`` (Flax's own mechanism:
  it flips only the valid steps for the reverse direction and returns each sequence's last valid
  carry); ``batch_first`` and unbatched input are layout changes done here.  Flax leaves the
  output at padded steps unspecified (whatever the scan computed there); the packed output
  returned to torch's layout holds only the valid steps (``padded_to_packed``), so those
  values are never read, never zeroed or otherwise changed.

float64: this module turns on ``jax_enable_x64`` when imported (process-wide), without which JAX
silently computes float64 models in float32; cells then get ``param_dtype=float64``.

Gradients: :meth:`FlaxLSTM.backward` is ``nnx.vjp`` (JAX's vjp, carrying the modules' state) of the
same layers, compiled by ``nnx.jit`` once per model structure and shape.  The cotangents and gradients go through the adjoint of the
layout translation (``implementations._layout``), and the parameter gradients back to torch's names by
the mapping above: ``weight_ih = kernel.T`` gets ``dense_i.kernel``'s gradient transposed, and both
``bias_ih`` and ``bias_hh`` get the merged ``dense_h.bias``'s.

What it lacks: ``proj_size`` (no projection in Flax's LSTM cells) and inter-layer dropout (the
cells and ``nnx.RNN`` have no dropout).  float16 and bfloat16 are not declared: cells with half
``param_dtype`` have not been run against the suite here (jax is not part of CI), so they are not
claimed.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Mapping, Optional

from implementations._extras import missing_port

try:
    import jax

    jax.config.update("jax_enable_x64", True)  # before anything else of JAX or Flax is set up
    import jax.numpy as jnp
    from flax import nnx
except ImportError as exc:
    raise missing_port("flax", exc) from None

import numpy as np

from conformance.adapters import Adapter, ArrayInput, ArrayResult, Capabilities
from conformance.arrays import LSTMConfig
from implementations._layout import (time_major, time_major_cotangents, torch_layout,
                                     torch_layout_gradients, torch_parameter_gradients)

__all__ = ["FlaxLSTM"]


def _constant(array: np.ndarray) -> Any:
    """A Flax initializer that returns ``array`` (checked against the shape Flax asks for)."""

    def init(key: Any, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        if tuple(shape) != array.shape:
            raise ValueError(f"weight of shape {array.shape} given where Flax expects {tuple(shape)}")
        return jnp.asarray(array, dtype=dtype)

    return init


def _run_layers(layers: nnx.List, x: jax.Array, initial: Optional[list], seq_lengths: Optional[jax.Array],
                directions: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """All layers, time-major; returns ``(output, h_n, c_n)`` with torch's ``layer * D + direction`` rows."""
    finals = []
    for layer, module in enumerate(layers):
        carry, x = module(x, initial_carry=None if initial is None else initial[layer],
                          seq_lengths=seq_lengths, return_carry=True)
        finals += [carry] if directions == 1 else list(carry)
    return x, jnp.stack([h for _, h in finals]), jnp.stack([c for c, _ in finals])  # each carry is (c, h)


_run = nnx.jit(_run_layers, static_argnames="directions")


@functools.partial(nnx.jit, static_argnames="directions")
def _pullback(layers: nnx.List, x: jax.Array, initial: Optional[list], seq_lengths: Optional[jax.Array],
              cotangents: tuple, directions: int) -> tuple:
    """``nnx.vjp`` (JAX's vjp, carrying the modules' state) of :func:`_run_layers` with respect to the
    layers' parameters, the input and the initial carries, at the cotangents of ``(output, h_n, c_n)``."""

    def run(layers: nnx.List, x: jax.Array, initial: Optional[list]) -> tuple:
        return _run_layers(layers, x, initial, seq_lengths, directions)

    _, vjp = nnx.vjp(run, layers, x, initial, graph_updates=False)
    return vjp(cotangents)


class FlaxLSTM(Adapter):
    """torch.nn.LSTM checked against Flax NNX's OptimizedLSTMCell + RNN (+ Bidirectional)."""

    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities(dtypes={"float32", "float64"}, errors="raises",
                                                        gradients=True).without("proj_size", "dropout")
    lstm_conformance_expected_failures = "expected/flax.txt"

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self._dtype = np.dtype(config.dtype)
        layers = []
        features = config.input_size
        for layer in range(config.num_layers):
            rnns = [nnx.RNN(self._cell(layer, suffix, features), time_major=True, return_carry=True,
                            reverse=bool(suffix), keep_order=bool(suffix))
                    for suffix in ("", "_reverse")[: config.num_directions]]
            layers.append(rnns[0] if len(rnns) == 1 else
                          nnx.Bidirectional(rnns[0], rnns[1], time_major=True, return_carry=True))
            features = config.hidden_size * config.num_directions
        self._layers = nnx.List(layers)

    def _cell(self, layer: int, suffix: str, features: int) -> nnx.OptimizedLSTMCell:
        cfg = self.config

        def get(kind: str) -> np.ndarray:
            return np.asarray(self.weights[f"{kind}_l{layer}{suffix}"], dtype=self._dtype)

        bias = get("bias_ih") + get("bias_hh") if cfg.bias else np.zeros(4 * cfg.hidden_size, self._dtype)
        # The torch weights are the cell's initializers: nothing random is drawn (or compiled).
        return nnx.OptimizedLSTMCell(features, cfg.hidden_size, param_dtype=self._dtype, rngs=nnx.Rngs(0),
                                     kernel_init=_constant(get("weight_ih").T),
                                     recurrent_kernel_init=_constant(get("weight_hh").T),
                                     bias_init=_constant(bias))

    def _initial_carries(self, state: Optional[tuple]) -> Optional[list]:
        """torch's stacked ``(h0, c0)`` as each layer's initial carry (``((c, h)_fw, (c, h)_bw)`` when
        bidirectional); ``None`` without hx."""
        if state is None:
            return None
        D = self.config.num_directions

        def carry(index: int) -> tuple[jax.Array, jax.Array]:
            return jnp.asarray(state[1][index]), jnp.asarray(state[0][index])  # Flax's carry is (c, h)

        return [carry(layer * D) if D == 1 else (carry(layer * D), carry(layer * D + 1))
                for layer in range(self.config.num_layers)]

    def forward(self, input: ArrayInput, hx: Optional[object], *, training: bool) -> ArrayResult:
        cfg = self.config
        x, lengths, unbatched, state = time_major(input, hx, cfg)
        output, h_n, c_n = _run(self._layers, jnp.asarray(x), self._initial_carries(state),
                                None if lengths is None else jnp.asarray(lengths), directions=cfg.num_directions)
        return torch_layout(np.asarray(output), np.asarray(h_n), np.asarray(c_n), input, unbatched, cfg)

    def backward(self, input: ArrayInput, hx: Optional[object], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        """``jax.vjp`` of :meth:`forward` (no dropout: training mode computes what eval mode does)."""
        cfg = self.config
        D = cfg.num_directions
        x, lengths, unbatched, state = time_major(input, hx, cfg)
        rows, batch = cfg.num_layers * D, x.shape[1]
        shapes = ((x.shape[0], batch, D * cfg.hidden_size), (rows, batch, cfg.hidden_size),
                  (rows, batch, cfg.hidden_size))
        laid = time_major_cotangents(cotangents, input, unbatched, cfg)
        cots = tuple(jnp.zeros(shape, self._dtype) if d is None else jnp.asarray(d, self._dtype)
                     for d, shape in zip(laid, shapes))
        d_layers, d_x, d_initial = _pullback(self._layers, jnp.asarray(x), self._initial_carries(state),
                                             None if lengths is None else jnp.asarray(lengths), cots, directions=D)
        d_state = None
        if state is not None:
            carries = [c for layer in d_initial for c in ((layer,) if D == 1 else layer)]
            d_state = (np.stack([np.asarray(h) for _, h in carries]), np.stack([np.asarray(c) for c, _ in carries]))
        grads = torch_layout_gradients(np.asarray(d_x), d_state, input, unbatched, cfg)
        flat = {tuple(path): np.asarray(value.get_value() if hasattr(value, "get_value") else value.value)
                for path, value in nnx.to_flat_state(nnx.state(d_layers, nnx.Param))}
        for layer in range(cfg.num_layers):
            for direction, suffix in enumerate(("", "_reverse")[:D]):
                where = (layer, "cell") if D == 1 else (layer, ("forward_rnn", "backward_rnn")[direction], "cell")
                grads.update(torch_parameter_gradients(cfg, layer, suffix, flat[where + ("dense_i", "kernel")],
                                                       flat[where + ("dense_h", "kernel")],
                                                       flat[where + ("dense_h", "bias")]))
        return grads
