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

__all__ = ["ARGUMENT_FORMS", "Call", "Case", "Fault", "LAYOUTS", "PACKINGS", "PackingCall", "SPECIALS", "STATE_LAYOUTS",
           "Values", "call_arguments"]

#: How the input (a dense tensor, or a packed sequence's data) is laid out in memory.  Each holds the
#: values of a contiguous tensor drawn first: ``transposed`` (dims 0 and 1 swapped in memory),
#: ``sliced`` (every other feature of a tensor twice as wide), ``expanded`` (one batch element, or
#: one step of unbatched input, repeated with stride 0), ``offset`` (contiguous, at a storage offset).
LAYOUTS = ("contiguous", "transposed", "sliced", "expanded", "offset")
#: How h0 and c0 are laid out in memory: ``transposed`` (read from a batch-first buffer, as
#: ``h.transpose(0, 1)``), ``expanded`` (one batch element repeated with stride 0, as a learned initial
#: state expanded over the batch; unbatched: row 0 for every row), ``sliced`` (the first half of a buffer
#: twice as wide, as ``hc[..., :H]``), ``offset`` (contiguous, at a storage offset).
STATE_LAYOUTS = ("contiguous", "transposed", "expanded", "sliced", "offset")
#: How the call passes its arguments: ``model(x, (h0, c0))``, ``model(input=x, hx=(h0, c0))``,
#: or ``model(x, [h0, c0])``.
ARGUMENT_FORMS = ("positional", "keywords", "hx_list")
#: ``nn.LSTM.forward``'s parameters, in order.
FORWARD_PARAMETERS = ("input", "hx")
#: The storage offset of the ``offset`` layouts.
OFFSET = 3
#: How a packed input is built.
PACKINGS = ("pack_padded_sequence", "pack_sequence")


#: The special values a :class:`Values` may place, as written in its ``special`` entries.
SPECIALS = ("nan", "inf", "-inf")


@dataclass(frozen=True)
class Values:
    """How one generated tensor (x, h0 or c0) departs from ``randn`` at unit scale.

    The edits are made in place after the tensor is drawn (scaling first, then zeros, then single
    elements) and draw nothing from the generator: every other tensor of the case keeps its values.  Indices are
    logical, whatever the memory layout or ``batch_first``: ``(step, batch, feature)`` for x
    (``(step, feature)`` unbatched; for ``pack_sequence``, ``step`` counts within sequence
    ``batch``), ``(row, batch, feature)`` for h0 and c0 (``(row, feature)`` unbatched).
    """

    scale: float = 1.0  # every element multiplied by this
    feature_decades: tuple[int, ...] = ()  # (lo, hi): feature k also multiplied by 10**(lo..hi spaced evenly)
    zero_steps: tuple[int, ...] = ()  # x: these time steps set to zero in every batch element
    zero_sequences: tuple[int, ...] = ()  # these batch elements set to zero throughout
    zero_features: tuple[int, ...] = ()  # these features set to zero throughout
    negative_zeros: bool = False  # the zeros above written as -0.0
    special: tuple[tuple[tuple[int, ...], str], ...] = ()  # (index, one of SPECIALS) for single elements

    def __post_init__(self) -> None:
        if len(self.feature_decades) not in (0, 2):
            raise ValueError(f"Values.feature_decades must be () or (lo, hi), got {self.feature_decades!r}")
        for _, special in self.special:
            if special not in SPECIALS:
                raise ValueError(f"Values.special must name one of {', '.join(SPECIALS)}, got {special!r}")

    def __repr__(self) -> str:
        return _short_repr(self)

    @property
    def plain(self) -> bool:
        return self == Values()


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
    requires_grad: bool = False  # the input (a dense tensor, or the tensor a packed one is built from)
    training: bool = False
    seed: int = 0
    same_state: bool = False  # pass one tensor as both h0 and c0 (needs proj_size == 0)
    state_layout: str = "contiguous"  # one of STATE_LAYOUTS, for h0 and c0
    arguments: str = "positional"  # how the call passes them: one of ARGUMENT_FORMS
    x_values: Values = Values()  # how the input's values depart from randn at unit scale
    h0_values: Values = Values()
    c0_values: Values = Values()  # left plain when c0 is h0 (same_state)
    hx_requires_grad: bool = False  # h0 and c0 require grad (with_hx only)

    @property
    def packed(self) -> bool:
        return self.packing is not None

    @property
    def unbatched(self) -> bool:
        return self.batch is None

    @property
    def has_nan(self) -> bool:
        """Whether the input, h0 or c0 holds a NaN (for ``when`` in expected-failures files)."""
        return "nan" in self._specials()

    @property
    def has_inf(self) -> bool:
        """Whether the input, h0 or c0 holds an infinity."""
        return bool(self._specials() - {"nan"})

    def _specials(self) -> set[str]:
        return {special for v in (self.x_values, self.h0_values, self.c0_values) for _, special in v.special}


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
        return {name for name, used in self.feature_flags().items() if used}

    def feature_flags(self) -> dict[str, bool]:
        """Each capability name of ``adapters.FEATURES``, and whether this case uses it."""
        cfg, call = self.config, self.call
        return {
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
            "noncontiguous": call.layout != "contiguous" or (call.with_hx and call.state_layout != "contiguous"),
            "argument_forms": call.arguments != "positional",
            "requires_grad": call.requires_grad or (call.with_hx and call.hx_requires_grad),
        }

    @property
    def deterministic(self) -> bool:
        """Whether every output is fixed by the weights and inputs (no random dropout mask)."""
        cfg = self.config
        return not self.call.training or cfg.num_layers == 1 or cfg.dropout in (0.0, 1.0)

    # ----------------------------------------------------------------- code
    @property
    def torch_call(self) -> str:
        """How the case's code calls torch: ``model(*args)``, or with ``kwargs`` for a call by keyword."""
        keywords = any(line.startswith("kwargs = ") for line in self._call_lines())
        return "model(*args, **kwargs)" if keywords else "model(*args)"

    def to_code(self) -> str:
        """Runnable Python that builds ``model`` (an ``nn.LSTM``) and ``args`` (and, for a call by keyword,
        ``kwargs``) for :attr:`torch_call`."""
        cfg, call = self.config, self.call
        dt = f"torch.{cfg.dtype}"
        kwargs = ", ".join(f"{k}={_literal(v)}" for k, v in cfg.torch_kwargs().items() if _differs(k, v))
        lines = ["import torch", "from torch import nn"]
        if call.packing:
            by_hand = call.layout != "contiguous" or any("PackedSequence(" in line for line in self._fault_lines())
            names = (call.packing, "PackedSequence") if by_hand else (call.packing,)
            lines.append(f"from torch.nn.utils.rnn import {', '.join(names)}")
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
            state_grad = ", requires_grad=True" if call.hx_requires_grad else ""
            lines.append(f"h0 = torch.randn({layers}, {batch}{cfg.output_size}, generator=g, dtype={dt}{state_grad})")
            lines.append("c0 = h0" if call.same_state else
                         f"c0 = torch.randn({layers}, {batch}{cfg.hidden_size}, generator=g, dtype={dt}{state_grad})")
            lines += self._state_value_lines()
            lines += self._state_layout_lines()
        lines += self._fault_lines()
        lines += self._call_lines()
        return "\n".join(lines) + "\n"

    def _x_value_lines(self, name: str) -> list[str]:
        """The input's value edits (:class:`Values`), on ``name`` as first drawn (contiguous)."""
        cfg, call = self.config, self.call
        form = ("seqs" if name == "seqs" else "TF" if call.unbatched
                else "NTF" if cfg.batch_first and call.packing != "pack_sequence" else "TNF")
        return _value_lines(name, call.x_values, form, f"torch.{cfg.dtype}", cfg.input_size, call.requires_grad)

    def _state_value_lines(self) -> list[str]:
        """h0's and c0's value edits (:class:`Values`), as first drawn (contiguous); c0 is h0 with same_state."""
        cfg, call = self.config, self.call
        form, dt = ("TF" if call.unbatched else "TNF"), f"torch.{cfg.dtype}"
        grad = call.hx_requires_grad
        lines = _value_lines("h0", call.h0_values, form, dt, cfg.output_size, grad)
        return lines + ([] if call.same_state else _value_lines("c0", call.c0_values, form, dt, cfg.hidden_size, grad))

    def _fault_lines(self) -> list[str]:
        return list(self.fault.lines) if self.fault is not None else []

    def _call_lines(self) -> list[str]:
        """``args`` (and ``kwargs``) in the case's argument form; a fault's own arguments are positional."""
        call = self.call
        hx = ("[h0, c0]" if call.arguments == "hx_list" else "(h0, c0)") if call.with_hx else None
        if self.fault is not None and (self.fault.args or self.fault.stage == "construct"):
            return [f"args = {self.fault.args}"] if self.fault.args else []
        if call.arguments == "keywords":
            kwargs = "{'input': x" + (f", 'hx': {hx}" if hx else "") + "}"
            return ["args = ()", f"kwargs = {kwargs}"]
        return [f"args = (x, {hx})" if hx else "args = (x,)"]

    def _state_layout_lines(self) -> list[str]:
        """h0 and c0 (drawn contiguous) turned into their memory layout, holding the same values
        (``expanded``: batch element 0's, repeated)."""
        call, cfg = self.call, self.config
        if call.state_layout == "contiguous":
            return []
        names = ("h0",) if call.same_state else ("h0", "c0")
        widths = {"h0": cfg.output_size, "c0": cfg.hidden_size}
        lines = []
        for name in names:
            if call.state_layout == "expanded":
                row = f"{name}[:1]" if call.unbatched else f"{name}[:, :1]"
                lines.append(f"{name} = {row}.expand_as({name})")
            elif call.state_layout == "sliced":
                lines.append(f"{name} = torch.cat([{name}, torch.zeros_like({name})], dim=-1)[..., :{widths[name]}]")
            else:
                lines.append(f"{name} = {_relayout(name, call.state_layout)}")
        return lines + (["c0 = h0"] if call.same_state else [])

    def _input_lines(self, opts: str) -> list[str]:
        cfg, call = self.config, self.call
        feat = cfg.input_size
        lengths = list(call.lengths or ())  # set for packed input
        if call.packing == "pack_sequence":
            return [f"lengths = {lengths}",
                    f"seqs = [torch.randn(n, {feat}, {opts}) for n in lengths]",
                    *self._x_value_lines("seqs"),
                    f"x = pack_sequence(seqs, enforce_sorted={call.enforce_sorted})"] + self._packed_layout_lines()
        if call.packing == "pack_padded_sequence":
            shape = (call.batch, call.seq_len) if cfg.batch_first else (call.seq_len, call.batch)
            return [f"lengths = {lengths}",
                    f"padded = torch.randn({shape[0]}, {shape[1]}, {feat}, {opts})",
                    *self._x_value_lines("padded"),
                    f"x = pack_padded_sequence(padded, lengths, batch_first={cfg.batch_first}, "
                    f"enforce_sorted={call.enforce_sorted})"] + self._packed_layout_lines()
        if call.batch is None:
            dims: tuple[int, ...] = (call.seq_len, feat)
        elif cfg.batch_first:
            dims = (call.batch, call.seq_len, feat)
        else:
            dims = (call.seq_len, call.batch, feat)
        lines = [f"x = torch.randn({_dims(dims)}, {opts})", *self._x_value_lines("x")]
        if call.layout == "expanded":  # batch element 0 (unbatched: step 0) for all, with stride 0
            row = "x[:1]" if call.unbatched or cfg.batch_first else "x[:, :1]"
            return lines + [f"x = {row}.expand_as(x)"]
        return lines + ([f"x = {_relayout('x', call.layout)}"] if call.layout != "contiguous" else [])

    def _packed_layout_lines(self) -> list[str]:
        """The packed data as a view in the case's layout (``expanded`` is not drawn for packed input)."""
        layout = self.call.layout
        if layout == "contiguous":
            return []
        data = "x.data[:1].expand_as(x.data)" if layout == "expanded" else _relayout("x.data", layout)
        return [f"data = {data}", "x = PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)"]

    def build(self, warnings_out: Optional[list] = None) -> tuple[Any, tuple]:
        """Execute :meth:`to_code`; return ``(model, args)``, the call's arguments as positional ones
        (``model(*args)`` is the same call; :func:`call_arguments` gives it back in the case's form).

        Warnings raised meanwhile (nn.LSTM warns about dropout with one layer) are appended to
        ``warnings_out`` when it is given, and dropped otherwise.
        """
        namespace: dict[str, Any] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(self.to_code(), "<lstm-conformance case>", "exec"), namespace)
        if warnings_out is not None:
            warnings_out.extend(caught)
        args, kwargs = tuple(namespace.get("args", ())), namespace.get("kwargs", {})
        return namespace["model"], args + tuple(kwargs[name] for name in FORWARD_PARAMETERS if name in kwargs)


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


def _value_lines(name: str, values: Values, form: str, dtype: str, features: int, no_grad: bool = False) -> list[str]:
    """Lines that edit the tensor ``name`` in place as ``values`` says (nothing for plain values).

    ``form`` maps logical indices to the tensor's: ``"TNF"`` (time-major x; h0 and c0, rows first),
    ``"NTF"`` (batch-first x), ``"TF"`` (unbatched), ``"seqs"`` (a list of ``(steps, features)``
    tensors, one per batch element, as ``pack_sequence`` takes).  ``no_grad`` wraps the edits in
    ``torch.no_grad()`` (a tensor that requires grad).
    """
    if values.plain:
        return []
    zero = "-0.0" if values.negative_zeros else "0.0"
    each: list[str] = []  # edits of every element (for "seqs": of every sequence)
    target = "seq" if form == "seqs" else name
    if values.scale != 1.0:
        each.append(f"{target}.mul_({values.scale!r})")
    if values.feature_decades:
        lo, hi = values.feature_decades
        each.append(f"{target}.mul_(torch.logspace({lo}, {hi}, {features}, dtype={dtype}))")
    if values.zero_steps:
        each.append(f"{target}{_at(':, ' if form == 'NTF' else '', values.zero_steps)} = {zero}")
    if values.zero_features:
        each.append(f"{target}{_at('..., ', values.zero_features)} = {zero}")
    single: list[str] = []  # edits of single batch elements and single elements
    if values.zero_sequences and form == "TF":
        raise ValueError(f"{name}: Values.zero_sequences needs a batch dimension, and this call is unbatched")
    for b in values.zero_sequences:
        where = {"TNF": f"[:, {b}]", "NTF": f"[{b}]", "seqs": f"[{b}][:]"}[form]
        single.append(f"{name}{where} = {zero}")
    for index, special in values.special:
        if form == "seqs":
            t, b, f = index
            element = f"[{b}][{t}, {f}]"
        elif form == "NTF":
            t, b, f = index
            element = f"[{b}, {t}, {f}]"
        else:
            element = f"[{', '.join(str(i) for i in index)}]"
        single.append(f"{name}{element} = float({special!r})")
    if form == "seqs" and each:
        each = ["for seq in seqs:"] + [f"    {line}" for line in each]
    lines = each + single
    return ["with torch.no_grad():"] + [f"    {line}" for line in lines] if no_grad else lines


def _at(prefix: str, indices: tuple[int, ...]) -> str:
    """``[prefix i]`` for one index, ``[prefix [i, j]]`` for several."""
    inner = str(indices[0]) if len(indices) == 1 else str(list(indices))
    return f"[{prefix}{inner}]"


def _relayout(tensor: str, layout: str) -> str:
    """An expression holding ``tensor``'s values in a ``transposed``, ``sliced`` or ``offset`` layout."""
    if layout == "transposed":
        return f"{tensor}.transpose(0, 1).contiguous().transpose(0, 1)"
    if layout == "sliced":
        return f"{tensor}.repeat_interleave(2, dim=-1)[..., ::2]"
    if layout == "offset":
        return f"torch.cat([{tensor}.new_zeros({OFFSET}), {tensor}.flatten()])[{OFFSET}:].view_as({tensor})"
    raise ValueError(f"unknown layout {layout!r}")


def call_arguments(args: tuple, form: str = "positional") -> tuple[tuple, dict]:
    """The positional and keyword arguments of a call in ``form`` (see :data:`ARGUMENT_FORMS`), given the
    call as positional ``args`` (what :meth:`Case.build` returns)."""
    if form == "keywords":
        return (), dict(zip(FORWARD_PARAMETERS, args))
    if form == "hx_list" and len(args) == 2 and isinstance(args[1], tuple):
        return (args[0], list(args[1])), {}
    return tuple(args), {}


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
