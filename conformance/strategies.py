"""Hypothesis strategies for LSTM cases: one small strategy per axis, composed into cases.

Every strategy shrinks towards the plainest value of its axis (one layer, bias on, no
packing, ...), so a shrunk failure names only the axes that matter.  Rare but important values
(hidden sizes above 64, sequences of 100+ steps, batches of 17+ where torch's sort reorders
ties) are drawn occasionally everywhere, and always in the focused tests of :data:`FOCI`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Optional

from hypothesis import assume
from hypothesis import strategies as st

from .adapters import Capabilities
from .arrays import LSTMConfig
from .case import LAYOUTS, PACKINGS, Call, Case, Fault, PackingCall

__all__ = ["FOCI", "cases", "focus_cases", "input_sizes", "hidden_sizes", "num_layers", "proj_sizes",
           "dropouts", "seq_lens", "batch_sizes", "lengths_lists", "seeds", "bad_constructor_cases",
           "bad_call_cases", "bad_packing_calls", "CALL_FAULTS", "PACKED_CALL_FAULTS", "call_fault_requirements"]


# issue 6 (speed): the axis strategies are built once and reused (lru_cache), not rebuilt for every
# draw: hypothesis validates each new strategy object, which was a third of the cost of drawing a case.
# The strategies, and so the cases drawn for a given seed, are exactly the same.
_cached = lru_cache(maxsize=None)


def _occasionally(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``rare`` one draw in ten, else ``common``; shrinks towards ``common``."""
    return st.integers(0, 9).flatmap(lambda k: rare if k == 9 else common)


@_cached
def input_sizes() -> st.SearchStrategy[int]:
    return _occasionally(st.integers(1, 8), st.integers(9, 40))


@_cached
def hidden_sizes() -> st.SearchStrategy[int]:
    """Mostly small (1 included), occasionally above 64 where kernels tile differently."""
    return _occasionally(st.integers(1, 12), st.integers(65, 80))


@_cached
def num_layers() -> st.SearchStrategy[int]:
    return st.integers(1, 4)


@_cached
def proj_sizes(hidden_size: int) -> st.SearchStrategy[int]:
    """0 (no projection) or 1 .. hidden_size - 1."""
    if hidden_size < 2:
        return st.just(0)
    return st.one_of(st.just(0), st.integers(1, hidden_size - 1))


@_cached
def _probabilities() -> st.SearchStrategy[float]:
    return st.floats(0.05, 0.95).map(lambda p: round(p, 3))


@_cached
def dropouts() -> st.SearchStrategy[float]:
    """0, a probability strictly between 0 and 1, or 1.0 (everything dropped)."""
    return st.one_of(st.just(0.0), _probabilities(), st.just(1.0))


@_cached
def seq_lens() -> st.SearchStrategy[int]:
    """1, short, and occasionally 100 or more."""
    return _occasionally(st.integers(1, 6), st.integers(100, 130))


@_cached
def batch_sizes() -> st.SearchStrategy[int]:
    """1, small, and occasionally 17 or more (torch.sort reorders tied lengths from 17 on)."""
    return _occasionally(st.integers(1, 4), st.integers(17, 24))


@_cached
def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**16 - 1)


@_cached
def _sampled(values: tuple) -> st.SearchStrategy:
    return st.sampled_from(values)


@_cached
def _length_others(max_len: int) -> st.SearchStrategy:
    return st.lists(st.integers(1, max_len), max_size=2, unique=True)


@_cached
def _lengths_from(pool: tuple, count: int) -> st.SearchStrategy:
    return st.lists(_sampled(pool), min_size=count, max_size=count)


@_cached
def _dropped() -> st.SearchStrategy[float]:
    return st.one_of(_probabilities(), st.just(1.0))


@_cached
@st.composite
def lengths_lists(draw: Any, batch: int, max_len: int, sorted_desc: bool) -> tuple[int, ...]:
    """Per-sequence lengths, the longest being ``max_len``, from a small pool so ties are common."""
    others = draw(_length_others(max_len))
    pool = sorted({max_len, *others}, reverse=True)
    lengths = draw(_lengths_from(tuple(pool), batch - 1))
    position = draw(st.integers(0, batch - 1))
    lengths.insert(position, max_len)
    return tuple(sorted(lengths, reverse=True)) if sorted_desc else tuple(lengths)


def _flag(draw: Any, feature: str, allowed: frozenset, required: frozenset) -> bool:
    """Draw an on/off axis: forced on when required, off when unsupported."""
    if feature in required:
        return True
    if feature not in allowed:
        return False
    return draw(st.booleans())


@st.composite
def cases(
    draw: Any,
    capabilities: Capabilities = Capabilities(),
    require: Iterable[str] = (),
    dtype: Optional[str] = None,
    seq_len: Optional[st.SearchStrategy[int]] = None,
    batch: Optional[st.SearchStrategy[int]] = None,
    hidden_size: Optional[st.SearchStrategy[int]] = None,
    input_size: Optional[st.SearchStrategy[int]] = None,
    training: Optional[bool] = None,
    dropout: Optional[st.SearchStrategy[float]] = None,
    weight_scale: Optional[st.SearchStrategy[float]] = None,
    same_state: bool = False,
) -> Case:
    """A full case using only what ``capabilities`` declares, with the ``require``d features on."""
    allowed, required = capabilities.features, frozenset(require)
    # -- the model
    in_size = draw(input_sizes() if input_size is None else input_size)
    hidden = draw(hidden_sizes() if hidden_size is None else hidden_size)
    if "proj_size" in required:
        hidden = max(hidden, 2)  # a projection needs 1 <= proj_size < hidden_size
    layers = draw(st.integers(2, 4) if {"multi_layer", "dropout"} & required
                  else num_layers() if "multi_layer" in allowed else st.just(1))
    proj = draw(st.integers(1, hidden - 1) if "proj_size" in required
                else proj_sizes(hidden) if "proj_size" in allowed and not same_state else st.just(0))
    model_dtype = dtype or draw(_sampled(tuple(sorted(capabilities.dtypes, key=["float32", "float64"].index))))
    # -- the mode: a random dropout mask needs the "dropout" capability
    is_training = training if training is not None else ("dropout" in required or draw(st.booleans()))
    can_drop = "dropout" in allowed and is_training
    if dropout is None:
        dropout = (_dropped() if "dropout" in required
                   else dropouts() if (can_drop or not is_training) else st.just(0.0))
    drop = draw(dropout)
    config = LSTMConfig(
        input_size=in_size, hidden_size=hidden, num_layers=layers,
        bias=not _flag(draw, "no_bias", allowed, required),
        batch_first=_flag(draw, "batch_first", allowed, required),
        dropout=drop,
        bidirectional=_flag(draw, "bidirectional", allowed, required),
        proj_size=proj, dtype=model_dtype,
    )
    # -- the input form: packed, unbatched, or dense (possibly a non-contiguous view)
    batch_size = draw(batch_sizes() if batch is None else batch)
    form = "dense"
    if {"packed", "packed_unsorted"} & required:
        form = "packed"
    elif "unbatched" in required:
        form = "unbatched"
    else:
        excluded = set()
        if batch is not None:
            excluded.add("unbatched")  # a focus on batch sizes needs a batch dimension
        if "noncontiguous" in required:
            excluded.add("packed")  # a view's layout only applies to dense input
        if batch_size == 0:
            excluded.add("packed")  # an empty batch cannot be packed
        forms = ["dense"] + [f for f in ("packed", "unbatched") if f in allowed and f not in excluded]
        form = draw(_sampled(tuple(forms)))
    length = draw(seq_lens() if seq_len is None else seq_len)
    n = None if form == "unbatched" else batch_size
    call_kwargs: dict[str, Any] = {}
    if form == "packed":
        enforce_sorted = not _flag(draw, "packed_unsorted", allowed, required)
        lengths = draw(lengths_lists(n, length, sorted_desc=enforce_sorted))
        call_kwargs = dict(packing=draw(_sampled(PACKINGS)), lengths=lengths,
                           enforce_sorted=enforce_sorted)
        length = max(lengths)
    elif "noncontiguous" in required:
        call_kwargs["layout"] = draw(_sampled(LAYOUTS[1:]))
    elif "noncontiguous" in allowed:
        call_kwargs["layout"] = draw(_sampled(LAYOUTS))
    call = Call(
        seq_len=length, batch=n,
        with_hx=same_state or _flag(draw, "initial_state", allowed, required),
        same_state=same_state,
        requires_grad=_flag(draw, "requires_grad", allowed, required),
        training=is_training, seed=draw(seeds()), **call_kwargs,
    )
    scale = 1.0 if weight_scale is None else draw(weight_scale)
    return Case(config, call, weight_seed=draw(seeds()), weight_scale=scale)


#: Focused tests: each makes one feature or rare axis value appear in every example.
#: A focus whose features the port does not declare is skipped with the reason.
FOCI: dict[str, dict[str, Any]] = {
    "any": {},
    **{feature: {"require": {feature}} for feature in (
        "multi_layer", "no_bias", "batch_first", "bidirectional", "proj_size", "initial_state",
        "unbatched", "packed", "packed_unsorted", "noncontiguous", "requires_grad")},
    "float64": {"dtype": "float64"},
    # training mode: what holds for any correct port, however it draws its dropout masks
    "train_dropout_0_equals_eval": {"training": True, "dropout": st.just(0.0)},
    "train_dropout_1_is_deterministic": {"training": True, "dropout": st.just(1.0), "require": {"dropout"}},
    "train_dropout_keeps_layer_0_states": {"training": True, "dropout": _probabilities(), "require": {"dropout"}},
    "eval_never_drops": {"training": False, "dropout": st.one_of(_probabilities(), st.just(1.0)),
                         "require": {"multi_layer"}},
    "long_sequence": {"seq_len": st.integers(100, 160)},
    "large_hidden": {"hidden_size": st.integers(65, 96)},
    "large_batch": {"batch": st.integers(17, 24)},
    "large_batch_packed_unsorted": {"batch": st.integers(17, 24), "require": {"packed_unsorted"}},
    "sizes_of_one": {"input_size": st.just(1), "hidden_size": st.just(1), "batch": st.just(1)},
    "empty_batch": {"batch": st.just(0)},
    "same_tensor_as_h0_and_c0": {"same_state": True, "require": {"initial_state"}},
}


#: The stress tier (not in the default run): large weights and long sequences.
STRESS: dict[str, Any] = {"weight_scale": st.sampled_from([2.0, 3.0]), "seq_len": st.integers(200, 500),
                          "batch": st.integers(1, 4)}


def focus_requirements(focus: str) -> tuple[set[str], Optional[str]]:
    """The features and dtype a focus needs from a port."""
    spec = FOCI[focus]
    return set(spec.get("require", ())), spec.get("dtype")


@_cached
def focus_cases(capabilities: Capabilities, focus: str) -> st.SearchStrategy[Case]:
    """Cases for one entry of :data:`FOCI`, restricted to what the port declares."""
    return cases(capabilities, **FOCI[focus])


# ----------------------------------------------------------------------- invalid calls
#: Bad constructor arguments, each as (argument, value).  torch's answer to each comes from the
#: live torch; the list only says what to try.
BAD_CONSTRUCTOR_ARGUMENTS: tuple[tuple[str, Any], ...] = (
    ("dropout", "abc"), ("dropout", None), ("dropout", 1.5), ("dropout", -0.1), ("dropout", True),
    ("dropout", "0.5"), ("dropout", float("nan")),
    ("bias", 1), ("batch_first", 0),
    ("input_size", 4.0), ("input_size", None), ("input_size", 0), ("input_size", -3),
    ("hidden_size", 8.0), ("hidden_size", "8"), ("hidden_size", 0),
    ("num_layers", 0), ("num_layers", -1), ("num_layers", 2.0), ("num_layers", None),
    ("proj_size", -1), ("proj_size", None), ("proj_size", "hidden_size"), ("proj_size", "hidden_size + 1"),
    ("proj_size", 2.0), ("proj_size", True),
    ("dtype", "int64"),
)


@_cached
def _constructor_base(capabilities: Capabilities) -> st.SearchStrategy[Case]:
    return cases(capabilities, training=False, hidden_size=st.integers(2, 8))


@_cached
@st.composite
def bad_constructor_cases(draw: Any, capabilities: Capabilities = Capabilities()) -> Case:
    """A case whose constructor arguments torch rejects (type or range)."""
    base = draw(_constructor_base(capabilities))
    name, value = draw(_sampled(BAD_CONSTRUCTOR_ARGUMENTS))
    if value == "hidden_size":
        value = base.config.hidden_size
    elif value == "hidden_size + 1":
        value = base.config.hidden_size + 1
    config = replace(base.config, **{name: value})
    return Case(config, Call(seq_len=1), fault=Fault(f"{name}={value!r}", stage="construct"))


def _other_dtype(dtype: str) -> str:
    return "torch.float64" if dtype == "float32" else "torch.float32"


def _empty_sequence(case: Case) -> str:
    batch_first = case.config.batch_first and not case.call.unbatched
    return "x = x[:, :0]" if batch_first else "x = x[:0]"


@dataclass(frozen=True)
class CallFault:
    """One kind of bad call: what it needs from the case, and the code that makes it."""

    target: str  # "input" or "hx"
    make: Callable[[Case], tuple[tuple[str, ...], Optional[str]]]  # case -> (lines, args)
    require: frozenset = frozenset()
    batched: bool = False  # needs a batch dimension of at least 2


def _lines(*lines: str) -> Callable[[Case], tuple[tuple[str, ...], Optional[str]]]:
    return lambda case: (lines, None)


#: Every kind of bad call torch checks (or should), by name.  What torch does with each comes
#: from the live torch; this table only says what to try.
CALL_FAULTS: dict[str, CallFault] = {
    "input is 0-D": CallFault("input", _lines("x = x.flatten()[0]")),
    "input is 1-D": CallFault("input", _lines("x = x.flatten()")),
    "input is 4-D": CallFault("input", _lines("x = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))")),
    "input has one feature too many": CallFault("input", _lines("x = torch.cat([x, x[..., :1]], dim=-1)")),
    "input has one feature too few": CallFault("input", _lines("x = x[..., 1:]")),
    "input dtype differs from the weights": CallFault(
        "input", lambda c: ((f"x = x.to({_other_dtype(c.config.dtype)})",), None)),
    "sequence length 0": CallFault("input", lambda c: ((_empty_sequence(c),), None)),
    "hx is a single tensor, not a tuple": CallFault("hx", lambda c: ((), "(x, h0)")),
    "hx is a tuple of three tensors": CallFault("hx", lambda c: ((), "(x, (h0, c0, c0))")),
    "hx is a tuple of one tensor": CallFault("hx", lambda c: ((), "(x, (h0,))")),
    "h0 has one dimension too few": CallFault("hx", _lines("h0 = h0[0]")),
    "c0 has one dimension too many": CallFault("hx", _lines("c0 = c0.unsqueeze(0)")),
    "h0 has one layer too many": CallFault("hx", _lines("h0 = torch.cat([h0, h0[:1]])")),
    "c0 has one layer too many": CallFault("hx", _lines("c0 = torch.cat([c0, c0[:1]])")),
    "h0 has one layer too few": CallFault("hx", _lines("h0 = h0[1:]"), frozenset({"multi_layer"})),
    "c0 has one layer too few": CallFault("hx", _lines("c0 = c0[1:]"), frozenset({"multi_layer"})),
    "h0 has one batch element too many": CallFault("hx", _lines("h0 = torch.cat([h0, h0[:, :1]], dim=1)"),
                                                   batched=True),
    "c0 has one batch element too many": CallFault("hx", _lines("c0 = torch.cat([c0, c0[:, :1]], dim=1)"),
                                                   batched=True),
    "h0 has one batch element too few": CallFault("hx", _lines("h0 = h0[:, 1:]"), batched=True),
    "h0 has one feature too many": CallFault("hx", _lines("h0 = torch.cat([h0, h0[..., :1]], dim=-1)")),
    "c0 has one feature too many": CallFault("hx", _lines("c0 = torch.cat([c0, c0[..., :1]], dim=-1)")),
    "h0 has hidden_size features, not proj_size": CallFault(
        "hx", _lines("h0 = torch.randn(*c0.shape, dtype=h0.dtype)"), frozenset({"proj_size"})),
    "c0 has proj_size features, not hidden_size": CallFault(
        "hx", _lines("c0 = torch.randn(*h0.shape, dtype=c0.dtype)"), frozenset({"proj_size"})),
    "hx in batch_first layout": CallFault(
        "hx", _lines("h0 = h0.transpose(0, 1)", "c0 = c0.transpose(0, 1)"), frozenset({"batch_first"}), batched=True),
    "h0 dtype differs from the weights": CallFault(
        "hx", lambda c: ((f"h0 = h0.to({_other_dtype(c.config.dtype)})",), None)),
    "c0 dtype differs from the weights": CallFault(
        "hx", lambda c: ((f"c0 = c0.to({_other_dtype(c.config.dtype)})",), None)),
}
#: The faults that apply to packed input: torch checks nothing there in Python.
PACKED_CALL_FAULTS = [name for name, fault in CALL_FAULTS.items() if fault.target == "hx"]


def call_fault_requirements(name: str, packed: bool = False) -> set[str]:
    """The features a port needs for this fault to be tried on it."""
    fault = CALL_FAULTS[name]
    return set(fault.require) | ({"initial_state"} if fault.target == "hx" else set()) | ({"packed"} if packed else set())


@_cached
def _fault_base(fault: str, capabilities: Capabilities, packed: bool) -> st.SearchStrategy[Case]:
    return cases(capabilities, require=call_fault_requirements(fault, packed), training=False,
                 seq_len=st.integers(1, 5), batch=st.integers(2, 4) if CALL_FAULTS[fault].batched else None)


@_cached
@st.composite
def bad_call_cases(draw: Any, fault: str, capabilities: Capabilities = Capabilities(), packed: bool = False) -> Case:
    """A valid model with the named bad call (see :data:`CALL_FAULTS`), dense or packed."""
    spec = CALL_FAULTS[fault]
    base = draw(_fault_base(fault, capabilities, packed))
    if not packed and base.call.packed:
        base = replace(base, call=replace(base.call, packing=None, lengths=None, enforce_sorted=True))
    if spec.target == "input" and base.call.layout == "sliced" and fault.startswith("input has one feature"):
        base = replace(base, call=replace(base.call, layout="contiguous"))
    if fault == "input has one feature too few":
        base = replace(base, config=replace(base.config, input_size=max(base.config.input_size, 2)))
    if fault == "hx in batch_first layout":  # swapped dims must differ from the right ones
        layers = base.config.num_layers * base.config.num_directions
        assume(base.call.batch != layers)
    lines, args = spec.make(base)
    return replace(base, call=replace(base.call, same_state=False), fault=Fault(fault, lines=lines, args=args))


@st.composite
def bad_packing_calls(draw: Any) -> PackingCall:
    """Lengths that torch's packing functions reject: unsorted, zero or negative, the wrong count."""
    function = draw(st.sampled_from(["pack_padded_sequence", "pack_sequence"]))
    batch = draw(st.integers(2, 5))
    lengths = sorted(draw(st.lists(st.integers(1, 6), min_size=batch, max_size=batch)), reverse=True)
    kinds = ["zero length", "negative length"] if function == "pack_padded_sequence" else ["zero length"]
    if len(set(lengths)) > 1:
        kinds.append("unsorted lengths with enforce_sorted=True")
    if function == "pack_padded_sequence":
        kinds.append("one length more than the batch")
    kind = draw(st.sampled_from(kinds))
    enforce_sorted = draw(st.booleans())
    if kind == "zero length":
        lengths[draw(st.integers(0, batch - 1))] = 0
    elif kind == "negative length":
        lengths[-1] = -1
    elif kind.startswith("unsorted"):
        lengths, enforce_sorted = lengths[::-1], True
    else:
        lengths.append(lengths[-1])
    return PackingCall(function, tuple(lengths), batch, enforce_sorted, draw(st.booleans()), seed=draw(seeds()),
                       fault=kind)
