"""Hypothesis strategies for LSTM cases: one small strategy per axis, composed into cases.

Every strategy shrinks towards the plainest value of its axis (one layer, bias on, no
packing, ...), so a shrunk failure names only the axes that matter.  Rare but important sizes,
just past the boundaries kernels tile at (batch past 16, 32 and 64 rows; input, hidden and
projected features past 64, 128 and 256; sequences past 64, 128 and 256 steps; more than 4
layers), are drawn occasionally everywhere and always in the focused tests of :data:`FOCI`.  A
cost model (:func:`case_cost`) caps every case, so a large model comes with a short sequence and
a small batch.

The invalid calls the error tests make are :mod:`conformance.bad_calls`, built on these strategies.
How cases are drawn: ``docs/what-is-checked.md``; where a new axis goes: ``CONTRIBUTING.md``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any, Iterable, Optional

from hypothesis import strategies as st

from .adapters import FEATURES, Capabilities
from .arrays import LSTMConfig
from .case import ARGUMENT_FORMS, LAYOUTS, PACKINGS, SPECIALS, STATE_LAYOUTS, Call, Case, Values
from .dtypes import DTYPES, HALF

__all__ = ["FOCI", "STRESS", "cases", "focus_cases", "focus_requirements", "input_sizes", "hidden_sizes", "num_layers",
           "proj_sizes", "projections", "past", "case_cost", "MAX_COST", "dropouts", "seq_lens", "batch_sizes",
           "lengths_lists", "seeds", "cached", "sampled"]


#: Builds a strategy once and reuses it (lru_cache), not rebuilt for every draw: hypothesis validates
#: each new strategy object, a large share of the cost of drawing a case.  The strategies, and so the
#: cases drawn for a given seed, are exactly the same.  ``conformance.bad_calls`` uses it too.
cached = lru_cache(maxsize=None)


def _occasionally(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``rare`` one draw in ten, else ``common``; shrinks towards ``common``."""
    return st.integers(0, 9).flatmap(lambda k: rare if k == 9 else common)


#: The boundaries kernels tile a size axis at (blocks of 16, 32, 64, 128, 256): a rare size is drawn
#: just past one of them (:func:`past`).  A boundary listed twice is drawn twice as often.
BATCH_BOUNDARIES = (16, 32, 64)  # 16: torch.sort reorders tied lengths from 17 on
FEATURE_BOUNDARIES = (64, 64, 128, 128, 256)  # input_size, hidden_size and proj_size; 256 more rarely
STEP_BOUNDARIES = (64, 128, 256)
#: How far past its boundary a rare size goes, at most: batch rows, features, steps.
BATCH_SPAN, FEATURE_SPAN, STEP_SPAN = 8, 16, 32
#: The common number of layers goes up to this; a rare one goes up to two past it.
MAX_LAYERS = 4


@cached
def past(boundaries: tuple[int, ...], span: int, limit: Optional[int] = None) -> st.SearchStrategy[int]:
    """A size 1 .. ``span`` past one of ``boundaries`` (at most ``limit``, and only boundaries below it).

    The boundary and the offset past it are drawn apart, so a failure shrinks to the lowest boundary
    at which it still shows, then to 1 past it: a bug in 128-row tiles shrinks to 129, not to 65
    (unless 65 fails too).
    """
    below = tuple(b for b in boundaries if limit is None or b < limit)
    if not below:
        raise ValueError(f"no boundary of {boundaries} lies below {limit}")
    pairs = st.tuples(sampled(below), st.integers(1, span))
    return pairs.map(sum) if limit is None else pairs.map(lambda pair: min(sum(pair), limit))


@cached
def input_sizes() -> st.SearchStrategy[int]:
    """Mostly 1 .. 8; occasionally 9 .. 40, or just past a feature boundary."""
    return _occasionally(st.integers(1, 8), st.one_of(st.integers(9, 40), past(FEATURE_BOUNDARIES, FEATURE_SPAN)))


@cached
def hidden_sizes() -> st.SearchStrategy[int]:
    """Mostly small (1 included), occasionally just past 64, 128 or (more rarely) 256, where kernels tile."""
    return _occasionally(st.integers(1, 12), past(FEATURE_BOUNDARIES, FEATURE_SPAN))


@cached
def num_layers(least: int = 1) -> st.SearchStrategy[int]:
    """``least`` .. 4, occasionally 5 or 6 (weight loading or state buffers sized for 4 layers)."""
    return _occasionally(st.integers(least, MAX_LAYERS), st.integers(MAX_LAYERS + 1, MAX_LAYERS + 2))


@cached
def projections(hidden_size: int) -> st.SearchStrategy[int]:
    """1 .. hidden_size - 1, occasionally just past a feature boundary below hidden_size."""
    some = st.integers(1, hidden_size - 1)
    if hidden_size - 1 <= min(FEATURE_BOUNDARIES):
        return some
    return _occasionally(some, past(FEATURE_BOUNDARIES, FEATURE_SPAN, limit=hidden_size - 1))


@cached
def proj_sizes(hidden_size: int) -> st.SearchStrategy[int]:
    """0 (no projection) or 1 .. hidden_size - 1 (see :func:`projections`)."""
    if hidden_size < 2:
        return st.just(0)
    return st.one_of(st.just(0), projections(hidden_size))


@cached
def _probabilities() -> st.SearchStrategy[float]:
    return st.floats(0.05, 0.95).map(lambda p: round(p, 3))


@cached
def dropouts() -> st.SearchStrategy[float]:
    """0, a probability strictly between 0 and 1, or 1.0 (everything dropped)."""
    return st.one_of(st.just(0.0), _probabilities(), st.just(1.0))


@cached
def seq_lens() -> st.SearchStrategy[int]:
    """1, short, and occasionally just past 64, 128 or 256 steps."""
    return _occasionally(st.integers(1, 6), past(STEP_BOUNDARIES, STEP_SPAN))


@cached
def batch_sizes() -> st.SearchStrategy[int]:
    """1, small, and occasionally just past 16 (torch.sort reorders tied lengths from 17 on), 32 or 64 rows."""
    return _occasionally(st.integers(1, 4), past(BATCH_BOUNDARIES, BATCH_SPAN))


#: The most one case may cost (:func:`case_cost`); its model may take up to half of it.  A model past
#: that has its layers cut, then its hidden size, then its input size; a call past the rest has its
#: sequence cut, then its batch.  A size a focus fixes is kept.
MAX_COST = 5 * 10**8
#: A half-precision case may cost this share of :data:`MAX_COST` at most: torch's CPU kernels take
#: several times as long per multiply-add in float16 and bfloat16 as in float32.
HALF_COST_SHARE = 4
#: What one step of one direction of one layer costs beyond its arithmetic (launching the step's
#: kernels, a Python loop's turn), in multiply-adds.
STEP_COST = 400_000
#: What one parameter costs whatever the call (initialising, copying, loading and comparing the
#: weights), in multiply-adds.
PARAMETER_COST = 250


def _row_cost(config: LSTMConfig) -> int:
    """Multiply-adds of one time step of one batch row, over every layer and direction."""
    hidden, out, directions = config.hidden_size, config.output_size, config.num_directions
    total = 0
    for layer in range(config.num_layers):
        width = config.input_size if layer == 0 else out * directions
        total += directions * (4 * hidden * (width + out) + (out * hidden if config.proj_size else 0))
    return total


def _model_cost(config: LSTMConfig) -> int:
    """:data:`PARAMETER_COST` for each of the model's parameters (biases included)."""
    biases = 8 * config.hidden_size * config.num_layers * config.num_directions if config.bias else 0
    return PARAMETER_COST * (_row_cost(config) + biases)


def case_cost(config: LSTMConfig, seq_len: int, batch: Optional[int]) -> int:
    """The work of one case: one forward call's multiply-adds, about hidden_size^2 x layers x directions x
    steps x batch (``batch=None``: unbatched), plus :data:`STEP_COST` per step of each layer and
    direction, plus its model's :func:`_model_cost`."""
    rows = 1 if batch is None else batch
    steps = config.num_layers * config.num_directions * STEP_COST
    return seq_len * (rows * _row_cost(config) + steps) + _model_cost(config)


def _model_within_cost(config: LSTMConfig, least_layers: int, fixed: frozenset, limit: int = MAX_COST) -> LSTMConfig:
    """``config`` cut until its model costs at most half of ``limit``: its layers first (to
    ``least_layers``), then its hidden size, then its input size, never a size named in ``fixed``
    (a focus drew it).  A projection stays below the hidden size."""
    budget = limit // 2

    def fits(**sizes: Any) -> bool:  # sizes of the config, by field name
        return _model_cost(replace(config, **sizes)) <= budget

    def largest(name: str, low: int) -> int:  # the largest value of ``name`` in [low, now] that fits
        high = getattr(config, name)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(**{name: middle}) else (low, middle - 1)
        return low

    if fits() or fixed >= {"num_layers", "hidden_size", "input_size"}:
        return config
    if "num_layers" not in fixed:
        config = replace(config, num_layers=largest("num_layers", min(least_layers, config.num_layers)))
    if "hidden_size" not in fixed and not fits():
        lowest = config.proj_size + 1 if "proj_size" in fixed else 2 if config.proj_size else 1
        config = replace(config, hidden_size=largest("hidden_size", min(lowest, config.hidden_size)))
        config = replace(config, proj_size=min(config.proj_size, config.hidden_size - 1))
    if "input_size" not in fixed and not fits():
        config = replace(config, input_size=largest("input_size", 1))
    return config


def _within_cost(config: LSTMConfig, batch: Optional[int], seq_len: int, fixed_batch: bool,
                 fixed_steps: bool, limit: int = MAX_COST) -> tuple[Optional[int], int]:
    """``(batch, seq_len)`` cut to fit ``limit``: the sequence first, then the batch.  A size that
    is ``fixed`` (a focus drew it) is kept, except that a fixed sequence too long for the model even
    with one batch row is cut as a last resort, never to fewer steps than just past the first boundary."""
    per_step = config.num_layers * config.num_directions * STEP_COST
    row = _row_cost(config)
    budget = limit - _model_cost(config)

    def steps_fitting() -> int:
        return max(1, budget // ((1 if batch is None else batch) * row + per_step))

    if not fixed_steps and case_cost(config, seq_len, batch) > limit:
        seq_len = steps_fitting()
    if batch and not fixed_batch and case_cost(config, seq_len, batch) > limit:
        batch = max(1, min(batch, (budget // seq_len - per_step) // row))
    if case_cost(config, seq_len, batch) > limit:
        seq_len = min(seq_len, max(steps_fitting(), STEP_BOUNDARIES[0] + 1))
    return batch, seq_len


def _drawn_dtypes(declared: frozenset) -> tuple[str, ...]:
    """The dtypes a case that fixes none is drawn from: the full-precision ones the port declares, else its
    half-precision ones.  Half precision has foci of its own (:data:`FOCI`), so that its slower cases
    stay a few tests' worth in every profile."""
    full = tuple(name for name in DTYPES if name in declared and name not in HALF)
    return full or tuple(name for name in DTYPES if name in declared)


@cached
def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**16 - 1)


@cached
def sampled(values: tuple) -> st.SearchStrategy:
    """``st.sampled_from(values)``, built once per tuple of values."""
    return st.sampled_from(values)


@cached
def _length_others(max_len: int) -> st.SearchStrategy:
    return st.lists(st.integers(1, max_len), max_size=2, unique=True)


@cached
def _lengths_from(pool: tuple, count: int) -> st.SearchStrategy:
    return st.lists(sampled(pool), min_size=count, max_size=count)


@cached
def _dropped() -> st.SearchStrategy[float]:
    return st.one_of(_probabilities(), st.just(1.0))


@cached
@st.composite
def lengths_lists(draw: Any, batch: int, max_len: int, sorted_desc: bool) -> tuple[int, ...]:
    """Per-sequence lengths, the longest being ``max_len``, from a small pool so ties are common."""
    others = draw(_length_others(max_len))
    pool = sorted({max_len, *others}, reverse=True)
    lengths = draw(_lengths_from(tuple(pool), batch - 1))
    position = draw(st.integers(0, batch - 1))
    lengths.insert(position, max_len)
    return tuple(sorted(lengths, reverse=True)) if sorted_desc else tuple(lengths)


#: The layouts of packed data: a view of it, never expanded (every row the same sequence step).
PACKED_LAYOUTS = tuple(layout for layout in LAYOUTS if layout != "expanded")


def _draw_layouts(draw: Any, call: Call, allowed: frozenset, required: frozenset, views: str) -> dict[str, Any]:
    """The memory layouts of the input and of (h0, c0), and how the call passes its arguments.

    Each shrinks towards the plain value: contiguous tensors, passed positionally with hx a tuple.
    """
    fields = {}
    if "noncontiguous" in allowed:
        layouts = PACKED_LAYOUTS if call.packed else LAYOUTS
        forced = "noncontiguous" in required and views == "input"
        fields["layout"] = draw(sampled(layouts[1:] if forced else layouts))
        if call.with_hx:
            forced = "noncontiguous" in required and views == "hx"
            fields["state_layout"] = draw(sampled(STATE_LAYOUTS[1:] if forced else STATE_LAYOUTS))
    if "argument_forms" in allowed:
        forms: tuple[str, ...] = ARGUMENT_FORMS[1:] if "argument_forms" in required else ARGUMENT_FORMS
        if not call.with_hx:
            forms = tuple(form for form in forms if form != "hx_list")  # no hx, no list
        fields["arguments"] = draw(sampled(forms))
    return fields


def _flag(draw: Any, feature: str, allowed: frozenset, required: frozenset) -> bool:
    """Draw an on/off axis: forced on when required, off when unsupported."""
    if feature in required:
        return True
    if feature not in allowed:
        return False
    return draw(st.booleans())


def _draw_model_sizes(draw: Any, allowed: frozenset, required: frozenset, same_state: bool,
                      input_size: Optional[st.SearchStrategy[int]], hidden_size: Optional[st.SearchStrategy[int]],
                      proj_size: Optional[st.SearchStrategy[int]],
                      layer_count: Optional[st.SearchStrategy[int]]) -> tuple[int, int, int, int]:
    """input_size, hidden_size, num_layers and proj_size, each from the strategy a focus gives or its own."""
    in_size = draw(input_sizes() if input_size is None else input_size)
    hidden = draw(hidden_sizes() if hidden_size is None else hidden_size)
    if "proj_size" in required:
        hidden = max(hidden, 2)  # a projection needs 1 <= proj_size < hidden_size
    if layer_count is not None:
        layers = draw(layer_count)
    else:
        layers = draw(num_layers(2) if {"multi_layer", "dropout"} & required
                      else num_layers() if "multi_layer" in allowed else st.just(1))
    if proj_size is not None:  # a focus on projections: the hidden size grows to hold the drawn one
        proj = draw(proj_size)
        hidden = max(hidden, proj + 1)
    else:
        proj = draw(projections(hidden) if "proj_size" in required
                    else proj_sizes(hidden) if "proj_size" in allowed and not same_state else st.just(0))
    return in_size, hidden, layers, proj


#: What a case's tensors may hold besides ``randn`` at unit scale (:class:`~conformance.case.Values`):
#: ``large`` (x, h0 or c0 scaled up, or the weights), ``tiny`` (every tensor scaled down), ``mixed``
#: (per-feature scales over ten decades), ``zeros`` (all-zero steps, sequences or features, maybe
#: negative zeros) and ``special`` (NaN or +-inf in single elements).
VALUE_KINDS = ("large", "tiny", "mixed", "zeros", "special")
LARGE_SCALES = (1e2, 1e4)
#: bfloat16 also gets values past float16's range (65504), which it holds as float32 does.
BFLOAT16_LARGE_SCALES = (1e6,)
TINY_SCALES = (1e-3, 1e-6)
#: The kinds that go beyond unit scale or hold special values: drawn only without random dropout masks.
BEYOND_UNIT = ("large", "mixed", "special")
#: Per-feature scales of ``mixed``: 10**lo for the first feature .. 10**hi for the last.
FEATURE_DECADES = ((-6, 4), (4, -6))
#: Weights beyond torch's default initialisation, in the normal run (the stress tier has its own).
WEIGHT_SCALES = (2.0, 4.0)
#: Weights are scaled in the normal run only for sequences up to this long: large weights over
#: long sequences are the stress tier's.
WEIGHT_SCALE_MAX_STEPS = 64


@cached
def _value_kinds() -> st.SearchStrategy[str]:
    """"plain" nine draws in ten; else one of :data:`VALUE_KINDS`."""
    return _occasionally(st.just("plain"), sampled(VALUE_KINDS))


@cached
def _weight_scales() -> st.SearchStrategy[float]:
    return _occasionally(st.just(1.0), sampled(WEIGHT_SCALES))


@cached
def _indices(size: int, most: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, size - 1), min_size=1, max_size=min(most, size), unique=True).map(sorted)


def _draw_values(draw: Any, config: LSTMConfig, call: Call, kind: Optional[str],
                 weight_scale: Optional[st.SearchStrategy[float]]) -> tuple[dict[str, Any], float]:
    """The value fields of ``call`` (``x_values``, ``h0_values``, ``c0_values``) and the weight scale.

    ``kind`` (one of :data:`VALUE_KINDS`) is what a focus asks for; ``None`` draws plain values nine
    times in ten.  Special values come only at unit scale, where torch's float32 result and its
    float64 oracle agree on every NaN and inf (see :mod:`conformance.compare`).  Special values,
    large and mixed scales and scaled weights come only in cases without a random dropout mask (a
    focus that asks for them in training mode with one gets plain values): the policy measures
    their sensitivity to rounding on the deterministic comparison.
    """
    case = Case(config, call)
    scale = draw(weight_scale) if weight_scale is not None else (
        draw(_weight_scales()) if call.seq_len <= WEIGHT_SCALE_MAX_STEPS and case.deterministic else 1.0)
    kind = draw(_value_kinds()) if kind is None else kind
    if kind == "plain" or call.batch == 0 or (kind in BEYOND_UNIT and not case.deterministic):
        return {}, scale
    states = [] if not call.with_hx else ["h0"] if call.same_state else ["h0", "c0"]
    widths = {"x": config.input_size, "h0": config.output_size, "c0": config.hidden_size}
    found: dict[str, Values] = {}
    if kind == "large":
        target = draw(sampled(("x", *states, "weights")))
        scales = LARGE_SCALES + BFLOAT16_LARGE_SCALES if config.dtype == "bfloat16" else LARGE_SCALES
        for name in ("x", *states):
            factor = draw(sampled(scales)) if name == target else draw(sampled((1.0, *scales)))
            found[name] = Values(scale=factor)
        if target == "weights" and weight_scale is None:
            scale = draw(sampled(WEIGHT_SCALES))
    elif kind == "tiny":  # every tensor, so the whole case computes at that scale (a bias still does not)
        factor = draw(sampled(TINY_SCALES))
        found = {name: Values(scale=factor) for name in ("x", *states)}
    elif kind == "mixed":
        for name in ("x", *states):
            mixed = name == "x" or draw(st.booleans())
            found[name] = Values(feature_decades=draw(sampled(FEATURE_DECADES))) if mixed else Values()
    elif kind == "zeros":
        found["x"] = _draw_zeros(draw, config, call)
    elif kind == "special":
        scale = 1.0
        target = draw(sampled(("x", *states)))
        elements = draw(st.lists(st.tuples(_element(call, config, target, widths[target]), sampled(SPECIALS)),
                                 min_size=1, max_size=2, unique_by=lambda pair: pair[0]))
        found[target] = Values(special=tuple(elements))
    return {f"{name}_values": values for name, values in found.items() if not values.plain}, scale


def _draw_zeros(draw: Any, config: LSTMConfig, call: Call) -> Values:
    """All-zero time steps, batch elements or features of x (one kind at least), maybe as -0.0."""
    # the steps every sequence has (packed calls always have lengths)
    steps = min(call.lengths or ()) if call.packing == "pack_sequence" else call.seq_len
    kinds = ["steps", "features"] + ([] if call.unbatched else ["sequences"])
    first = draw(sampled(tuple(kinds)))
    chosen = {kind for kind in kinds if kind == first or draw(st.booleans())}
    return Values(zero_steps=tuple(draw(_indices(steps, 2))) if "steps" in chosen else (),
                  zero_sequences=tuple(draw(_indices(call.batch, 1))) if "sequences" in chosen else (),
                  zero_features=tuple(draw(_indices(config.input_size, 1))) if "features" in chosen else (),
                  negative_zeros=draw(st.booleans()))


def _element(call: Call, config: LSTMConfig, tensor: str, width: int) -> st.SearchStrategy[tuple[int, ...]]:
    """The logical index of one element of x, h0 or c0 (see :class:`~conformance.case.Values`)."""
    features = st.integers(0, width - 1)
    batch = call.batch  # None: unbatched
    if tensor != "x":
        rows = st.integers(0, config.num_layers * config.num_directions - 1)
        if batch is None:
            return st.tuples(rows, features)
        return st.tuples(rows, st.integers(0, batch - 1), features)
    if batch is None:
        return st.tuples(st.integers(0, call.seq_len - 1), features)
    if call.packed:  # a step within that sequence's own length (the padding is not part of the input)
        lengths = call.lengths or ()  # always set for packed input
        return st.integers(0, batch - 1).flatmap(
            lambda b: st.tuples(st.integers(0, lengths[b] - 1), st.just(b), features))
    return st.tuples(st.integers(0, call.seq_len - 1), st.integers(0, batch - 1), features)


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
    views: str = "input",
    proj_size: Optional[st.SearchStrategy[int]] = None,
    layer_count: Optional[st.SearchStrategy[int]] = None,
    values: Optional[str] = None,
) -> Case:
    """A full case using only what ``capabilities`` declares, with the ``require``d features on.

    With ``noncontiguous`` required, ``views`` says which tensors are sure to be views: the
    ``"input"`` (a dense tensor or the packed data) or ``"hx"`` (h0 and c0).  ``values`` (one of
    :data:`VALUE_KINDS`) puts that kind of values in every case; by default one case in ten has some.
    """
    allowed, required = frozenset(capabilities.features), frozenset(require)
    # -- the model
    in_size, hidden, layers, proj = _draw_model_sizes(draw, allowed, required, same_state, input_size, hidden_size,
                                                      proj_size, layer_count)
    model_dtype = dtype or draw(sampled(_drawn_dtypes(frozenset(capabilities.dtypes))))
    limit = MAX_COST // HALF_COST_SHARE if model_dtype in HALF else MAX_COST
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
    config = _model_within_cost(config, 2 if {"multi_layer", "dropout"} & required else 1, frozenset(
        name for name, fixed in (("input_size", input_size), ("hidden_size", hidden_size), ("proj_size", proj_size),
                                 ("num_layers", layer_count)) if fixed is not None), limit)
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
        if batch_size == 0:
            excluded.add("packed")  # an empty batch cannot be packed
        forms = ["dense"] + [f for f in ("packed", "unbatched") if f in allowed and f not in excluded]
        form = draw(sampled(tuple(forms)))
    length = draw(seq_lens() if seq_len is None else seq_len)
    n = None if form == "unbatched" else batch_size
    n, length = _within_cost(config, n, length, fixed_batch=batch is not None, fixed_steps=seq_len is not None,
                             limit=limit)
    call_kwargs: dict[str, Any] = {}
    if form == "packed":
        enforce_sorted = not _flag(draw, "packed_unsorted", allowed, required)
        lengths = draw(lengths_lists(n, length, sorted_desc=enforce_sorted))
        call_kwargs = dict(packing=draw(sampled(PACKINGS)), lengths=lengths,
                           enforce_sorted=enforce_sorted)
        length = max(lengths)
    call = Call(
        seq_len=length, batch=n,
        with_hx=same_state or _flag(draw, "initial_state", allowed, required),
        same_state=same_state,
        requires_grad=_flag(draw, "requires_grad", allowed, required),
        training=is_training, seed=draw(seeds()), **call_kwargs,
    )
    call = replace(call, **_draw_layouts(draw, call, allowed, required, views))
    value_fields, scale = _draw_values(draw, config, call, values, weight_scale)
    call = replace(call, **value_fields)
    return Case(config, call, weight_seed=draw(seeds()), weight_scale=scale)


#: The features of :data:`~conformance.adapters.FEATURES` whose foci are not the plain "required in every
#: example" one: dropout's need training mode and a rate (the ``train_*`` foci below).
OWN_FOCI_FEATURES = frozenset({"dropout"})

#: Focused tests: each makes one feature or rare axis value appear in every example; one per feature a
#: port can declare (in the order of ``FEATURES``), then the rare axis values.  A focus whose features
#: the port does not declare is skipped with the reason.  Each focus is a row of the conformance matrix
#: (``conformance.matrix_rows``).
FOCI: dict[str, dict[str, Any]] = {
    "any": {},
    **{feature: {"require": {feature}} for feature in FEATURES if feature not in OWN_FOCI_FEATURES},
    "noncontiguous_hx": {"require": {"noncontiguous", "initial_state"}, "views": "hx"},
    "float64": {"dtype": "float64"},
    # training mode: what holds for any correct port, however it draws its dropout masks
    "train_dropout_0_equals_eval": {"training": True, "dropout": st.just(0.0)},
    "train_dropout_1_is_deterministic": {"training": True, "dropout": st.just(1.0), "require": {"dropout"}},
    "train_dropout_keeps_layer_0_states": {"training": True, "dropout": _probabilities(), "require": {"dropout"}},
    # small (at most 2 steps x 2 directions x 3 features: 12 mask elements per batch element), so that
    # the dropout masks are recovered and the output judged exactly (conformance.dropout)
    "train_dropout_masks_recovered": {"training": True, "dropout": _probabilities(), "require": {"dropout"},
                                      "hidden_size": st.integers(1, 3), "seq_len": st.integers(1, 2)},
    "eval_never_drops": {"training": False, "dropout": st.one_of(_probabilities(), st.just(1.0)),
                         "require": {"multi_layer"}},
    # sizes just past the boundaries kernels tile at, one axis per test
    "long_sequence": {"seq_len": past(STEP_BOUNDARIES, STEP_SPAN)},
    "large_input_size": {"input_size": past(FEATURE_BOUNDARIES, FEATURE_SPAN)},
    "large_hidden": {"hidden_size": past(FEATURE_BOUNDARIES, FEATURE_SPAN)},
    "large_proj_size": {"proj_size": past(FEATURE_BOUNDARIES, FEATURE_SPAN), "require": {"proj_size"}},
    "many_layers": {"layer_count": st.integers(MAX_LAYERS + 1, MAX_LAYERS + 2), "require": {"multi_layer"}},
    "large_batch": {"batch": past(BATCH_BOUNDARIES, BATCH_SPAN)},
    "large_batch_packed_unsorted": {"batch": past(BATCH_BOUNDARIES, BATCH_SPAN), "require": {"packed_unsorted"}},
    "sizes_of_one": {"input_size": st.just(1), "hidden_size": st.just(1), "batch": st.just(1)},
    "empty_batch": {"batch": st.just(0)},
    "same_tensor_as_h0_and_c0": {"same_state": True, "require": {"initial_state"}},
    # values real inputs hold (see VALUE_KINDS); the kinds beyond unit scale come without random dropout masks
    "large_values": {"values": "large", "training": False},
    "tiny_values": {"values": "tiny"},
    "mixed_scales": {"values": "mixed", "training": False},
    "zero_values": {"values": "zeros"},
    "special_values": {"values": "special", "training": False},
    # half precision, last (its cases are the slowest): every axis, and beyond unit scale, where float16
    # overflows past 65504 and bfloat16 has float32's range
    "float16": {"dtype": "float16"},
    "bfloat16": {"dtype": "bfloat16"},
    "float16_large_values": {"dtype": "float16", "values": "large", "training": False},
    "bfloat16_large_values": {"dtype": "bfloat16", "values": "large", "training": False},
}


#: The stress tier (not in the default run): large weights and long sequences.
STRESS: dict[str, Any] = {"weight_scale": st.sampled_from([2.0, 3.0]), "seq_len": st.integers(200, 500),
                          "batch": st.integers(1, 4)}


def focus_requirements(focus: str) -> tuple[set[str], Optional[str]]:
    """The features and dtype a focus needs from a port."""
    spec = FOCI[focus]
    return set(spec.get("require", ())), spec.get("dtype")


@cached
def focus_cases(capabilities: Capabilities, focus: str) -> st.SearchStrategy[Case]:
    """Cases for one entry of :data:`FOCI`, restricted to what the port declares."""
    return cases(capabilities, **FOCI[focus])
