"""Array adapters built on the bundled NumPy port: a limited one, a more accurate one, broken ones."""

from __future__ import annotations

import numpy as np

from conformance.adapters import Adapter, Capabilities
from implementations.numpy_lstm import NumpyLSTM


class LimitedNumpyLSTM(NumpyLSTM):
    """A correct port that honestly declares no packed input and no float64."""

    capabilities = Capabilities(dtypes={"float32"}, errors="raises").without("packed", "packed_unsorted")


class Float64InsideNumpyLSTM(NumpyLSTM):
    """Computes float32 models in float64: more accurate than torch, and must pass."""

    compute_dtype = np.float64


class SwappedStatesAdapter(NumpyLSTM):
    """The adapter returns (c_n, h_n): swapped state order (cf. tracel-ai/burn#5234)."""

    def forward(self, input, hx, *, training):
        output, (h_n, c_n) = super().forward(input, hx, training=training)
        return output, (c_n, h_n)


class ListResultAdapter(NumpyLSTM):
    """The adapter returns [output, [h_n, c_n]] lists: the wrong structure."""

    def forward(self, input, hx, *, training):
        output, (h_n, c_n) = super().forward(input, hx, training=training)
        return [output, [h_n, c_n]]


class NoForward(Adapter):
    """An adapter that forgot to implement forward()."""
