"""Ports that are right at unit scale and wrong on the values real inputs hold.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with one numerical shortcut
that real ports have shipped; its one-line docstring says the shortcut and on which values it
shows.  None of them departs from torch on ``randn`` inputs at unit scale with torch's default
initialisation: they need the generated magnitudes, zeros or special values
(:class:`conformance.case.Values`).  The correct classes differ from torch only in rounding or in
how they organise the same arithmetic, and must pass at every scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from conformance.adapters import Capabilities

from .scratch_lstm import ScratchLSTM, packed_to_padded, padded_to_packed

__all__ = ["VALUES_CATALOGUE", "VALUES_CORRECT", "TanhViaExp", "CellClip", "ZeroStepsSkipped", "NanToNum",
           "FlushTinyInputs", "StableActivations", "HalfTanhSigmoid", "FusedGateMatmul"]


# ---------------------------------------------------------------------------- broken


class TanhViaExp(ScratchLSTM):
    """Computes tanh as (exp(2x) - 1) / (exp(2x) + 1) (with expm1, so small x stay exact), NaN once exp overflows (x > 44 in float32; pytorch/pytorch#172406, BVLC/caffe#1455); shows on large inputs or cell states."""

    def _tanh(self, x: Tensor) -> Tensor:
        e = torch.expm1(2 * x)
        return e / (e + 2)


class CellClip(ScratchLSTM):
    """Clips the cell state to [-8, 8] after each step (a cell_clip as in TensorFlow's LSTMBlockCell or a fixed-point kernel's cell range); shows once |c| exceeds 8: large c0, large inputs or weights."""

    BOUND = 8.0

    def _cell_state(self, f: Tensor, c: Tensor, i: Tensor, g: Tensor) -> Tensor:
        return torch.clamp(f * c + i * g, -self.BOUND, self.BOUND)


class ZeroStepsSkipped(ScratchLSTM):
    """Treats an all-zero input step as padding and carries the state over it in every layer, as Keras' Masking(mask_value=0.0) does (keras-team/keras#446); shows on inputs with all-zero time steps."""

    def _run_layers(self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes):
        # The mask comes from the caller's input, once, and holds for every layer (Keras propagates it).
        padded = x if batch_sizes is None else packed_to_padded(x, batch_sizes)
        self._skipped = (padded == 0).all(dim=-1, keepdim=True)  # (T, N, 1); packed: padding included
        return super()._run_layers(x, h0, c0, batch_sizes)

    def _run_direction(self, x: Tensor, h: Tensor, c: Tensor, w, reverse: bool):
        pre = self._input_projection(x, w)
        steps = x.shape[0]
        outputs = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            h_new, c_new = self._cell(pre[t], h, c, w)
            skipped = self._skipped[t]
            h, c = torch.where(skipped, h, h_new), torch.where(skipped, c, c_new)
            outputs[t] = h
        return torch.stack(outputs, 0), self._final_state(h, c, w)

    def _run_packed_direction(self, data: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w, reverse: bool):
        # Keras-style: pad with zeros and let the mask skip the padding (and every real zero step).
        out, state = self._run_direction(packed_to_padded(data, batch_sizes), h0, c0, w, reverse)
        return padded_to_packed(out, batch_sizes), state


class NanToNum(ScratchLSTM):
    """Passes the input and hx through torch.nan_to_num before the recurrence (a sanitising pre-processing step), so NaN does not propagate where torch's does; shows on inputs or states holding NaN."""

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            input = input._replace(data=torch.nan_to_num(input.data))
        else:
            input = torch.nan_to_num(input)
        if isinstance(hx, tuple) and len(hx) == 2:
            hx = (torch.nan_to_num(hx[0]), torch.nan_to_num(hx[1]))
        return super().forward(input, hx)


class FlushTinyInputs(ScratchLSTM):
    """Reads input elements below 1e-7 in magnitude as zero (a sparsity threshold that skips "negligible" inputs, as delta-network kernels do); shows on inputs of tiny magnitude."""

    THRESHOLD = 1e-7

    def forward(self, input, hx=None):
        def flush(t: Tensor) -> Tensor:
            return torch.where(t.abs() < self.THRESHOLD, torch.zeros_like(t), t)

        if isinstance(input, PackedSequence):
            return super().forward(input._replace(data=flush(input.data)), hx)
        return super().forward(flush(input), hx)


# ---------------------------------------------------------------------------- correct


class StableActivations(ScratchLSTM):
    """Correct: sigmoid and tanh from exp/expm1 in their overflow-free forms; differs from torch only in rounding."""

    # Its forward only: autograd through abs and sign gives these activations a zero derivative at exactly
    # 0 (a zero pre-activation: zero inputs without bias), and through expm1 it loses the precision of a
    # saturated gate's derivative, so it declares no gradients (the gradient tests flag both).
    lstm_conformance_capabilities = Capabilities(errors="exact", gradients=False)

    def _sigmoid(self, x: Tensor) -> Tensor:
        e = torch.exp(-x.abs())  # never overflows
        return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def _tanh(self, x: Tensor) -> Tensor:
        m = torch.expm1(-2 * x.abs())  # in (-1, 0]: no overflow, no cancellation near 0
        return torch.sign(x) * (-m / (2 + m))


class HalfTanhSigmoid(ScratchLSTM):
    """Correct: sigmoid as 0.5 + 0.5 * tanh(x / 2), a common kernel identity: accurate to absolute rather than relative float precision (sigmoid(-17) off by 100%, 4e-8), which a large cell state multiplies."""

    # In half precision that absolute error is eps / 4 of float16 or bfloat16 (sigmoid(-10) comes out 0),
    # far below torch's precision there: gates and their derivatives vanish where torch's, computed in
    # float32, do not.  The policy flags it, so it declares full precision only.
    lstm_conformance_capabilities = Capabilities(dtypes={"float32", "float64"}, errors="exact")

    def _sigmoid(self, x: Tensor) -> Tensor:
        return 0.5 + 0.5 * torch.tanh(x / 2)


class FusedGateMatmul(ScratchLSTM):
    """Correct: one matmul of [x_t, h_{t-1}] with [W_ih | W_hh] per step, as TensorFlow-style kernels do; differs from torch only in the order of the sums."""

    def _input_projection(self, x: Tensor, w) -> Tensor:
        return x  # kept raw: the step does all the arithmetic

    def _cell(self, pre_t: Tensor, h: Tensor, c: Tensor, w):
        weight = torch.cat([w.w_ih, w.w_hh], dim=1)
        bias = None if w.b_ih is None else w.b_ih + w.b_hh
        gates = F.linear(torch.cat([pre_t, h], dim=-1), weight, bias)
        i, f, g, o = self._gates(gates)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return self._project(o * torch.tanh(c), w), c


VALUES_CATALOGUE: dict[str, type] = {
    "tanh-via-exp": TanhViaExp,
    "cell-clip": CellClip,
    "zero-steps-skipped": ZeroStepsSkipped,
    "nan-to-num": NanToNum,
    "flush-tiny-inputs": FlushTinyInputs,
}

VALUES_CORRECT: dict[str, type] = {"stable-activations": StableActivations, "half-tanh-sigmoid": HalfTanhSigmoid,
                                   "fused-gate-matmul": FusedGateMatmul}
