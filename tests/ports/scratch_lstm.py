"""A correct drop-in replacement for ``torch.nn.LSTM``, written from plain torch ops.

Why this file exists
--------------------
* It is a **known-correct port written independently of torch's kernels**: no ``nn.LSTM``, no
  ``_VF``, no ``torch.nn.utils.rnn`` internals beyond the ``PackedSequence`` type and its four
  fields.  The conformance suite must pass it (tolerance-level differences only: on float32,
  torch's oneDNN path and this loop differ by about 1e-7).
* It is the **base that the broken catalogue (``broken.py``) mutates**.  Every step of the
  computation is a small overridable method, so each realistic porting bug is one subclass that
  overrides one method.  A suite that passes :class:`ScratchLSTM` and fails every class of the
  catalogue is shown to both accept correct ports and catch the bugs.

Semantics follow ``torch-lstm-2.13.md`` section 2: gate rows ``[i | f | g | o]``, both biases,
``c`` never projected, ``h_n``/``c_n`` indexed ``layer * D + direction`` and never batch_first,
reverse direction of packed input starting at each sequence's own last step, ``hx`` for packed
input given in the caller's batch order (permuted with ``sorted_indices``; the states returned
un-permuted with ``unsorted_indices``), dropout between layers only in training mode.

:class:`Float64InsideLSTM` is the same port computing in float64 internally (results cast back to
the module dtype): a correct port that is *more* accurate than torch on float32 models.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = [
    "ScratchLSTM",
    "Float64InsideLSTM",
    "LayerWeights",
    "packed_to_padded",
    "padded_to_packed",
]


class LayerWeights(NamedTuple):
    """The parameters of one (layer, direction), already cast to the compute dtype."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor]
    b_hh: Optional[Tensor]
    w_hr: Optional[Tensor]


def _offsets(batch_sizes: Sequence[int]) -> List[int]:
    starts, total = [], 0
    for b in batch_sizes:
        starts.append(total)
        total += b
    return starts


def packed_to_padded(data: Tensor, batch_sizes: Tensor) -> Tensor:
    """Time-major zero-padded ``(T, batch_sizes[0], F)`` tensor from packed ``data`` (sorted order)."""
    sizes = [int(b) for b in batch_sizes]
    rows = []
    for start, b in zip(_offsets(sizes), sizes):
        row = data[start:start + b]
        if b < sizes[0]:
            row = torch.cat([row, data.new_zeros((sizes[0] - b,) + tuple(data.shape[1:]))], 0)
        rows.append(row)
    return torch.stack(rows, 0)


def padded_to_packed(padded: Tensor, batch_sizes: Tensor) -> Tensor:
    """Inverse of :func:`packed_to_padded`: keep rows ``[0:batch_sizes[t]]`` of every step."""
    sizes = [int(b) for b in batch_sizes]
    return torch.cat([padded[t, :b] for t, b in enumerate(sizes)], 0)


class ScratchLSTM(nn.Module):
    """Drop-in for ``torch.nn.LSTM`` built from torch ops (see the module docstring)."""

    #: dtype the recurrence is computed in; ``None`` means the parameters' dtype.
    compute_dtype: Optional[torch.dtype] = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self._validate_arguments(dropout)

        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        gate_size = 4 * hidden_size
        self._flat_weights_names: List[str] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for stem, shape in shapes:
                    name = self._param_name(stem, layer, direction)
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    # ------------------------------------------------------------------ construction helpers

    def _validate_arguments(self, dropout) -> None:
        """The constructor checks of ``RNNBase.__init__``, in torch's order and wording."""
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and self.num_layers == 1:
            self._warn_dropout(dropout)
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(self.bias).__name__}")
        if not isinstance(self.batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(self.batch_first).__name__}")
        if not isinstance(self.input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(self.input_size).__name__}")
        if self.input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(self.hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(self.hidden_size).__name__}")
        if self.hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if self.num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if self.proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if self.proj_size >= self.hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

    def _warn_dropout(self, dropout) -> None:
        """torch's UserWarning for dropout with a single layer (dropout would never apply)."""
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={self.num_layers}",
            stacklevel=4,  # _warn_dropout <- _validate_arguments <- __init__ <- the caller
        )

    @staticmethod
    def _param_name(stem: str, layer: int, direction: int) -> str:
        return f"{stem}_l{layer}{'_reverse' if direction == 1 else ''}"

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) for every parameter, in registration order."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, present so code written for ``nn.LSTM`` can call it."""

    @property
    def all_weights(self) -> List[List[Tensor]]:
        per = len(self._flat_weights_names) // (self.num_layers * self._num_directions)
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i:i + per]] for i in range(0, len(names), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # ------------------------------------------------------------------ small properties

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _real_hidden_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def _param_dtype(self) -> torch.dtype:
        return getattr(self, self._flat_weights_names[0]).dtype

    def _compute_dtype(self) -> torch.dtype:
        return self.compute_dtype if self.compute_dtype is not None else self._param_dtype

    # ------------------------------------------------------------------ forward: entry points

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        return self._forward_dense(input, hx)

    def _forward_dense(self, input: Tensor, hx):
        input = self._prepare_input(input)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        if not is_batched:
            input = self._add_batch_dim(input)
        batch = input.size(0) if self.batch_first else input.size(1)
        hx_given = hx is not None
        if not hx_given:
            hx = self._zero_states(batch, input)
        else:
            if is_batched:
                if hx[0].dim() != 3 or hx[1].dim() != 3:
                    raise RuntimeError(
                        "For batched 3-D input, hx and cx should also be 3-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
            else:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self._check_forward_args(input, hx, batch)
        self._check_kernel_args(hx)
        self._check_sequence_length(input.size(1) if self.batch_first else input.size(0))

        x = input.transpose(0, 1) if self.batch_first else input
        h0, c0 = self._initial_states(hx) if hx_given else hx
        output, (h_n, c_n) = self._compute(x, h0, c0, None)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = self._remove_batch_dim(output)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _forward_packed(self, input: PackedSequence, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        self._check_packed_args(data, batch_sizes, hx)
        batch = int(batch_sizes[0])
        if hx is None:
            h0, c0 = self._zero_states(batch, data)
        else:
            h0, c0 = self._initial_states(self._permute_hx(hx, sorted_indices))
        output, (h_n, c_n) = self._compute(data, h0, c0, batch_sizes)
        h_n, c_n = self._unpermute_states(h_n, c_n, input)
        return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)

    # ------------------------------------------------------------------ forward: input / hx handling

    def _prepare_input(self, input: Tensor) -> Tensor:
        """Hook on the raw dense input before anything else (identity)."""
        return input

    def _add_batch_dim(self, input: Tensor) -> Tensor:
        """Unbatched (L, H_in) -> batched layout with N=1 (batch dim 0 if batch_first)."""
        return input.unsqueeze(0 if self.batch_first else 1)

    def _remove_batch_dim(self, output: Tensor) -> Tensor:
        return output.squeeze(0 if self.batch_first else 1)

    def _zero_states(self, batch: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        n = self.num_layers * self._num_directions
        h = torch.zeros(n, batch, self._real_hidden_size, dtype=like.dtype, device=like.device)
        c = torch.zeros(n, batch, self.hidden_size, dtype=like.dtype, device=like.device)
        return h, c

    # Validation.  The dense checks are torch's own Python checks, in its order and wording (same
    # exception type and message).  What torch leaves to C++ (_VF.lstm) is checked after them, with
    # clear messages of our own: hx structure and dtype, argument types, sequence length 0.  Packed
    # input gets no Python checks in torch 2.13 (bad hx there gives incidental C++ errors, is
    # silently accepted, or segfaults; torch-lstm-2.13.md 1c), so it gets the same checks here.

    def _check_forward_args(self, input: Tensor, hx, batch: int) -> None:
        """``LSTM.check_forward_args`` for the dense path (messages as torch words them)."""
        self._check_input(input)
        self._check_hidden_size(hx, batch)

    def _check_input(self, input: Tensor) -> None:
        """``RNNBase.check_input``: dtype, then the feature size."""
        if input.dtype != self._param_dtype and not _autocast_enabled():
            w = self._param_dtype
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({w}). "
                f"Convert input: input.to({w}), or convert model: model.to({input.dtype})"
            )
        self._check_input_size(input.size(-1))

    def _check_input_size(self, features: int) -> None:
        if self.input_size != features:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {features}"
            )

    def _check_hidden_size(self, hx, batch: int) -> None:
        """h0 must be ``(L*D, N, Hout)`` and c0 ``(L*D, N, H)``; each is checked on its own."""
        n = self.num_layers * self._num_directions
        for k, expected in ((0, (n, batch, self._real_hidden_size)), (1, (n, batch, self.hidden_size))):
            if hx[k].size() != expected:
                raise RuntimeError(f"Expected hidden[{k}] size {expected}, got {list(hx[k].size())}")

    def _check_hx_structure(self, hx) -> None:
        """hx must be a tuple (or list) of exactly two tensors, as ``_VF.lstm`` requires."""
        if not isinstance(hx, (tuple, list)):
            raise TypeError(f"LSTM: hx must be a tuple (h0, c0) of two tensors, got {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        for k, state in enumerate(hx):
            if not isinstance(state, Tensor):
                raise TypeError(f"LSTM: hx[{k}] must be a Tensor, got {type(state).__name__}")

    def _check_kernel_args(self, hx) -> None:
        """What ``_VF.lstm`` rejects after torch's Python checks: argument types, hx structure and dtype."""
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, numbers.Integral):
            raise TypeError(f"LSTM: num_layers must be an int, got {_type_name(self.num_layers)}")
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"LSTM: bidirectional must be a bool, got {_type_name(self.bidirectional)}")
        if hx is None:
            return
        self._check_hx_structure(hx)
        for k, state in enumerate(hx):
            if state.dtype != self._param_dtype:
                raise RuntimeError(
                    f"LSTM: hx[{k}] dtype ({state.dtype}) does not match weight dtype ({self._param_dtype})"
                )

    def _check_sequence_length(self, seq_len: int) -> None:
        if seq_len == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def _check_packed_args(self, data: Tensor, batch_sizes: Tensor, hx) -> None:
        """Packed input: the data like a dense input, then hx in the caller's order (before permuting)."""
        if data.dim() != 2:
            raise RuntimeError(f"LSTM: packed data must be 2-D (rows, input_size), got {data.dim()}-D")
        sizes = self._check_batch_sizes(data, batch_sizes)
        self._check_input(data)
        if hx is not None:
            self._check_hx_structure(hx)
            if hx[0].dim() != 3 or hx[1].dim() != 3:
                raise RuntimeError(
                    "For packed input, hx and cx should be 3-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            self._check_hidden_size(hx, sizes[0])
        self._check_kernel_args(hx)

    def _check_batch_sizes(self, data: Tensor, batch_sizes: Tensor) -> List[int]:
        """A packed input's batch_sizes as torch's packing functions make them: a non-empty 1-D int64
        tensor of positive, non-increasing counts of the data's rows.  Returns them as a list."""
        sizes = batch_sizes.tolist() if batch_sizes.dim() == 1 else None
        if batch_sizes.dtype != torch.int64 or not sizes:
            raise RuntimeError(f"LSTM: batch_sizes must be a non-empty 1-D int64 tensor, got {batch_sizes!r}")
        if sizes[-1] <= 0 or any(a < b for a, b in zip(sizes, sizes[1:])) or sum(sizes) != data.size(0):
            raise RuntimeError(
                f"LSTM: batch_sizes {sizes} must be positive, non-increasing and sum to the {data.size(0)} data rows"
            )
        return sizes

    def _initial_states(self, hx) -> Tuple[Tensor, Tensor]:
        """Unpack the caller's hx (already batched, and for packed input already permuted) as (h0, c0)."""
        return hx[0], hx[1]

    def _permute_hx(self, hx, sorted_indices: Optional[Tensor]):
        """Packed input: hx arrives in the caller's order; reorder it to the sorted batch."""
        if sorted_indices is None:
            return hx
        return hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices)

    def _unpermute_states(self, h_n: Tensor, c_n: Tensor, packed: PackedSequence):
        """Packed input: put the final states back into the caller's order."""
        if packed.unsorted_indices is None:
            return h_n, c_n
        return h_n.index_select(1, packed.unsorted_indices), c_n.index_select(1, packed.unsorted_indices)

    # ------------------------------------------------------------------ forward: the stacked recurrence

    def _compute(self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: Optional[Tensor]):
        """Cast to the compute dtype, run all layers, cast the results back to the module dtype."""
        cd, out_dtype = self._compute_dtype(), self._param_dtype
        output, (h_n, c_n) = self._run_layers(x.to(cd), h0.to(cd), c0.to(cd), batch_sizes)
        return output.to(out_dtype), (h_n.to(out_dtype), c_n.to(out_dtype))

    def _state_index(self, layer: int, direction: int) -> int:
        """Index of (layer, direction) in h0/c0/h_n/c_n."""
        return layer * self._num_directions + direction

    def _weights(self, layer: int, direction: int) -> LayerWeights:
        cd = self._compute_dtype()

        def get(stem):
            name = self._param_name(stem, layer, direction)
            return getattr(self, name).to(cd) if name in self._flat_weights_names else None

        return LayerWeights(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr"))

    def _run_layers(self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: Optional[Tensor]):
        num_directions = self._num_directions
        h_final: List[Optional[Tensor]] = [None] * (self.num_layers * num_directions)
        c_final: List[Optional[Tensor]] = [None] * (self.num_layers * num_directions)
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                idx = self._state_index(layer, direction)
                w = self._weights(layer, direction)
                reverse = direction == 1
                if batch_sizes is None:
                    out, (h, c) = self._run_direction(layer_input, h0[idx], c0[idx], w, reverse)
                else:
                    out, (h, c) = self._run_packed_direction(layer_input, batch_sizes, h0[idx], c0[idx], w, reverse)
                outputs.append(out)
                h_final[idx], c_final[idx] = h, c
            layer_output = self._combine_directions(outputs)
            layer_input = self._layer_output_dropout(layer_output, layer)
        h_n, c_n = self._arrange_final_states(h_final, c_final)
        return layer_input, (h_n, c_n)

    def _combine_directions(self, outputs: List[Tensor]) -> Tensor:
        """[forward | reverse] along the feature dimension."""
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def _layer_output_dropout(self, output: Tensor, layer: int) -> Tensor:
        """Dropout on the output of every layer but the last, only in training mode."""
        if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
            return F.dropout(output, self.dropout, training=True)
        return output

    def _arrange_final_states(self, h_final: List[Tensor], c_final: List[Tensor]):
        """Stack the per-(layer, direction) final states, already ordered by :meth:`_state_index`."""
        return torch.stack(h_final, 0), torch.stack(c_final, 0)

    # ------------------------------------------------------------------ forward: one direction of one layer

    def _run_direction(self, x: Tensor, h: Tensor, c: Tensor, w: LayerWeights, reverse: bool):
        """Dense time-major ``x`` (T, N, F). Returns the outputs in time order and the final (h, c)."""
        pre = self._input_projection(x, w)
        steps = x.shape[0]
        outputs: List[Optional[Tensor]] = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            h, c = self._cell(pre[t], h, c, w)
            outputs[t] = h
        h, c = self._final_state(h, c, w)
        return torch.stack(outputs, 0), (h, c)

    def _run_packed_direction(self, data: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor,
                              w: LayerWeights, reverse: bool):
        """Packed ``data`` (sum(batch_sizes), F), rows of step t are ``[0:batch_sizes[t]]``.

        Forward: a sequence's final state is the state after its own last step.  Reverse: a
        sequence starts from h0/c0 at its own last step, so rows are added as they become active.
        """
        pre = self._input_projection(data, w)
        sizes = [int(b) for b in batch_sizes]
        starts = _offsets(sizes)
        outputs: List[Optional[Tensor]] = [None] * len(sizes)
        if not reverse:
            h, c = h0, c0
            finished_h, finished_c = [], []
            for t, b in enumerate(sizes):
                if b < h.shape[0]:
                    finished_h.append(h[b:])
                    finished_c.append(c[b:])
                    h, c = h[:b], c[:b]
                h, c = self._cell(pre[starts[t]:starts[t] + b], h, c, w)
                outputs[t] = h
            h = torch.cat([h] + finished_h[::-1], 0)
            c = torch.cat([c] + finished_c[::-1], 0)
        else:
            h, c = h0[:sizes[-1]], c0[:sizes[-1]]
            for t in range(len(sizes) - 1, -1, -1):
                b = sizes[t]
                if b > h.shape[0]:
                    h = torch.cat([h, h0[h.shape[0]:b]], 0)
                    c = torch.cat([c, c0[c.shape[0]:b]], 0)
                h, c = self._cell(pre[starts[t]:starts[t] + b], h, c, w)
                outputs[t] = h
        h, c = self._final_state(h, c, w)
        return torch.cat(outputs, 0), (h, c)

    def _final_state(self, h: Tensor, c: Tensor, w: LayerWeights):
        """The (h, c) a direction reports as its final state (h is already projected)."""
        return h, c

    # ------------------------------------------------------------------ the cell

    def _input_projection(self, x: Tensor, w: LayerWeights) -> Tensor:
        """W_ih x + b_ih for all steps at once."""
        return F.linear(x, w.w_ih, w.b_ih)

    def _recurrent_projection(self, h: Tensor, w: LayerWeights) -> Tensor:
        """W_hh h + b_hh."""
        return F.linear(h, w.w_hh, w.b_hh)

    def _recurrent_dropout(self, h: Tensor) -> Tensor:
        """Hook on h_{t-1} before the recurrent matmul (identity: torch never drops it)."""
        return h

    def _gates(self, gates: Tensor):
        """Split the 4H pre-activations into (i, f, g, o): torch's row order."""
        i, f, g, o = gates.chunk(4, dim=-1)
        return i, f, g, o

    def _cell(self, pre_t: Tensor, h: Tensor, c: Tensor, w: LayerWeights):
        gates = pre_t + self._recurrent_projection(self._recurrent_dropout(h), w)
        i, f, g, o = self._gates(gates)
        i, f, g, o = self._sigmoid(i), self._sigmoid(f), self._tanh(g), self._sigmoid(o)
        c = self._cell_state(f, c, i, g)
        h = o * self._tanh(c)
        return self._project(h, w), c

    def _sigmoid(self, x: Tensor) -> Tensor:
        """The gates' activation."""
        return torch.sigmoid(x)

    def _tanh(self, x: Tensor) -> Tensor:
        """The cell candidate's and the cell output's activation."""
        return torch.tanh(x)

    def _cell_state(self, f: Tensor, c: Tensor, i: Tensor, g: Tensor) -> Tensor:
        """c_t = f * c_{t-1} + i * g."""
        return f * c + i * g

    def _project(self, h: Tensor, w: LayerWeights) -> Tensor:
        """h <- W_hr h when proj_size > 0 (c is never projected)."""
        return h if w.w_hr is None else F.linear(h, w.w_hr)


class Float64InsideLSTM(ScratchLSTM):
    """A correct port that computes in float64 and casts the results back to the module dtype."""

    compute_dtype = torch.float64


def _type_name(value) -> str:
    """``int``, ``str``, ``numpy.bool``: a type name that tells numpy's scalars from Python's."""
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


def _autocast_enabled() -> bool:
    check = getattr(torch._C, "_is_any_autocast_enabled", None)
    return bool(check()) if check is not None else False
