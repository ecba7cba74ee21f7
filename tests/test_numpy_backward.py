"""``NumpyLSTM.backward`` (implementations/numpy_lstm.py) against torch's autograd.

The reference is ``torch.nn.LSTM`` in float64 holding the port's weights (rounded to the port's dtype
first), differentiated by ``torch.autograd.grad`` of ``sum(result * cotangent)`` over the results a
cotangent is given for.  Training mode with a random dropout mask is checked against torch run one layer
at a time, multiplied between layers by the masks the port's forward drew.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence

from conformance.arrays import LSTMConfig, PackedArrays
from implementations.numpy_lstm import NumpyLSTM
from tests.ports.adapters import Float64InsideNumpyLSTM

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 3
LENGTHS = (2, 5, 4)  # not sorted, and sorting them is a 3-cycle: a permutation that is not its own inverse

CONFIGS = {
    "1-layer": {},
    "bidirectional": {"bidirectional": True},
    "2-layers-bidirectional-proj": {"num_layers": 2, "bidirectional": True, "proj_size": 3},
    "3-layers-proj": {"num_layers": 3, "proj_size": 2},
    "2-layers-bidirectional-no-bias": {"num_layers": 2, "bidirectional": True, "bias": False},
    "3-layers-bidirectional": {"num_layers": 3, "bidirectional": True},
}
LAYOUTS = ("time-major", "batch-first", "unbatched", "packed-sorted", "packed-unsorted", "packed-batch-first")
ALL_RESULTS = ("output", "h_n", "c_n")


def _config(layout: str, dtype: str, **kwargs) -> LSTMConfig:
    return LSTMConfig(INPUT, HIDDEN, batch_first=layout in ("batch-first", "packed-batch-first"), dtype=dtype, **kwargs)


def _weights(config: LSTMConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights in the config's dtype, shaped as torch's (read off a module of that config)."""
    shapes = {name: tuple(p.shape) for name, p in torch.nn.LSTM(**config.torch_kwargs()).named_parameters()}
    assert list(shapes) == config.weight_names()
    return {name: rng.normal(0.0, 0.5, shape).astype(config.dtype) for name, shape in shapes.items()}


def _inputs(config: LSTMConfig, layout: str, with_hx: bool, rng: np.random.Generator):
    """``(input, hx)`` as the port takes them: NumPy arrays, or PackedArrays built by torch's packing."""

    def draw(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 1.0, shape).astype(config.dtype)

    states = config.num_layers * config.num_directions
    if layout == "unbatched":
        x = draw(STEPS, INPUT)
        hx = (draw(states, config.output_size), draw(states, HIDDEN))
    else:
        hx = (draw(states, BATCH, config.output_size), draw(states, BATCH, HIDDEN))
        if layout == "time-major":
            x = draw(STEPS, BATCH, INPUT)
        elif layout == "batch-first":
            x = draw(BATCH, STEPS, INPUT)
        elif layout == "packed-sorted":  # pack_sequence of sequences in decreasing length
            lengths = sorted(LENGTHS, reverse=True)
            packed = pack_sequence([torch.from_numpy(draw(n, INPUT)) for n in lengths], enforce_sorted=True)
            x = _packed_arrays(packed)
        else:  # packed-unsorted / packed-batch-first: pack_padded_sequence with enforce_sorted=False
            batch_first = layout == "packed-batch-first"
            padded = torch.from_numpy(draw(BATCH, STEPS, INPUT) if batch_first else draw(STEPS, BATCH, INPUT))
            packed = pack_padded_sequence(padded, torch.tensor(LENGTHS), batch_first=batch_first,
                                          enforce_sorted=False)
            x = _packed_arrays(packed)
    return x, (hx if with_hx else None)


def _packed_arrays(packed: PackedSequence) -> PackedArrays:
    def numpy(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
        return None if t is None else t.numpy()

    return PackedArrays(packed.data.numpy(), packed.batch_sizes.numpy(), numpy(packed.sorted_indices),
                        numpy(packed.unsorted_indices))


def _cotangents(port: NumpyLSTM, x, hx, names: tuple[str, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random cotangents shaped like the port's results, for ``names`` only."""
    output, (h_n, c_n) = port.forward(x, hx, training=False)
    results = {"output": output.data if isinstance(output, PackedArrays) else output, "h_n": h_n, "c_n": c_n}
    return {name: rng.normal(0.0, 1.0, results[name].shape).astype(port.config.dtype) for name in names}


def _leaf(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def _torch_input(x, leaf: torch.Tensor):
    if isinstance(x, PackedArrays):
        def tensor(a: Optional[np.ndarray]) -> Optional[torch.Tensor]:
            return None if a is None else torch.from_numpy(a)

        return PackedSequence(leaf, torch.from_numpy(x.batch_sizes), tensor(x.sorted_indices),
                              tensor(x.unsorted_indices))
    return leaf


def _vjp(run, config: LSTMConfig, weights, x, hx, cotangents) -> dict[str, np.ndarray]:
    """The gradients of ``sum(result * cotangent)`` in float64 by torch's autograd; ``run(params, input, hx)``
    is the forward in torch, returning ``(output, (h_n, c_n))``."""
    params = {name: _leaf(value) for name, value in weights.items()}
    leaves = {"input": _leaf(x.data if isinstance(x, PackedArrays) else x)}
    if hx is not None:
        leaves["h0"], leaves["c0"] = _leaf(hx[0]), _leaf(hx[1])
    state = (leaves["h0"], leaves["c0"]) if hx is not None else None
    output, (h_n, c_n) = run(params, _torch_input(x, leaves["input"]), state)
    results = {"output": output.data if isinstance(output, PackedSequence) else output, "h_n": h_n, "c_n": c_n}
    loss = sum((results[name] * torch.from_numpy(np.asarray(c, dtype=np.float64))).sum()
               for name, c in cotangents.items())
    leaves.update(params)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {name: (torch.zeros_like(leaf) if g is None else g).numpy()
            for (name, leaf), g in zip(leaves.items(), grads)}


def _torch_lstm(config: LSTMConfig, training: bool = False):
    """A forward for :func:`_vjp`: ``torch.nn.LSTM`` in float64 with the given parameters."""
    module = torch.nn.LSTM(**config.torch_kwargs(), dtype=torch.float64)
    module.train(training)

    def run(params, input, hx):
        return functional_call(module, params, (input, hx))

    return run


def _compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype: str) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        value = got[name]
        assert value.shape == want.shape, name
        assert value.dtype == np.dtype(dtype), name
        if dtype == "float64":
            # The same arithmetic in a different order: rounding errors of a few units of 1e-16,
            # grown by the steps and layers the gradient has passed through.
            np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12 * max(np.abs(want).max(), 1.0),
                                       err_msg=name)
        else:
            # float32 against float64: every operation rounds by up to eps = 2**-24 relative, and an element
            # of a gradient is built by O(steps * layers * (batch + features)) operations on terms no larger
            # than the tensor's largest element, so its error stays orders of magnitude below
            # 1e-4 * max|gradient|, while a wrong derivative moves elements by a fraction of that scale.
            np.testing.assert_allclose(value, want, rtol=0.0, atol=1e-4 * np.abs(want).max(), err_msg=name)


def _check(config_name: str, layout: str, with_hx: bool, dtype: str, names: tuple[str, ...], seed: int,
           port_class: type = NumpyLSTM) -> None:
    rng = np.random.default_rng(seed)
    config = _config(layout, dtype, **CONFIGS[config_name])
    weights = _weights(config, rng)
    x, hx = _inputs(config, layout, with_hx, rng)
    port = port_class(config, weights)
    cotangents = _cotangents(port, x, hx, names, rng)
    got = port.backward(x, hx, cotangents, training=False)
    _compare(got, _vjp(_torch_lstm(config), config, weights, x, hx, cotangents), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_backward_matches_torch_autograd(config_name: str, layout: str, with_hx: bool, dtype: str) -> None:
    _check(config_name, layout, with_hx, dtype, ALL_RESULTS, seed=1)


@pytest.mark.parametrize("result", ALL_RESULTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_backward_with_a_cotangent_on_one_result_only(config_name: str, layout: str, result: str) -> None:
    _check(config_name, layout, True, "float64", (result,), seed=2)


@pytest.mark.parametrize("layout", ["time-major", "packed-unsorted"])
def test_a_float32_port_computing_in_float64_returns_float32_gradients(layout: str) -> None:
    _check("2-layers-bidirectional-proj", layout, True, "float32", ALL_RESULTS, seed=3,
           port_class=Float64InsideNumpyLSTM)


def test_numpy_lstm_declares_gradients() -> None:
    assert NumpyLSTM.lstm_conformance_capabilities.gradients is True


# ------------------------------------------------------------------------ training mode, dropout


def _masked_lstm(config: LSTMConfig, masks: tuple[np.ndarray, ...]):
    """A forward for :func:`_vjp`: torch one layer at a time (single-layer ``nn.LSTM`` modules), each
    layer's output but the last multiplied by the port's dropout mask for it (time-major ``(L, N, F)``
    for dense input, packed rows for packed input)."""
    directions, suffixes = config.num_directions, ("", "_reverse")[: config.num_directions]
    modules = [
        torch.nn.LSTM(INPUT if layer == 0 else directions * config.output_size, HIDDEN, bias=config.bias,
                      bidirectional=config.bidirectional, proj_size=config.proj_size, dtype=torch.float64)
        for layer in range(config.num_layers)
    ]

    def run(params, input, hx):
        packed = isinstance(input, PackedSequence)
        layer_input = input if packed or not config.batch_first else input.transpose(0, 1)
        hs, cs = [], []
        for layer, module in enumerate(modules):
            own = {name.replace(f"_l{layer}", "_l0"): p for name, p in params.items()
                   if any(name.endswith(f"_l{layer}{s}") for s in suffixes)}
            rows = slice(layer * directions, (layer + 1) * directions)
            state = None if hx is None else (hx[0][rows], hx[1][rows])
            out, (h, c) = functional_call(module, own, (layer_input, state))
            hs.append(h)
            cs.append(c)
            if layer < config.num_layers - 1:
                mask = torch.from_numpy(masks[layer])
                out = PackedSequence(out.data * mask, out.batch_sizes, out.sorted_indices,
                                     out.unsorted_indices) if packed else out * mask
            layer_input = out
        output = layer_input if packed or not config.batch_first else layer_input.transpose(0, 1)
        return output, (torch.cat(hs), torch.cat(cs))

    return run


@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
@pytest.mark.parametrize("layout", ["time-major", "batch-first", "packed-unsorted"])
def test_training_backward_uses_the_dropout_masks_forward_drew(layout: str, bidirectional: bool) -> None:
    rng = np.random.default_rng(4)
    config = _config(layout, "float64", num_layers=3, dropout=0.5, bidirectional=bidirectional)
    weights = _weights(config, rng)
    x, hx = _inputs(config, layout, True, rng)
    port = NumpyLSTM(config, weights)
    cotangents = _cotangents(port, x, hx, ALL_RESULTS, rng)
    output, _ = port.forward(x, hx, training=True)
    masks = port._dropout_masks
    assert len(masks) == 2
    for mask in masks:  # inverted dropout with p = 0.5: each element dropped (0) or kept and scaled by 2
        assert set(np.unique(mask)) == {0.0, 2.0}
    run = _masked_lstm(config, masks)
    # The torch reference applies the masks the port applied: same forward ...
    reference, _ = run({n: torch.from_numpy(w) for n, w in weights.items()},
                       _torch_input(x, torch.from_numpy(x.data if isinstance(x, PackedArrays) else x)),
                       tuple(torch.from_numpy(s) for s in hx))
    reference = reference.data if isinstance(reference, PackedSequence) else reference
    np.testing.assert_allclose(output.data if isinstance(output, PackedArrays) else output, reference.numpy(),
                               rtol=1e-12, atol=1e-14)
    # ... and the same gradients, twice: backward does not draw masks of its own.
    expected = _vjp(run, config, weights, x, hx, cotangents)
    _compare(port.backward(x, hx, cotangents, training=True), expected, "float64")
    _compare(port.backward(x, hx, cotangents, training=True), expected, "float64")
    # In eval mode the same call has no dropout.
    _compare(port.backward(x, hx, cotangents, training=False),
             _vjp(_torch_lstm(config), config, weights, x, hx, cotangents), "float64")


@pytest.mark.parametrize("layout", ["time-major", "packed-unsorted"])
def test_training_backward_with_dropout_1_passes_no_gradient_between_layers(layout: str) -> None:
    # p = 1 drops everything, so torch's training forward is deterministic and is the reference as is.
    rng = np.random.default_rng(5)
    config = _config(layout, "float64", num_layers=3, dropout=1.0, bidirectional=True)
    weights = _weights(config, rng)
    x, hx = _inputs(config, layout, True, rng)
    port = NumpyLSTM(config, weights)
    cotangents = _cotangents(port, x, hx, ALL_RESULTS, rng)
    port.forward(x, hx, training=True)
    assert all(not mask.any() for mask in port._dropout_masks)
    got = port.backward(x, hx, cotangents, training=True)
    _compare(got, _vjp(_torch_lstm(config, training=True), config, weights, x, hx, cotangents), "float64")
    # With a loss on the output only, nothing reaches below the last layer.
    got = port.backward(x, hx, {"output": cotangents["output"]}, training=True)
    below = [name for name in got if name in ("input", "h0", "c0") or "_l2" not in name]
    assert all(not got[name][:4].any() if name in ("h0", "c0") else not got[name].any() for name in below)
    assert got["h0"][4:].any() and got["weight_hh_l2"].any()


def test_training_backward_without_a_training_forward_raises() -> None:
    rng = np.random.default_rng(6)
    config = _config("time-major", "float32", num_layers=3, dropout=0.5)
    weights = _weights(config, rng)
    x, hx = _inputs(config, "time-major", True, rng)
    port = NumpyLSTM(config, weights)
    cotangents = _cotangents(port, x, hx, ALL_RESULTS, rng)  # an eval forward: draws no masks
    with pytest.raises(ValueError, match=r"forward\(.*training=True\)"):
        port.backward(x, hx, cotangents, training=True)
    # A training forward on other arguments drew masks of another shape: refused, not misapplied.
    port.forward(x[:2], hx, training=True)
    with pytest.raises(ValueError, match="most recent forward"):
        port.backward(x, hx, cotangents, training=True)
    port.forward(x, hx, training=True)
    port.backward(x, hx, cotangents, training=True)


def test_backward_validates_its_call_as_forward_does() -> None:
    rng = np.random.default_rng(7)
    config = _config("time-major", "float32", num_layers=2)
    port = NumpyLSTM(config, _weights(config, rng))
    x, (h0, c0) = _inputs(config, "time-major", True, rng)
    bad_calls = [(x.astype(np.float64), None), (x[..., :2], None), (x, (h0[:, :2], c0)), (x, h0), (x[:0], None)]
    for bad_input, bad_hx in bad_calls:
        with pytest.raises(Exception) as from_forward:
            port.forward(bad_input, bad_hx, training=False)
        with pytest.raises(type(from_forward.value), match=re.escape(str(from_forward.value))):
            port.backward(bad_input, bad_hx, {}, training=False)
    with pytest.raises(ValueError, match="cotangent of h_n"):
        port.backward(x, (h0, c0), {"h_n": h0[:, :2]}, training=False)
    with pytest.raises(ValueError, match="cotangents are for"):
        port.backward(x, (h0, c0), {"hn": h0}, training=False)
