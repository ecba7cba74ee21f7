"""Array adapters built on the bundled NumPy port: a limited one, a more accurate one, broken ones."""

from __future__ import annotations

import numpy as np

from conformance.adapters import Adapter, Capabilities
from implementations.numpy_lstm import NumpyLSTM


class LimitedNumpyLSTM(NumpyLSTM):
    """A correct port that honestly declares no packed input and no float64."""

    lstm_conformance_capabilities = Capabilities(dtypes={"float32"}, errors="raises").without("packed", "packed_unsorted")


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


class PlainCapabilities(NumpyLSTM):
    """An adapter declaring its capabilities without the prefix: it would be read as declaring everything."""

    capabilities = Capabilities(dtypes={"float32"})


class PlainExpectedFailures(NumpyLSTM):
    """An adapter naming its expected-failures file without the prefix: it would be read as naming none."""

    expected_failures = "known.txt"


# ---------------------------------------------------------------------------- gradients


class BackwardOmitsBiasHh(NumpyLSTM):
    """The backward of a single-bias kernel returns its bias gradient as bias_ih only: bias_hh, which torch trains too, gets none."""

    def backward(self, input, hx, cotangents, *, training):
        grads = super().backward(input, hx, cotangents, training=training)
        return {name: g for name, g in grads.items() if not name.startswith("bias_hh")}


class BackwardWithoutDropoutMask(NumpyLSTM):
    """The backward differentiates the model as in eval mode (a VJP of the function without its dropout), not under the mask the training forward applied."""

    def _masks_for_backward(self, training):
        return ()


class BackwardStatesInSortedOrder(NumpyLSTM):
    """For an unsorted packed batch the backward returns h0's and c0's gradients in the sorted order it computed them in, not the caller's batch order."""

    def backward(self, input, hx, cotangents, *, training):
        grads = super().backward(input, hx, cotangents, training=training)
        order = getattr(input, "sorted_indices", None)
        if order is not None and "h0" in grads:
            order = np.asarray(order)
            grads["h0"], grads["c0"] = grads["h0"][:, order], grads["c0"][:, order]
        return grads


#: Adapters whose forward is exact and whose backward() is wrong: only the gradient tests flag them.
ADAPTER_GRADIENTS_CATALOGUE: dict[str, type] = {
    "backward-omits-bias-hh": BackwardOmitsBiasHh,
    "backward-without-dropout-mask": BackwardWithoutDropoutMask,
    "backward-states-in-sorted-order": BackwardStatesInSortedOrder,
}
