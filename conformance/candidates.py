"""A uniform way to run any implementation on a case: a drop-in torch module or an Adapter.

:class:`Candidate` hides the difference: it builds the port from the reference's weights, runs
one call, and returns an :class:`~conformance.outcome.Outcome`.  Everything a port could do
wrong while being built or called surfaces as an exception here, for the checks to report.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .adapters import Adapter, Capabilities
from .arrays import LSTMConfig
from .case import call_arguments
from .dtypes import to_numpy
from .outcome import Outcome, from_arrays, from_torch, packed_arrays
from .timing import timed  # lstm-conformance bench times the forward call only

__all__ = ["Candidate", "CandidateError", "make_candidate"]


class CandidateError(AssertionError):
    """The candidate raised while being built or called, where torch did not."""


@dataclass
class Candidate:
    """An implementation under test, ready to run cases."""

    name: str
    target: Any
    kind: str  # "drop-in" or "adapter"
    capabilities: Capabilities
    origin: str = ""
    path: str = ""

    def __repr__(self) -> str:  # hypothesis prints it in every falsifying example: keep it short
        return f"<{self.kind} {self.name}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' pretty-printer
        printer.text(repr(self))

    @property
    def gradients(self) -> bool:
        """Whether its gradients are checked: as declared (``Capabilities.gradients``), else for a drop-in only."""
        declared = self.capabilities.gradients
        return self.kind == "drop-in" if declared is None else declared

    @property
    def double_backward(self) -> bool:
        """Whether its double backward is checked: as declared (``Capabilities.double_backward``), else for
        a drop-in with gradients only."""
        declared = self.capabilities.double_backward
        return (self.kind == "drop-in" and self.gradients) if declared is None else declared

    def construct(self, config: LSTMConfig, state_dict: Optional[dict] = None) -> Any:
        """A port instance for ``config`` holding ``state_dict``'s weights; exceptions propagate."""
        if self.kind == "drop-in":
            import torch

            module = self.target(**config.torch_kwargs(), dtype=getattr(torch, str(config.dtype), config.dtype))
            if state_dict is not None:
                module.load_state_dict(state_dict)
            return module
        weights = {name: to_numpy(t).copy() for name, t in (state_dict or {}).items()}
        return self.target(config, weights)

    def call(self, instance: Any, args: tuple, training: bool, form: str = "positional") -> Any:
        """One forward call, as the port receives it; returns what the port returned.

        ``args`` are the call's positional arguments; a drop-in is called in the case's argument ``form``
        (``conformance.case.ARGUMENT_FORMS``), an adapter always as ``forward(input, hx, training=...)``.
        """
        if self.kind == "drop-in":
            instance.train(training)
            positional, keywords = call_arguments(args, form)
            with timed("candidate"):
                return instance(*positional, **keywords)
        np_args = [_to_arrays(a) for a in args]
        x, hx = np_args[0], (np_args[1] if len(np_args) > 1 else None)
        with timed("candidate"):
            return instance.forward(x, hx, training=training)

    def backward(self, instance: Any, args: tuple, cotangents: dict, training: bool) -> Any:
        """An adapter's :meth:`~conformance.adapters.Adapter.backward` at the call ``args`` (torch call
        arguments, converted as :meth:`call` converts them), right after :meth:`call` on them."""
        np_args = [_to_arrays(a) for a in args]
        x, hx = np_args[0], (np_args[1] if len(np_args) > 1 else None)
        with timed("candidate"):
            return instance.backward(x, hx, cotangents, training=training)

    def outcome(self, result: Any, packed: bool) -> Outcome:
        """Check the structure of a result and convert it; raises StructureError."""
        if self.kind == "drop-in":
            return from_torch(result, packed, where=self.name)
        return from_arrays(result, packed, where=f"{self.name}.forward")

    def build(self, config: LSTMConfig, state_dict: dict, warnings_out: Optional[list] = None) -> Any:
        """:meth:`construct`, with an exception reported as a CandidateError."""
        what = "constructing the port and loading the reference's weights"
        return _guard(what, lambda: self.construct(config, state_dict), warnings_out)

    def run(self, instance: Any, args: tuple, training: bool, packed: bool, form: str = "positional") -> Outcome:
        """:meth:`call` then :meth:`outcome`, with an exception reported as a CandidateError."""
        return self.outcome(_guard("the forward call", lambda: self.call(instance, args, training, form)), packed)


def _guard(what: str, action: Callable[[], Any], warnings_out: Optional[list] = None) -> Any:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = action()
    except Exception as exc:  # a port's own `assert` too: it is the port's error, not a verdict of ours
        raise CandidateError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    if warnings_out is not None:
        warnings_out.extend(caught)
    return result


def _to_arrays(value: Any) -> Any:
    """Torch call arguments as the NumPy values an adapter receives: views of the same memory, with the
    same strides (``Tensor.numpy`` shares it), and hx as a tuple however the caller passed it."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return packed_arrays(value)
    if isinstance(value, torch.Tensor):
        return to_numpy(value)
    if isinstance(value, (tuple, list)):
        return tuple(_to_arrays(v) for v in value)
    return value


def make_candidate(target: Any, name: Optional[str] = None, origin: str = "", path: str = "") -> Candidate:
    """Wrap a drop-in module class or an :class:`Adapter` subclass; reject anything else clearly."""
    label = name or f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"
    if inspect.isclass(target):
        _check_hook_names(target, label)
    if inspect.isclass(target) and issubclass(target, Adapter):
        if target.forward is Adapter.forward:
            raise TypeError(f"adapter {label} does not implement forward(input, hx, *, training)")
        return Candidate(label, target, "adapter", target.lstm_conformance_capabilities, origin, path or label)
    if inspect.isclass(target) and _is_torch_module(target):
        caps = getattr(target, "lstm_conformance_capabilities", None) or Capabilities(errors="exact")
        return Candidate(label, target, "drop-in", caps, origin, path or label)
    if inspect.isclass(target) and all(callable(getattr(target, m, None)) for m in ("forward", "__init__")) \
            and hasattr(target, "lstm_conformance_capabilities"):
        raise TypeError(f"{label} looks like an adapter but does not subclass conformance.Adapter")
    raise TypeError(f"{label} is neither a torch.nn.Module subclass (a drop-in for nn.LSTM) "
                    f"nor a conformance.Adapter subclass; got {type(target).__name__}")


#: What a port class sets for the suite, by the one name each has on drop-ins and adapters alike.
HOOKS = ("lstm_conformance_capabilities", "lstm_conformance_expected_failures", "lstm_conformance_packing")


def _check_hook_names(target: type, label: str) -> None:
    """An adapter that sets a hook without its prefix would be read as declaring nothing: say so."""
    if not issubclass(target, Adapter):
        return
    for hook in HOOKS:
        plain = hook.removeprefix("lstm_conformance_")
        if plain in vars(target):
            raise TypeError(f"adapter {label} sets {plain!r}; the suite reads {hook!r} (the same name on drop-ins "
                            f"and adapters)")


def _is_torch_module(cls: type) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return issubclass(cls, torch.nn.Module)
