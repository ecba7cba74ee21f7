"""A catalogue of deliberately broken drop-in LSTM ports.

Each class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with exactly ONE realistic porting
bug, made by overriding one small method.  The one-line docstring of each class says what the
bug is, on which axis it shows, and (where one fits) which pitfall of ``torch-lstm-2.13.md``
section 4 it reproduces.  The conformance suite must flag every one of them; the bugs are chosen
so that each shows only on its own axis (gate math, bias, h_n layout, batch_first, packed,
enforce_sorted, proj_size, dropout, dtype, unbatched, hx, statefulness, in-place mutation,
requires_grad, non-contiguous, ties, long sequences, large hidden sizes, multi-layer, batch 1).

``CATALOGUE`` maps a short kebab-case name to each broken class; ``CORRECT`` lists the correct
ports the suite must accept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from .scratch_lstm import (
    Float64InsideLSTM,
    ScratchLSTM,
    packed_to_padded,
    padded_to_packed,
)

__all__ = ["CATALOGUE", "CORRECT"]


# ---------------------------------------------------------------------------- gate math and biases


class OnnxGateOrder(ScratchLSTM):
    """Reads the gate rows in ONNX order i,o,f,c instead of torch's i,f,g,o (pitfall 4.1, CrispStrobe/CrispASR#106); shows on every input."""

    def _gates(self, gates):
        i, o, f, g = gates.chunk(4, dim=-1)
        return i, f, g, o


class TfForgetBias(ScratchLSTM):
    """Adds TF's default forget_bias=1.0 to the forget gate (pitfall 4.2, tensorflow/tensorflow#1326); shows on every input."""

    def _gates(self, gates):
        i, f, g, o = super()._gates(gates)
        return i, f + 1.0, g, o


class SingleBias(ScratchLSTM):
    """Uses only b_ih and drops b_hh, as a single-bias framework would (pitfall 4.2, google/flax#3746); shows with bias=True."""

    def _recurrent_projection(self, h, w):
        return F.linear(h, w.w_hh)


class HiddenTile64(ScratchLSTM):
    """Kernel tile bug: the recurrent matmul skips hidden units past 64 in each gate; shows only for hidden_size > 64."""

    TILE = 64

    def _recurrent_projection(self, h, w):
        if self.hidden_size <= self.TILE:
            return super()._recurrent_projection(h, w)
        w_hh = w.w_hh.reshape(4, self.hidden_size, -1)
        w_hh = torch.cat([w_hh[:, : self.TILE], torch.zeros_like(w_hh[:, self.TILE:])], dim=1)
        return F.linear(h, w_hh.reshape(4 * self.hidden_size, -1), w.b_hh)


class Float32Inside(ScratchLSTM):
    """Computes in float32 internally and casts back, losing precision for float64 models; shows on dtype float64."""

    compute_dtype = torch.float32


# ---------------------------------------------------------------------------- h_n / c_n layout


class HnDirectionMajor(ScratchLSTM):
    """Indexes h0/h_n/c_n as direction*num_layers+layer instead of layer*D+direction (pitfall 4.3, OpenNMT/OpenNMT-py#61); shows for bidirectional with num_layers >= 2."""

    def _state_index(self, layer, direction):
        return direction * self.num_layers + layer


class HnBatchFirst(ScratchLSTM):
    """Returns h_n/c_n in batch_first layout when batch_first=True (pitfall 4.3, pytorch/pytorch#19675); shows with batch_first=True."""

    def _arrange_final_states(self, h_final, c_final):
        h_n, c_n = super()._arrange_final_states(h_final, c_final)
        if self.batch_first:
            return h_n.transpose(0, 1), c_n.transpose(0, 1)
        return h_n, c_n


class CnProjected(ScratchLSTM):
    """Applies the W_hr projection to the returned c_n as well as h_n (c is never projected, section 2); shows with proj_size > 0."""

    def _final_state(self, h, c, w):
        return h, self._project(c, w)


class HiddenInitNoDirections(ScratchLSTM):
    """Zero initial state built with num_layers rows, forgetting num_directions (pitfall 4.3, yzhangcs/parser#48); shows for bidirectional with hx=None."""

    def _zero_states(self, batch, like):
        h = torch.zeros(self.num_layers, batch, self._real_hidden_size, dtype=like.dtype, device=like.device)
        c = torch.zeros(self.num_layers, batch, self.hidden_size, dtype=like.dtype, device=like.device)
        return h, c


# ---------------------------------------------------------------------------- bidirectional


class ReverseNotFlipped(ScratchLSTM):
    """Reverse-direction outputs left in processing order instead of flipped back to time order (pitfall 4.4); shows for bidirectional dense input."""

    def _run_direction(self, x, h, c, w, reverse):
        out, state = super()._run_direction(x, h, c, w, reverse)
        return (out.flip(0) if reverse else out), state


class OnnxOutputReshape(ScratchLSTM):
    """Stacks directions ONNX-style [L, D, N, H] and reshapes to [L, N, D*H] without permuting (pitfall 4.5, onnx/onnx#921); shows for bidirectional dense input with batch >= 2."""

    def _combine_directions(self, outputs):
        if len(outputs) == 1:
            return outputs[0]
        return torch.stack(outputs, 1).reshape(*outputs[0].shape[:-1], -1)


class ReverseUsesForwardWeights(ScratchLSTM):
    """Loads the forward-direction weights into the reverse direction of layers k > 0 (pitfall 4.6, huggingface/candle#2351); shows for bidirectional with num_layers >= 2."""

    def _weights(self, layer, direction):
        return super()._weights(layer, 0 if layer > 0 else direction)


# ---------------------------------------------------------------------------- multi-layer


class SharedHiddenWeights(ScratchLSTM):
    """Every layer uses layer 0's weight_hh (same shape for all layers, so it runs) (pitfall 4.6, weight loading); shows with num_layers >= 2."""

    def _weights(self, layer, direction):
        return super()._weights(layer, direction)._replace(w_hh=super()._weights(0, direction).w_hh)


# ---------------------------------------------------------------------------- packed input


class PackedReverseFromPaddedEnd(ScratchLSTM):
    """Packed input: the reverse direction runs over the padded tensor from the padded end, not each sequence's own end (pitfall 4.4, pytorch/pytorch#3662); shows for bidirectional packed input with unequal lengths."""

    def _run_packed_direction(self, data, batch_sizes, h0, c0, w, reverse):
        if not reverse:
            return super()._run_packed_direction(data, batch_sizes, h0, c0, w, reverse)
        out, state = self._run_direction(packed_to_padded(data, batch_sizes), h0, c0, w, reverse)
        return padded_to_packed(out, batch_sizes), state


class PackedFinalStateAtPaddedEnd(ScratchLSTM):
    """Packed input: the forward final state is taken after the last padded step, not each sequence's own last step (pitfall 4.4); shows in h_n/c_n for packed input with unequal lengths."""

    def _run_packed_direction(self, data, batch_sizes, h0, c0, w, reverse):
        if reverse:
            return super()._run_packed_direction(data, batch_sizes, h0, c0, w, reverse)
        out, state = self._run_direction(packed_to_padded(data, batch_sizes), h0, c0, w, reverse)
        return padded_to_packed(out, batch_sizes), state


class HxNotPermuted(ScratchLSTM):
    """enforce_sorted=False: the caller's hx is used without permuting it by sorted_indices (pitfall 4.10); shows for packed unsorted input with hx given."""

    def _permute_hx(self, hx, sorted_indices):
        return hx[0], hx[1]


class CPermutedFromH(ScratchLSTM):
    """enforce_sorted=False: c0 is permuted from h0's tensor (copy-paste slip, pitfall 4.3, salesforce/decaNLP#9); shows for packed unsorted input with hx given."""

    def _permute_hx(self, hx, sorted_indices):
        if sorted_indices is None:
            return hx
        return hx[0].index_select(1, sorted_indices), hx[0].index_select(1, sorted_indices)


class StatesNotUnpermuted(ScratchLSTM):
    """enforce_sorted=False: h_n/c_n returned in sorted order, not un-permuted by unsorted_indices; shows for packed unsorted input."""

    def _unpermute_states(self, h_n, c_n, packed):
        return h_n, c_n


class StableResort(ScratchLSTM):
    """enforce_sorted=False: re-derives the unsort order with its own stable argsort of lengths, which differs from torch's unstable sort on ties (pitfall 4.10); shows only for batch >= 17 with tied lengths."""

    def _unpermute_states(self, h_n, c_n, packed: PackedSequence):
        if packed.unsorted_indices is None:
            return h_n, c_n
        sizes = packed.batch_sizes
        sorted_lengths = torch.stack([(sizes > r).sum() for r in range(int(sizes[0]))])
        lengths = sorted_lengths.index_select(0, packed.unsorted_indices)  # caller's order
        own_sorted = torch.argsort(lengths, descending=True, stable=True)
        own_unsorted = torch.argsort(own_sorted)
        return h_n.index_select(1, own_unsorted), c_n.index_select(1, own_unsorted)


# ---------------------------------------------------------------------------- dropout


class DropoutInEval(ScratchLSTM):
    """Applies inter-layer dropout regardless of .train()/.eval(); shows in eval mode with dropout > 0 and num_layers >= 2."""

    def _layer_output_dropout(self, output, layer):
        if layer < self.num_layers - 1 and self.dropout > 0:
            return F.dropout(output, self.dropout, training=True)
        return output


class DropoutAfterLastLayer(ScratchLSTM):
    """Applies dropout after the last layer as well (torch never drops the final output); shows in training mode with dropout > 0."""

    def _layer_output_dropout(self, output, layer):
        return F.dropout(output, self.dropout, training=self.training)


class RecurrentDropout(ScratchLSTM):
    """Applies dropout to the recurrent h_{t-1} (Keras recurrent_dropout reading), so even layer-0 states are dropped; shows in training mode with dropout > 0."""

    def _recurrent_dropout(self, h):
        return F.dropout(h, self.dropout, training=self.training)


# ---------------------------------------------------------------------------- hx handling and state


class C0Ignored(ScratchLSTM):
    """Ignores the given c0 and starts c from zeros; shows when hx is given."""

    def _initial_states(self, hx):
        return hx[0], torch.zeros_like(hx[1])


class SwappedHC(ScratchLSTM):
    """Unpacks the caller's hx as (c0, h0) instead of (h0, c0) (pitfall 4.3, tracel-ai/burn#5234); shows when hx is given (raises with proj_size)."""

    def _initial_states(self, hx):
        return hx[1], hx[0]


class Stateful(ScratchLSTM):
    """Streaming port: with hx=None it continues from the previous call's final state; shows on a second call."""

    def forward(self, input, hx=None):
        if hx is None and getattr(self, "_carry", None) is not None:
            hx = self._carry
        output, (h_n, c_n) = super().forward(input, hx)
        self._carry = (h_n.detach(), c_n.detach())
        return output, (h_n, c_n)


class UpdatesC0InPlace(ScratchLSTM):
    """Writes c_n into the caller's c0 tensor (uses hx as its state buffer); shows as input mutation when hx is given."""

    def forward(self, input, hx=None):
        output, (h_n, c_n) = super().forward(input, hx)
        if hx is not None and hx[1].shape == c_n.shape:
            with torch.no_grad():
                hx[1].copy_(c_n)
        return output, (h_n, c_n)


# ---------------------------------------------------------------------------- input layout and memory


class UnbatchedBatchFirstDim0(ScratchLSTM):
    """Unbatched input with batch_first=True: inserts the batch dim at 1 as for time-major, so dim 0 is read as batch; shows for unbatched input with batch_first=True."""

    def _add_batch_dim(self, input):
        return input.unsqueeze(1)


class SqueezeBatch(ScratchLSTM):
    """Calls input.squeeze() to accept (L, 1, H_in), so batch size 1 (or seq_len/input_size 1) is misread as unbatched; shows for batch size 1."""

    def _prepare_input(self, input):
        return input.squeeze()


class NumpyKernel(ScratchLSTM):
    """Wrapper around a NumPy kernel: calls input.numpy(), which raises for inputs that require grad; shows with requires_grad inputs."""

    def _prepare_input(self, input):
        return torch.from_numpy(input.numpy())


class AssumesContiguous(ScratchLSTM):
    """Reads the input's storage with C-contiguous strides (as a raw-pointer kernel would); shows for non-contiguous (transposed or strided) inputs."""

    def _prepare_input(self, input):
        strides, step = [], 1
        for size in reversed(input.shape):
            strides.insert(0, step)
            step *= size
        return input.as_strided(input.shape, strides)


class MaxSteps64(ScratchLSTM):
    """Fixed 64-step state buffer: every 64-step chunk restarts from h0/c0; shows only for dense sequences longer than 64."""

    MAX_STEPS = 64

    def _run_direction(self, x, h, c, w, reverse):
        if x.shape[0] <= self.MAX_STEPS:
            return super()._run_direction(x, h, c, w, reverse)
        chunks = [super(MaxSteps64, self)._run_direction(part, h, c, w, reverse) for part in x.split(self.MAX_STEPS)]
        final = chunks[0][1] if reverse else chunks[-1][1]
        return torch.cat([out for out, _ in chunks], 0), final


# ---------------------------------------------------------------------------- registries

CATALOGUE: dict[str, type] = {
    "onnx-gate-order": OnnxGateOrder,
    "tf-forget-bias": TfForgetBias,
    "single-bias": SingleBias,
    "hidden-tile-64": HiddenTile64,
    "float32-inside": Float32Inside,
    "hn-direction-major": HnDirectionMajor,
    "hn-batch-first": HnBatchFirst,
    "cn-projected": CnProjected,
    "hidden-init-no-directions": HiddenInitNoDirections,
    "reverse-not-flipped": ReverseNotFlipped,
    "onnx-output-reshape": OnnxOutputReshape,
    "reverse-uses-forward-weights": ReverseUsesForwardWeights,
    "shared-hidden-weights": SharedHiddenWeights,
    "packed-reverse-from-padded-end": PackedReverseFromPaddedEnd,
    "packed-final-state-at-padded-end": PackedFinalStateAtPaddedEnd,
    "hx-not-permuted": HxNotPermuted,
    "c-permuted-from-h": CPermutedFromH,
    "states-not-unpermuted": StatesNotUnpermuted,
    "stable-resort": StableResort,
    "dropout-in-eval": DropoutInEval,
    "dropout-after-last-layer": DropoutAfterLastLayer,
    "recurrent-dropout": RecurrentDropout,
    "c0-ignored": C0Ignored,
    "swapped-hc": SwappedHC,
    "stateful": Stateful,
    "updates-c0-in-place": UpdatesC0InPlace,
    "unbatched-batch-first-dim0": UnbatchedBatchFirstDim0,
    "squeeze-batch": SqueezeBatch,
    "numpy-kernel": NumpyKernel,
    "assumes-contiguous": AssumesContiguous,
    "max-steps-64": MaxSteps64,
}

CORRECT: dict[str, type] = {"scratch": ScratchLSTM, "float64-inside": Float64InsideLSTM}

from .broken_dropout import *  # noqa: E402,F403 - the dropout axis' ports (DROPOUT_CATALOGUE, DROPOUT_CORRECT)
CATALOGUE.update(DROPOUT_CATALOGUE)  # noqa: F405
CORRECT.update(DROPOUT_CORRECT)  # noqa: F405
from .broken_layouts import *  # noqa: E402,F403 - the layouts axis' ports (LAYOUTS_CATALOGUE, LAYOUTS_CORRECT)
CATALOGUE.update(LAYOUTS_CATALOGUE)  # noqa: F405
CORRECT.update(LAYOUTS_CORRECT)  # noqa: F405
from .broken_sizes import *  # noqa: E402,F403 - the sizes axis' ports (SIZES_CATALOGUE, SIZES_CORRECT)
CATALOGUE.update(SIZES_CATALOGUE)  # noqa: F405
CORRECT.update(SIZES_CORRECT)  # noqa: F405
from .broken_values import *  # noqa: E402,F403 - the values axis' ports (VALUES_CATALOGUE, VALUES_CORRECT)
CATALOGUE.update(VALUES_CATALOGUE)  # noqa: F405
CORRECT.update(VALUES_CORRECT)  # noqa: F405
from .broken_dtypes import *  # noqa: E402,F403 - the half-precision ports (DTYPES_CATALOGUE, DTYPES_CORRECT)
CATALOGUE.update(DTYPES_CATALOGUE)  # noqa: F405
CORRECT.update(DTYPES_CORRECT)  # noqa: F405
from .broken_gradients import *  # noqa: E402,F403 - the gradients' ports (GRADIENTS_CATALOGUE, GRADIENTS_CORRECT)
CATALOGUE.update(GRADIENTS_CATALOGUE)  # noqa: F405
CATALOGUE.update(DOUBLE_BACKWARD_CATALOGUE)  # noqa: F405
CORRECT.update(GRADIENTS_CORRECT)  # noqa: F405
