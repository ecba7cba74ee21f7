"""Broken and correct ports whose bugs live past the boundaries kernels tile sizes at.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with ONE remainder bug of a
tiled kernel: a batch tile, an input-feature block, a projection tile, a time chunk, a layer
count.  Each is right below its boundary (a single-tile fast path, or fewer layers than the limit),
so it shows only on sizes just past the boundary: batches of 33+ rows, 129+ input or projected
features, 257+ steps, 5+ layers.  The correct :class:`TiledLSTM` computes in such tiles, but
correctly, and differs from torch only in rounding.

``SIZES_CATALOGUE`` maps a kebab-case name to each broken class; ``SIZES_CORRECT`` lists the
correct ports.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from .scratch_lstm import ScratchLSTM

__all__ = ["SIZES_CATALOGUE", "SIZES_CORRECT", "BatchTile32", "InputBlock128", "ProjTile128", "MaxSteps256",
           "WeightsForFourLayers", "TiledLSTM"]


class BatchTile32(ScratchLSTM):
    """Runs the batch in tiles of 32 rows and never writes the partial last tile, whose rows keep zero states (a tile loop without its tail); shows only for batches of 33+ rows that are not a multiple of 32."""

    TILE = 32

    def _cell(self, pre_t, h, c, w):
        rows = pre_t.shape[0]
        if rows <= self.TILE:  # one tile: the single-tile fast path is right
            return super()._cell(pre_t, h, c, w)
        full = rows // self.TILE * self.TILE
        h_new, c_new = super()._cell(pre_t[:full], h[:full], c[:full], w)
        return (torch.cat([h_new, h_new.new_zeros((rows - full,) + h_new.shape[1:])]),
                torch.cat([c_new, c_new.new_zeros((rows - full,) + c_new.shape[1:])]))


class InputBlock128(ScratchLSTM):
    """The first layer's input projection (one GEMM over all steps) multiplies in K-blocks of 128 input features and skips the partial last block; shows only for input_size past 128 that is not a multiple of it."""

    BLOCK = 128

    def _weights(self, layer, direction):
        w = super()._weights(layer, direction)
        features = w.w_ih.shape[1]
        if layer > 0 or features <= self.BLOCK:
            return w
        full = features // self.BLOCK * self.BLOCK
        # skipping the features past the last full block is the same arithmetic as zero weights for them
        return w._replace(w_ih=torch.cat([w.w_ih[:, :full], torch.zeros_like(w.w_ih[:, full:])], 1))


class ProjTile128(ScratchLSTM):
    """Computes the projection W_hr h in tiles of 128 output features and never writes the partial last tile (zeros there); shows only for proj_size past 128 that is not a multiple of it."""

    TILE = 128

    def _project(self, h, w):
        if w.w_hr is None or self.proj_size <= self.TILE:  # one tile: the fast path is right
            return super()._project(h, w)
        full = self.proj_size // self.TILE * self.TILE
        out = F.linear(h, w.w_hr[:full])
        return torch.cat([out, out.new_zeros(out.shape[:-1] + (self.proj_size - full,))], -1)


class MaxSteps256(ScratchLSTM):
    """Fixed 256-step state buffer: every 256-step chunk restarts from h0/c0; shows only for dense sequences longer than 256 steps."""

    MAX_STEPS = 256

    def _run_direction(self, x, h, c, w, reverse):
        if x.shape[0] <= self.MAX_STEPS:
            return super()._run_direction(x, h, c, w, reverse)
        chunks = [super(MaxSteps256, self)._run_direction(part, h, c, w, reverse) for part in x.split(self.MAX_STEPS)]
        final = chunks[0][1] if reverse else chunks[-1][1]
        return torch.cat([out for out, _ in chunks], 0), final


class WeightsForFourLayers(ScratchLSTM):
    """Weight loading sized for at most 4 layers: layers past the 4th run with layer 3's weights (the same shapes, so it runs); shows only for num_layers > 4."""

    MAX_LAYERS = 4

    def _weights(self, layer, direction):
        return super()._weights(min(layer, self.MAX_LAYERS - 1), direction)


class TiledLSTM(ScratchLSTM):
    """A correct port that computes in tiles: 32 batch rows, 64 hidden units per gate, 128 input and
    projected features, 256 time steps, each remainder handled (it differs from torch in rounding only)."""

    BATCH_TILE, HIDDEN_TILE, FEATURE_TILE, STEP_CHUNK = 32, 64, 128, 256

    def _input_projection(self, x, w):
        """W_ih x + b_ih, summed over blocks of input features."""
        total = None
        for start in range(0, x.shape[-1], self.FEATURE_TILE):
            part = F.linear(x[..., start:start + self.FEATURE_TILE], w.w_ih[:, start:start + self.FEATURE_TILE])
            total = part if total is None else total + part
        return total if w.b_ih is None else total + w.b_ih

    def _recurrent_projection(self, h, w):
        """W_hh h + b_hh, one tile of hidden units of each gate at a time."""
        hidden = self.hidden_size
        tiles: List[torch.Tensor] = []
        for gate in range(4):
            for start in range(gate * hidden, (gate + 1) * hidden, self.HIDDEN_TILE):
                stop = min(start + self.HIDDEN_TILE, (gate + 1) * hidden)
                bias = None if w.b_hh is None else w.b_hh[start:stop]
                tiles.append(F.linear(h, w.w_hh[start:stop], bias))
        return torch.cat(tiles, -1)

    def _cell(self, pre_t, h, c, w):
        """The cell on one tile of batch rows at a time."""
        if pre_t.shape[0] <= self.BATCH_TILE:
            return super()._cell(pre_t, h, c, w)
        parts = [super(TiledLSTM, self)._cell(pre_t[i:i + self.BATCH_TILE], h[i:i + self.BATCH_TILE],
                                              c[i:i + self.BATCH_TILE], w)
                 for i in range(0, pre_t.shape[0], self.BATCH_TILE)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _project(self, h, w):
        """W_hr h in tiles of projected features."""
        if w.w_hr is None:
            return h
        return torch.cat([F.linear(h, w.w_hr[start:start + self.FEATURE_TILE])
                          for start in range(0, w.w_hr.shape[0], self.FEATURE_TILE)], -1)

    def _run_direction(self, x, h, c, w, reverse):
        """Dense input in chunks of steps, each chunk starting from the state the one before it ended in."""
        chunks = list(x.split(self.STEP_CHUNK))
        outputs = [None] * len(chunks)
        for i in (range(len(chunks) - 1, -1, -1) if reverse else range(len(chunks))):
            outputs[i], (h, c) = self._run_chunk(chunks[i], h, c, w, reverse)
        h, c = self._final_state(h, c, w)
        return torch.cat(outputs, 0), (h, c)

    def _run_chunk(self, x, h, c, w, reverse):
        pre = self._input_projection(x, w)
        outputs = [None] * x.shape[0]
        for t in (range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])):
            h, c = self._cell(pre[t], h, c, w)
            outputs[t] = h
        return torch.stack(outputs, 0), (h, c)


SIZES_CATALOGUE: dict[str, type] = {
    "batch-tile-32": BatchTile32,
    "input-block-128": InputBlock128,
    "proj-tile-128": ProjTile128,
    "max-steps-256": MaxSteps256,
    "weights-for-four-layers": WeightsForFourLayers,
}

SIZES_CORRECT: dict[str, type] = {"tiled": TiledLSTM}
