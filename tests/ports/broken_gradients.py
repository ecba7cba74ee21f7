"""Ports whose forward is exact and whose backward is wrong.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with one gradient bug real ports
have shipped; its one-line docstring names the bug and, where there is one, the upstream report.
Their outputs and states equal ScratchLSTM's bit for bit (``detach``, a custom ``autograd.Function``
or a hook changes what flows backward, never a value), so only the gradient tests
(``conformance/suite/test_gradients.py``) can flag them; those of :data:`DOUBLE_BACKWARD_CATALOGUE` have
exact first-order gradients too, and only the double-backward test flags them.  The correct classes
compute the backward another way (a hand-written cell backward, recomputation by checkpointing) and must
pass.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from conformance.adapters import Capabilities

from .scratch_lstm import ScratchLSTM

__all__ = ["DOUBLE_BACKWARD_CATALOGUE", "GRADIENTS_CATALOGUE", "GRADIENTS_CORRECT", "StateDetachedBetweenSteps", "InitialStateDetached",
           "WrongSigmoidDerivative", "BiasHhNoGradient", "InputsDetachedBetweenLayers", "BatchFirstBackwardWrong",
           "CellGradientZeroed", "Float32Backward", "OutputsDetached", "GradZeroedInForward",
           "DropoutIgnoredInBackward", "HandWrittenCellBackward", "CheckpointedLSTM", "TwiceDifferentiableCell",
           "CellBackwardOutsideGraph", "OnceDifferentiableUndeclared"]


# ---------------------------------------------------------------------------- a hand-written cell backward


class _Cell(torch.autograd.Function):
    """One LSTM step from the gate pre-activations: forward and a hand-written backward.

    ``gates = pre_t + W_hh h + b_hh`` is left to autograd; this Function does the nonlinear part,
    ``(gates, c) -> (h, c')`` with ``h = o * tanh(c')`` and ``c' = f * c + i * g`` (before projection).
    Its backward reads the activations the forward saved, computed outside autograd: right to first
    order, but not itself differentiable with respect to the gates (a double backward misses every
    term through them)."""

    @staticmethod
    def forward(ctx, gates: Tensor, c: Tensor, derivative):
        i, f, g, o = gates.chunk(4, dim=-1)
        si, sf, tg, so = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = sf * c + si * tg
        tc = torch.tanh(c_new)
        ctx.save_for_backward(i, f, o, si, sf, tg, so, c, tc)
        ctx.derivative = derivative
        return so * tc, c_new

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_c: Tensor):
        i, f, o, si, sf, tg, so, c, tc = ctx.saved_tensors
        sigmoid_prime = ctx.derivative
        grad_c = grad_c + grad_h * so * (1 - tc * tc)  # through h = o * tanh(c')
        d_o = grad_h * tc * sigmoid_prime(o, so)
        d_i = grad_c * tg * sigmoid_prime(i, si)
        d_f = grad_c * c * sigmoid_prime(f, sf)
        d_g = grad_c * si * (1 - tg * tg)
        return torch.cat([d_i, d_f, d_g, d_o], dim=-1), grad_c * sf, None


class _OnceDifferentiableCell(_Cell):
    """:class:`_Cell` whose backward says it is not differentiable: a double backward raises."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor, grad_c: Tensor):
        return _Cell.backward(ctx, grad_h, grad_c)


class _TwiceDifferentiableCell(torch.autograd.Function):
    """:class:`_Cell`'s step with a backward that recomputes the activations from the saved inputs, in
    differentiable torch operations: a double backward differentiates it like any other graph."""

    @staticmethod
    def forward(ctx, gates: Tensor, c: Tensor, derivative):
        ctx.save_for_backward(gates, c)
        ctx.derivative = derivative
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_c: Tensor):
        gates, c = ctx.saved_tensors
        i, f, g, o = gates.chunk(4, dim=-1)
        si, sf, tg, so = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        tc = torch.tanh(sf * c + si * tg)
        sigmoid_prime = ctx.derivative
        grad_c = grad_c + grad_h * so * (1 - tc * tc)
        d_o = grad_h * tc * sigmoid_prime(o, so)
        d_i = grad_c * tg * sigmoid_prime(i, si)
        d_f = grad_c * c * sigmoid_prime(f, sf)
        d_g = grad_c * si * (1 - tg * tg)
        return torch.cat([d_i, d_f, d_g, d_o], dim=-1), grad_c * sf, None


def _sigmoid_prime(x: Tensor, s: Tensor) -> Tensor:
    """sigmoid'(x) from its output s: s * (1 - s)."""
    return s * (1 - s)


class HandWrittenCellBackward(ScratchLSTM):
    """Correct: the cell's nonlinear part is a custom autograd.Function with a hand-written backward (the gate and cell-state derivatives spelled out, as a fused-kernel port writes them); once differentiable, and declared so."""

    lstm_conformance_capabilities = Capabilities(errors="exact", double_backward=False)
    _function: type = _OnceDifferentiableCell

    def _sigmoid_derivative(self, x: Tensor, s: Tensor) -> Tensor:
        return _sigmoid_prime(x, s)

    def _cell(self, pre_t: Tensor, h: Tensor, c: Tensor, w):
        gates = pre_t + self._recurrent_projection(self._recurrent_dropout(h), w)
        h, c = self._function.apply(gates, c, self._sigmoid_derivative)
        return self._project(h, w), c


class TwiceDifferentiableCell(HandWrittenCellBackward):
    """Correct: the hand-written cell backward recomputes the activations from the saved gate pre-activations in torch operations, so a double backward (a gradient penalty) differentiates it."""

    lstm_conformance_capabilities = Capabilities(errors="exact")
    _function = _TwiceDifferentiableCell


class CheckpointedLSTM(ScratchLSTM):
    """Correct: each layer direction runs under torch.utils.checkpoint (activations recomputed in the backward, as memory-bound training does)."""

    def _run_direction(self, x: Tensor, h: Tensor, c: Tensor, w, reverse: bool):
        run = super()._run_direction

        def step(x: Tensor, h: Tensor, c: Tensor, *weights: Tensor):
            output, (h_n, c_n) = run(x, h, c, type(w)(*weights), reverse)
            return output, h_n, c_n

        output, h_n, c_n = checkpoint(step, x, h, c, *w, use_reentrant=False)
        return output, (h_n, c_n)


# ---------------------------------------------------------------------------- broken


class StateDetachedBetweenSteps(ScratchLSTM):
    """Detaches h and c between time steps (truncated BPTT of one step, a stateful-training habit applied inside the sequence); no gradient flows back through time."""

    def _cell(self, pre_t: Tensor, h: Tensor, c: Tensor, w):
        return super()._cell(pre_t, h.detach(), c.detach(), w)


class InitialStateDetached(ScratchLSTM):
    """Detaches the given h0 and c0 (read as constants, as a port that copies hx into its own state buffers does); the initial state gets no gradient."""

    def _initial_states(self, hx):
        h0, c0 = super()._initial_states(hx)
        return h0.detach(), c0.detach()


class WrongSigmoidDerivative(HandWrittenCellBackward):
    """Hand-written gate derivative evaluated on the pre-activation x instead of the gate's output: x * (1 - x) for sigmoid'(x) (a classic hand-written backprop slip)."""

    def _sigmoid_derivative(self, x: Tensor, s: Tensor) -> Tensor:
        return x * (1 - x)


class BiasHhNoGradient(ScratchLSTM):
    """Uses b_hh as a constant (folded into the gates detached, as a single-bias kernel that adds b_hh at load time does); bias_hh gets no gradient."""

    def _recurrent_projection(self, h: Tensor, w):
        return F.linear(h, w.w_hh, None if w.b_hh is None else w.b_hh.detach())


class InputsDetachedBetweenLayers(ScratchLSTM):
    """Detaches each layer's output before it feeds the next layer (layers run as separate graphs); only the last layer's gradients are right, the lower layers get only their own states'."""

    def _layer_output_dropout(self, output: Tensor, layer: int) -> Tensor:
        output = super()._layer_output_dropout(output, layer)
        return output.detach() if layer < self.num_layers - 1 else output


class _TimeMajorCopy(torch.autograd.Function):
    """A batch-first (N, T, F) tensor copied through time-major memory; the backward views the time-major
    gradient as (N, T, F) instead of transposing it back."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.transpose(0, 1).contiguous().transpose(0, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.transpose(0, 1).contiguous().view(grad.shape)


class BatchFirstBackwardWrong(ScratchLSTM):
    """batch_first input copied to time-major memory by a custom op whose backward reshapes the gradient instead of transposing it (pytorch/pytorch#95137: MPS LSTM backward wrong with batch_first)."""

    def _prepare_input(self, input: Tensor) -> Tensor:
        if self.batch_first and input.dim() == 3:
            return _TimeMajorCopy.apply(input)
        return input


class CellGradientZeroed(ScratchLSTM):
    """The gradient flowing from c_t back to c_{t-1} is dropped (the cell state used as a constant in f * c), so the cell path carries no gradient back in time (PaddlePaddle/Paddle#6970)."""

    def _cell_state(self, f: Tensor, c: Tensor, i: Tensor, g: Tensor) -> Tensor:
        return f * c.detach() + i * g


class _Float32Recompute(torch.autograd.Function):
    """The module's computation, run as given in the forward and recomputed in float32 for the backward."""

    @staticmethod
    def forward(ctx, module, batch_sizes, x, h0, c0, *weights):
        ctx.module, ctx.batch_sizes = module, batch_sizes
        ctx.save_for_backward(x, h0, c0, *weights)
        with torch.no_grad():
            output, (h_n, c_n) = ScratchLSTM._compute(module, x, h0, c0, batch_sizes)
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        low = copy.deepcopy(ctx.module).float()
        with torch.enable_grad():
            x, h0, c0 = (t.detach().float().requires_grad_(True) for t in saved[:3])
            output, (h_n, c_n) = ScratchLSTM._compute(low, x, h0, c0, ctx.batch_sizes)
            inputs = [x, h0, c0, *low.parameters()]
            pairs = [(r, g.float()) for r, g in zip((output, h_n, c_n), grads) if g is not None]
            found = torch.autograd.grad([r for r, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
        cast = [None if g is None else g.to(t.dtype) for g, t in zip(found, saved)]
        return (None, None, *cast)


class Float32Backward(ScratchLSTM):
    """Gradient checkpointing whose recomputation runs in float32 (the autocast dtype) whatever the model's dtype: a float64 model's forward is exact, its gradients are float32's."""

    def _compute(self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes):
        weights = [getattr(self, name) for name in self._flat_weights_names]
        output, h_n, c_n = _Float32Recompute.apply(self, batch_sizes, x, h0, c0, *weights)
        return output, (h_n, c_n)


class OutputsDetached(ScratchLSTM):
    """Runs its kernel under torch.no_grad() (an inference kernel shipped as the training module); the results carry no grad_fn."""

    def forward(self, input, hx=None):
        with torch.no_grad():
            return super().forward(input, hx)


class GradZeroedInForward(ScratchLSTM):
    """Calls self.zero_grad() at the start of forward (a training step's habit moved into the module); gradients accumulated before the call are lost."""

    def forward(self, input, hx=None):
        self.zero_grad()
        return super().forward(input, hx)


class CellBackwardOutsideGraph(HandWrittenCellBackward):
    """A hand-written cell backward computed from activations saved outside autograd and not marked once_differentiable: first-order gradients exact, a double backward (a gradient penalty) silently misses every term through the gates."""

    lstm_conformance_capabilities = Capabilities(errors="exact")
    _function = _Cell


class OnceDifferentiableUndeclared(HandWrittenCellBackward):
    """A once_differentiable hand-written cell backward in a port that does not declare Capabilities(double_backward=False): a double backward, which torch's LSTM supports, raises."""

    lstm_conformance_capabilities = Capabilities(errors="exact")


class _MaskedIgnoringBackward(torch.autograd.Function):
    """``y * noise`` in the forward; the backward passes the gradient through as if nothing were dropped."""

    @staticmethod
    def forward(ctx, y: Tensor, noise: Tensor) -> Tensor:
        return y * noise

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class DropoutIgnoredInBackward(ScratchLSTM):
    """Applies the inter-layer dropout mask in the forward but not in the backward (pytorch/pytorch#190056: MPS LSTM backward ignored dropout)."""

    def _layer_output_dropout(self, output: Tensor, layer: int) -> Tensor:
        if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
            if self.dropout >= 1:  # everything dropped, as F.dropout does for p = 1
                noise = torch.zeros_like(output)
            else:
                noise = torch.empty_like(output).bernoulli_(1 - self.dropout).div_(1 - self.dropout)
            return _MaskedIgnoringBackward.apply(output, noise)
        return output


GRADIENTS_CATALOGUE: dict[str, type] = {
    "state-detached-between-steps": StateDetachedBetweenSteps,
    "initial-state-detached": InitialStateDetached,
    "wrong-sigmoid-derivative": WrongSigmoidDerivative,
    "bias-hh-no-gradient": BiasHhNoGradient,
    "inputs-detached-between-layers": InputsDetachedBetweenLayers,
    "batch-first-backward-wrong": BatchFirstBackwardWrong,
    "cell-gradient-zeroed": CellGradientZeroed,
    "float32-backward": Float32Backward,
    "outputs-detached": OutputsDetached,
    "grad-zeroed-in-forward": GradZeroedInForward,
    "dropout-ignored-in-backward": DropoutIgnoredInBackward,
}

#: Ports whose forward and first-order gradients are exact: only the double-backward test flags them.
DOUBLE_BACKWARD_CATALOGUE: dict[str, type] = {
    "cell-backward-outside-graph": CellBackwardOutsideGraph,
    "once-differentiable-undeclared": OnceDifferentiableUndeclared,
}

GRADIENTS_CORRECT: dict[str, type] = {"hand-written-cell-backward": HandWrittenCellBackward,
                                      "twice-differentiable-cell": TwiceDifferentiableCell,
                                      "checkpointed": CheckpointedLSTM}
