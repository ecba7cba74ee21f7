"""A case: one model configuration, its weights (by seed) and one call, as plain data.

A case is printable as a short runnable snippet (:meth:`Case.to_code`), and that snippet is
also how the case is materialised: :meth:`Case.build` executes it.  The code a user copies out of
a failure is therefore the code that produced the failure, never a paraphrase of it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from .arrays import LSTMConfig

__all__ = ["Call", "Case", "Fault", "LAYOUTS", "PACKINGS"]

#: How a dense input tensor is laid out in memory.
LAYOUTS = ("contiguous", "transposed", "sliced")
#: How a packed input is built.
PACKINGS = ("pack_padded_sequence", "pack_sequence")


@dataclass(frozen=True)
class Call:
    """One forward call: the input's shape and form, whether hx is given, and the module mode.

    ``batch=None`` means unbatched 2-D input.  ``lengths`` (caller's batch order) is set for
    packed input only, and then ``seq_len == max(lengths)``.
    """

    seq_len: int
    batch: Optional[int] = 1
    packing: Optional[str] = None
    lengths: Optional[tuple[int, ...]] = None
    enforce_sorted: bool = True
    with_hx: bool = False
    layout: str = "contiguous"
    requires_grad: bool = False
    training: bool = False
    seed: int = 0
    same_state: bool = False  # pass one tensor as both h0 and c0 (needs proj_size == 0)

    @property
    def packed(self) -> bool:
        return self.packing is not None

    @property
    def unbatched(self) -> bool:
        return self.batch is None


def _short_repr(obj: Any) -> str:
    """A dataclass repr that lists only the fields differing from their defaults."""
    parts = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value == f.default:  # fields without a default compare unequal to MISSING
            continue
        parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class Fault:
    """A deliberate mistake in a case, named for reports, with the code that makes it.

    ``stage="construct"``: the configuration itself holds the bad value, and the case's code
    stops at the constructor.  ``stage="forward"``: ``lines`` run once ``x`` (and ``h0``, ``c0``)
    exist, and ``args`` (if given) replaces the call's argument tuple.
    """

    name: str
    stage: str = "forward"
    lines: tuple[str, ...] = ()
    args: Optional[str] = None


@dataclass(frozen=True)
class Case:
    """A model configuration, the seed of its weights, one call, and possibly a fault."""

    config: LSTMConfig
    call: Call
    weight_seed: int = 0
    weight_scale: float = 1.0
    fault: Optional[Fault] = None

    def __repr__(self) -> str:
        inner = [_short_repr(self.config), _short_repr(self.call)]
        if self.weight_seed:
            inner.append(f"weight_seed={self.weight_seed}")
        if self.weight_scale != 1.0:
            inner.append(f"weight_scale={self.weight_scale!r}")
        if self.fault is not None:
            inner.append(f"fault={self.fault.name!r}")
        return f"Case({', '.join(inner)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints cases with this
        printer.text(repr(self))

    def replace(self, **changes: Any) -> "Case":
        """A copy with config or call fields changed (each name is looked up in both)."""
        config_names = {f.name for f in fields(LSTMConfig)}
        call_names = {f.name for f in fields(Call)}
        config = replace(self.config, **{k: v for k, v in changes.items() if k in config_names})
        call = replace(self.call, **{k: v for k, v in changes.items() if k in call_names})
        rest = {k: v for k, v in changes.items() if k not in config_names | call_names}
        return replace(self, config=config, call=call, **rest)

    def features(self) -> set[str]:
        """The capability names (see ``adapters.FEATURES``) a port needs to run this case."""
        cfg, call = self.config, self.call
        wanted = {
            "multi_layer": cfg.num_layers > 1,
            "no_bias": not cfg.bias,
            "batch_first": cfg.batch_first,
            "bidirectional": cfg.bidirectional,
            "proj_size": cfg.proj_size > 0,
            "initial_state": call.with_hx,
            "unbatched": call.unbatched,
            "packed": call.packed,
            "packed_unsorted": call.packed and not call.enforce_sorted,
            "dropout": call.training and cfg.dropout > 0 and cfg.num_layers > 1,
            "noncontiguous": call.layout != "contiguous",
            "requires_grad": call.requires_grad,
        }
        return {name for name, used in wanted.items() if used}

    @property
    def deterministic(self) -> bool:
        """Whether every output is fixed by the weights and inputs (no random dropout mask)."""
        cfg = self.config
        return not self.call.training or cfg.num_layers == 1 or cfg.dropout in (0.0, 1.0)

    # ----------------------------------------------------------------- code
    def to_code(self) -> str:
        """Runnable Python that builds ``model`` (an ``nn.LSTM``) and ``args`` for ``model(*args)``."""
        cfg, call = self.config, self.call
        dt = f"torch.{cfg.dtype}"
        kwargs = ", ".join(f"{k}={_literal(v)}" for k, v in cfg.torch_kwargs().items() if _differs(k, v))
        lines = ["import torch", "from torch import nn"]
        if call.packing:
            lines.append(f"from torch.nn.utils.rnn import {call.packing}")
        if self.fault is not None:
            lines.append(f"# fault: {self.fault.name}")
        lines += ["", f"torch.manual_seed({self.weight_seed})", f"model = nn.LSTM({kwargs}, dtype={dt})"]
        if self.fault is not None and self.fault.stage == "construct":
            return "\n".join(lines) + "\n"
        if self.weight_scale != 1.0:
            lines += ["with torch.no_grad():", "    for p in model.parameters():",
                      f"        p.mul_({self.weight_scale!r})"]
        lines.append("model.train()" if call.training else "model.eval()")
        lines.append(f"g = torch.Generator().manual_seed({call.seed})")
        grad = ", requires_grad=True" if call.requires_grad else ""
        opts = f"generator=g, dtype={dt}{grad}"
        lines += self._input_lines(opts)
        if call.with_hx:
            layers = cfg.num_layers * cfg.num_directions
            batch = "" if call.unbatched else f"{call.batch}, "
            lines.append(f"h0 = torch.randn({layers}, {batch}{cfg.output_size}, generator=g, dtype={dt})")
            lines.append("c0 = h0" if call.same_state else
                         f"c0 = torch.randn({layers}, {batch}{cfg.hidden_size}, generator=g, dtype={dt})")
        args = "(x, (h0, c0))" if call.with_hx else "(x,)"
        if self.fault is not None:
            lines += list(self.fault.lines)
            args = self.fault.args or args
        lines.append(f"args = {args}")
        return "\n".join(lines) + "\n"

    def _input_lines(self, opts: str) -> list[str]:
        cfg, call = self.config, self.call
        feat = cfg.input_size
        if call.packing == "pack_sequence":
            return [f"lengths = {list(call.lengths)}",
                    f"seqs = [torch.randn(n, {feat}, {opts}) for n in lengths]",
                    f"x = pack_sequence(seqs, enforce_sorted={call.enforce_sorted})"]
        if call.packing == "pack_padded_sequence":
            dims = (call.batch, call.seq_len) if cfg.batch_first else (call.seq_len, call.batch)
            return [f"lengths = {list(call.lengths)}",
                    f"padded = torch.randn({dims[0]}, {dims[1]}, {feat}, {opts})",
                    f"x = pack_padded_sequence(padded, lengths, batch_first={cfg.batch_first}, "
                    f"enforce_sorted={call.enforce_sorted})"]
        if call.unbatched:
            dims: tuple[int, ...] = (call.seq_len, feat)
        elif cfg.batch_first:
            dims = (call.batch, call.seq_len, feat)
        else:
            dims = (call.seq_len, call.batch, feat)
        if call.layout == "transposed":  # same shape, but a transposed (non-contiguous) view
            swapped = (dims[1], dims[0]) + dims[2:]
            return [f"x = torch.randn({_dims(swapped)}, {opts}).transpose(0, 1)"]
        if call.layout == "sliced":  # same shape, but every other feature of a wider tensor
            wider = dims[:-1] + (2 * feat,)
            return [f"x = torch.randn({_dims(wider)}, {opts})[..., ::2]"]
        return [f"x = torch.randn({_dims(dims)}, {opts})"]

    def build(self, warnings_out: Optional[list] = None) -> tuple[Any, tuple]:
        """Execute :meth:`to_code`; return ``(model, args)``.

        Warnings raised meanwhile (nn.LSTM warns about dropout with one layer) are appended to
        ``warnings_out`` when it is given, and dropped otherwise.
        """
        namespace: dict[str, Any] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(self.to_code(), "<lstm-conformance case>", "exec"), namespace)
        if warnings_out is not None:
            warnings_out.extend(caught)
        return namespace["model"], namespace.get("args", ())


_DEFAULTS = {f.name: f.default for f in fields(LSTMConfig)}


def _differs(name: str, value: Any) -> bool:
    default = _DEFAULTS[name]
    return name in ("input_size", "hidden_size") or type(value) is not type(default) or value != default


def _literal(value: Any) -> str:
    """Python source for a constructor argument, bad values (nan, strings, None) included."""
    if isinstance(value, float) and value != value:
        return "float('nan')"
    return repr(value)


def _dims(dims: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in dims)


@dataclass(frozen=True)
class PackingCall:
    """A call of a packing function (``pack_padded_sequence`` or ``pack_sequence``) with given lengths.

    Used for ports that provide their own packing functions: bad lengths must be rejected as torch's
    ``torch.nn.utils.rnn`` rejects them.
    """

    function: str
    lengths: tuple[int, ...]
    batch: int
    enforce_sorted: bool = True
    batch_first: bool = False
    features: int = 2
    seed: int = 0
    fault: str = ""

    def _body(self) -> list[str]:
        lines = [f"g = torch.Generator().manual_seed({self.seed})", f"lengths = {list(self.lengths)}"]
        if self.function == "pack_sequence":
            return lines + [f"seqs = [torch.randn(max(n, 0), {self.features}, generator=g) for n in lengths]",
                            f"packed = pack_sequence(seqs, enforce_sorted={self.enforce_sorted})"]
        steps = max([1, *self.lengths])
        dims = (self.batch, steps) if self.batch_first else (steps, self.batch)
        return lines + [f"padded = torch.randn({dims[0]}, {dims[1]}, {self.features}, generator=g)",
                        f"packed = pack_padded_sequence(padded, lengths, batch_first={self.batch_first}, "
                        f"enforce_sorted={self.enforce_sorted})"]

    def to_code(self, module: str = "torch.nn.utils.rnn") -> str:
        """Runnable code that calls the function, imported from ``module``."""
        header = ["import torch", f"from {module} import {self.function}", f"# fault: {self.fault}", ""]
        return "\n".join(header + self._body()) + "\n"

    def run(self, functions: Any) -> Any:
        """Execute the call with the function taken from ``functions`` (a module or an object)."""
        import torch

        namespace = {"torch": torch, self.function: getattr(functions, self.function)}
        exec(compile("\n".join(self._body()), "<lstm-conformance packing call>", "exec"), namespace)
        return namespace["packed"]
