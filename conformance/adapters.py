"""What a port author writes: an adapter (for non-torch ports) and its capabilities.

A class that is a drop-in for ``torch.nn.LSTM`` needs no adapter at all.  Any other port
subclasses :class:`Adapter`: it is built from an :class:`~conformance.arrays.LSTMConfig` and
torch-named NumPy weights, and its :meth:`Adapter.forward` maps NumPy inputs to NumPy outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, ClassVar, Mapping, Optional, Union

import numpy as np

from .arrays import LSTMConfig, PackedArrays
from .dtypes import DTYPES

__all__ = ["Adapter", "Capabilities", "FEATURES", "ERROR_STRICTNESS", "ArrayInput", "ArrayState", "ArrayResult"]

#: Every feature a port may declare, with what it means.  A feature left out is reported as
#: unsupported (skipped), never as passed.
FEATURES: dict[str, str] = {
    "multi_layer": "num_layers > 1",
    "no_bias": "bias=False (both bias vectors removed)",
    "batch_first": "batch_first=True layout for input and output",
    "bidirectional": "bidirectional=True",
    "proj_size": "proj_size > 0 (LSTM with projections)",
    "initial_state": "an explicit (h0, c0) passed to the call",
    "unbatched": "2-D (seq_len, input_size) input without a batch dimension",
    "packed": "PackedSequence input built with enforce_sorted=True",
    "packed_unsorted": "PackedSequence input built with enforce_sorted=False (hx permuted by sorted_indices)",
    "dropout": "training mode with dropout between layers",
    "noncontiguous": "input, packed data and (h0, c0) given as views: transposed, strided, expanded, at an offset",
    "requires_grad": "inputs that require grad",
    "argument_forms": "calls by keyword (input=, hx=) and hx given as a list",
}

#: How closely a port's exceptions follow torch's: the same type and message, the same type,
#: or merely raising where torch raises.
ERROR_STRICTNESS = ("exact", "type", "raises")

ArrayState = tuple[np.ndarray, np.ndarray]
ArrayInput = Union[np.ndarray, PackedArrays]
ArrayResult = tuple[ArrayInput, ArrayState]


@dataclass(frozen=True)
class Capabilities:
    """What a port supports.  The defaults declare everything torch supports."""

    features: AbstractSet[str] = field(default_factory=lambda: frozenset(FEATURES))  # kept as a frozenset
    dtypes: AbstractSet[str] = frozenset(DTYPES)  # kept as a frozenset
    errors: str = "raises"
    #: Whether the port's gradients are checked against torch's (``conformance.gradients``).  ``None``:
    #: the kind's default, yes for a drop-in (torch's autograd runs through it) and no for an adapter,
    #: whose :meth:`Adapter.backward` is its own to write.  Undeclared, the gradient tests are skipped
    #: with the reason, never passed.
    gradients: Optional[bool] = None
    #: Whether the port's double backward (a Hessian-vector product, as a gradient penalty takes) is
    #: checked.  ``None``: yes for a drop-in that has gradients (torch's own LSTM is twice
    #: differentiable), no for an adapter (its protocol is first-order).  A drop-in whose backward is a
    #: ``once_differentiable`` autograd Function declares ``False``: its test is skipped with the reason.
    double_backward: Optional[bool] = None

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {sorted(FEATURES)}")
        strange = set(self.dtypes) - set(DTYPES)
        if strange:
            raise ValueError(f"unknown dtypes {sorted(strange)}; known: {', '.join(DTYPES)}")
        if self.errors not in ERROR_STRICTNESS:
            raise ValueError(f"errors must be one of {ERROR_STRICTNESS}, got {self.errors!r}")
        for name in ("gradients", "double_backward"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name} must be None, True or False, got {getattr(self, name)!r}")
        object.__setattr__(self, "features", frozenset(self.features))
        object.__setattr__(self, "dtypes", frozenset(self.dtypes))

    def without(self, *features: str) -> "Capabilities":
        """These capabilities minus some features (for ports that lack them)."""
        return Capabilities(self.features - set(features), self.dtypes, self.errors, self.gradients,
                            self.double_backward)

    def missing(self, features: set[str], dtype: Optional[str] = None) -> list[str]:
        """The required features (and dtype) this port does not declare, as readable reasons."""
        reasons = [f"{name} ({FEATURES[name]})" for name in sorted(set(features) - self.features)]
        if dtype is not None and dtype not in self.dtypes:
            reasons.append(f"dtype {dtype}")
        return reasons


class Adapter:
    """Base class for a port that is not a torch module.

    Subclass it, set :attr:`lstm_conformance_capabilities`, and implement :meth:`forward`.  The suite
    builds one adapter per generated model, so ``__init__`` is where weights are translated.  What a port
    sets for the suite has the same name on an adapter and on a drop-in: ``lstm_conformance_capabilities``,
    ``lstm_conformance_expected_failures`` (a file, relative to the port's module) and
    ``lstm_conformance_packing``.
    """

    #: Features, dtypes and error strictness this port declares.
    lstm_conformance_capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        """``weights`` maps torch's parameter names (``weight_ih_l0``, ...) to arrays in torch's layout."""
        self.config = config
        self.weights = dict(weights)

    def forward(self, input: ArrayInput, hx: Optional[ArrayState], *, training: bool) -> ArrayResult:
        """Run the LSTM like ``nn.LSTM.forward`` does, on NumPy arrays.

        ``input`` is ``(L, N, H_in)`` (``(N, L, H_in)`` if batch_first), ``(L, H_in)`` unbatched, or
        :class:`PackedArrays`.  ``hx`` is ``None`` or ``(h0, c0)`` laid out as torch lays them
        (never batch_first; in the caller's batch order for packed input), a tuple however the caller
        passed it.  The arrays are views of the caller's tensors, with their strides (transposed,
        strided, a stride of 0 where a tensor was expanded): read them through NumPy, never as raw
        memory.  Return ``(output, (h_n, c_n))``; for packed input the output is :class:`PackedArrays`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, input: ArrayInput, hx: Optional[ArrayState], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        """The vector-Jacobian product of :meth:`forward` at ``(input, hx)``, for a port that declares
        ``Capabilities(gradients=True)``.

        ``cotangents`` maps ``"output"`` (the packed data for packed input), ``"h_n"`` and ``"c_n"`` to
        arrays shaped as :meth:`forward` returns them; a name left out stands for zeros (a loss that does
        not use that result).  Return the gradients by name: ``"input"`` (the packed data for packed
        input), ``"h0"`` and ``"c0"`` (when ``hx`` is given), and every parameter by torch's names
        (``weight_ih_l0``, ...), each shaped as that tensor.

        The suite calls it right after :meth:`forward` on the same instance with the same arguments; with
        ``training=True`` it is the gradient of that forward, under the dropout mask that call drew.
        """
        raise NotImplementedError(f"{type(self).__name__} declares gradients but does not implement backward()")
