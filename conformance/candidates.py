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
from .arrays import LSTMConfig, PackedArrays
from .outcome import Outcome, from_arrays, from_torch

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

    def build(self, config: LSTMConfig, state_dict: dict) -> Any:
        """A fresh port instance holding the reference's weights."""
        if self.kind == "drop-in":
            return _build_drop_in(self.target, config, state_dict)
        weights = {name: t.detach().numpy().copy() for name, t in state_dict.items()}
        return _guard("constructing the adapter", lambda: self.target(config, weights))

    def run(self, instance: Any, args: tuple, training: bool, packed: bool) -> Outcome:
        """One forward call on an instance from :meth:`build`, converted to an Outcome."""
        if self.kind == "drop-in":
            _guard(f"calling .{'train' if training else 'eval'}()", lambda: instance.train(training))
            result = _guard("the forward call", lambda: instance(*args))
            return from_torch(result, packed, where=f"{self.name}")
        np_args = [_to_arrays(a) for a in args]
        x, hx = np_args[0], (np_args[1] if len(np_args) > 1 else None)
        result = _guard("adapter.forward", lambda: instance.forward(x, hx, training=training))
        return from_arrays(result, packed, where=f"{self.name}.forward")


def _guard(what: str, action: Callable[[], Any]) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warning conformance is judged separately, not here
            return action()
    except AssertionError:
        raise
    except Exception as exc:
        raise CandidateError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _build_drop_in(cls: Any, config: LSTMConfig, state_dict: dict) -> Any:
    import torch

    kwargs = dict(config.torch_kwargs(), dtype=getattr(torch, config.dtype))
    module = _guard(f"{cls.__qualname__}(**{kwargs})", lambda: cls(**kwargs))
    _guard("load_state_dict(reference weights)", lambda: module.load_state_dict(state_dict))
    return module


def _to_arrays(value: Any) -> Any:
    """Torch call arguments as the NumPy values an adapter receives (views where possible)."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return PackedArrays(*(None if t is None else t.detach().numpy() for t in value))
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, tuple):
        return tuple(_to_arrays(v) for v in value)
    return value


def make_candidate(target: Any, name: Optional[str] = None, origin: str = "", path: str = "") -> Candidate:
    """Wrap a drop-in module class or an :class:`Adapter` subclass; reject anything else clearly."""
    label = name or f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"
    if inspect.isclass(target) and issubclass(target, Adapter):
        if target.forward is Adapter.forward:
            raise TypeError(f"adapter {label} does not implement forward(input, hx, *, training)")
        return Candidate(label, target, "adapter", target.capabilities, origin, path or label)
    if inspect.isclass(target) and _is_torch_module(target):
        caps = getattr(target, "lstm_conformance_capabilities", None) or Capabilities(errors="exact")
        return Candidate(label, target, "drop-in", caps, origin, path or label)
    if inspect.isclass(target) and all(callable(getattr(target, m, None)) for m in ("forward", "__init__")) \
            and hasattr(target, "capabilities"):
        raise TypeError(f"{label} looks like an adapter but does not subclass conformance.Adapter")
    raise TypeError(f"{label} is neither a torch.nn.Module subclass (a drop-in for nn.LSTM) "
                    f"nor a conformance.Adapter subclass; got {type(target).__name__}")


def _is_torch_module(cls: type) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return issubclass(cls, torch.nn.Module)
