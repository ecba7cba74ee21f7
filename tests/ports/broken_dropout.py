"""Drop-in ports with one training-mode dropout bug each, and correct ports that draw masks their own way.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with one realistic dropout bug
(the one-line docstring says which, and on which inputs it shows).  Some show on a single call (no
legal mask explains the result); the others draw a legal mask on every call and show only in the
statistics of the masks recovered from many calls (``conformance.dropout.mask_statistics``).

``DROPOUT_CATALOGUE`` maps a short kebab-case name to each broken class; ``DROPOUT_CORRECT`` lists
correct ports the suite must accept: they differ from torch only in how they draw their masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .scratch_lstm import ScratchLSTM

__all__ = ["DROPOUT_CATALOGUE", "DROPOUT_CORRECT", "DropoutKeepsWithProbabilityP", "DropoutUnscaled",
           "DropoutScaledByInverseP", "DropoutOnInput", "DropoutMaskPerSequence", "DropoutFixedSeed",
           "DropoutMaskSharedOverBatch", "DropoutStickyTraining", "NumpyRngDropout", "TransposedBernoulliDropout"]


class _MaskedDropout(ScratchLSTM):
    """ScratchLSTM whose inter-layer dropout multiplies by a mask that :meth:`_keep` draws (1 keeps, 0 drops)."""

    def _run_layers(self, x, h0, c0, batch_sizes):
        self._batch_sizes = batch_sizes  # packed input: which rows of the data belong to which step
        return super()._run_layers(x, h0, c0, batch_sizes)

    def _layer_output_dropout(self, output, layer):
        if layer < self.num_layers - 1 and 0 < self.dropout < 1 and self._dropping():
            return output * self._keep(output) * self._scale()
        return super()._layer_output_dropout(output, layer)

    def _dropping(self) -> bool:
        return self.training

    def _scale(self) -> float:
        return 1.0 / (1.0 - self.dropout)

    def _keep(self, output):
        return torch.bernoulli(torch.full_like(output, 1.0 - self.dropout))

    def _per_step(self, output, draw):
        """A mask with one row per (step, feature) or per (sequence, feature), laid out like ``output``:
        ``draw(steps, batch)`` gives a (steps, batch, F) mask for the time-major padded layout."""
        sizes = getattr(self, "_batch_sizes", None)
        if sizes is None:
            steps, batch = output.shape[0], output.shape[1]
            return draw(steps, batch)
        sizes = [int(b) for b in sizes]
        mask = draw(len(sizes), sizes[0])
        return torch.cat([mask[t, :b] for t, b in enumerate(sizes)], 0)


# ------------------------------------------------------------------- shows on a single call


class DropoutUnscaled(_MaskedDropout):
    """Non-inverted dropout: drops with probability p but leaves kept values unscaled (the scaling left to inference); shows in training with 0 < dropout < 1 and num_layers >= 2."""

    def _scale(self) -> float:
        return 1.0


class DropoutScaledByInverseP(_MaskedDropout):
    """Divides kept values by the dropout probability p instead of the keep probability 1 - p; shows in training with num_layers >= 2 and dropout not 0.5."""

    def _scale(self) -> float:
        return 1.0 / self.dropout


class DropoutOnInput(ScratchLSTM):
    """Drops the input of every layer, layer 0 included (a hand-written stack applying dropout before each layer, cf. AWD-LSTM's input dropout); shows in training with dropout > 0."""

    def _run_layers(self, x, h0, c0, batch_sizes):
        if self.training and self.dropout > 0:
            x = F.dropout(x, self.dropout, training=True)
        return super()._run_layers(x, h0, c0, batch_sizes)


class DropoutStickyTraining(_MaskedDropout):
    """Keeps its own flag for dropout, set by .train() and never cleared by .eval(); shows when one instance is called in training mode, then in eval mode."""

    def train(self, mode: bool = True):
        if mode:
            self.dropout_active = True
        return super().train(mode)

    def _dropping(self) -> bool:
        return getattr(self, "dropout_active", False)


# ------------------------------------------------------------------- shows only over many calls


class DropoutKeepsWithProbabilityP(_MaskedDropout):
    """Draws the keep mask as rand < p (p read as the keep probability) but scales by 1/(1-p): every mask is legal, but it drops with probability 1 - p; shows in the statistics of many calls, for dropout not 0.5."""

    def _keep(self, output):
        return (torch.rand_like(output) < self.dropout).to(output.dtype)


class DropoutMaskPerSequence(_MaskedDropout):
    """Variational dropout: one mask per sequence, reused at every time step (as Keras' LSTM dropout draws it); shows in the statistics of many calls with seq_len >= 2."""

    def _keep(self, output):
        features = output.shape[-1]
        return self._per_step(output, lambda steps, batch: torch.bernoulli(
            torch.full((1, batch, features), 1.0 - self.dropout, dtype=output.dtype)).expand(steps, batch, features))


class DropoutMaskSharedOverBatch(_MaskedDropout):
    """Draws a (T, 1, F) mask and broadcasts it over the batch, so every batch element is dropped alike; shows in the statistics of many calls with batch >= 2."""

    def _keep(self, output):
        features = output.shape[-1]
        return self._per_step(output, lambda steps, batch: torch.bernoulli(
            torch.full((steps, 1, features), 1.0 - self.dropout, dtype=output.dtype)).expand(steps, batch, features))


class DropoutFixedSeed(_MaskedDropout):
    """Seeds a fresh generator in forward (for reproducibility), so every call draws the same mask; shows in the statistics of many calls."""

    def forward(self, input, hx=None):
        self._generator = torch.Generator().manual_seed(0)
        return super().forward(input, hx)

    def _keep(self, output):
        return torch.bernoulli(torch.full_like(output, 1.0 - self.dropout), generator=self._generator)


# ------------------------------------------------------------------- correct ports


class NumpyRngDropout(_MaskedDropout):
    """Correct: draws its masks with NumPy's random generator instead of torch's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng()

    def _keep(self, output):
        keep = self._rng.random(tuple(output.shape)) >= self.dropout
        return torch.from_numpy(keep).to(output.dtype)


class TransposedBernoulliDropout(_MaskedDropout):
    """Correct: draws its masks with torch.bernoulli in another order (features first, then batch, then time)."""

    def _keep(self, output):
        dims = tuple(range(output.dim()))[::-1]
        flipped = torch.full(tuple(output.shape[d] for d in dims), 1.0 - self.dropout, dtype=output.dtype)
        return torch.bernoulli(flipped).permute(dims)


DROPOUT_CATALOGUE: dict[str, type] = {
    "dropout-unscaled": DropoutUnscaled,
    "dropout-scaled-by-inverse-p": DropoutScaledByInverseP,
    "dropout-on-input": DropoutOnInput,
    "dropout-sticky-training": DropoutStickyTraining,
    "dropout-keeps-with-probability-p": DropoutKeepsWithProbabilityP,
    "dropout-mask-per-sequence": DropoutMaskPerSequence,
    "dropout-mask-shared-over-batch": DropoutMaskSharedOverBatch,
    "dropout-fixed-seed": DropoutFixedSeed,
}

DROPOUT_CORRECT: dict[str, type] = {
    "numpy-rng-dropout": NumpyRngDropout,
    "transposed-bernoulli-dropout": TransposedBernoulliDropout,
}
