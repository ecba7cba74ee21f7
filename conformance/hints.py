"""Hints: a table of recognisers, each naming a likely bug from the pattern of a difference.

A recogniser looks at the :class:`Evidence` of one failing case (the candidate's result, torch's,
the oracle, the localisation) and either says nothing or returns a one-line detail.  Many work
by asking torch a "what if": the candidate matches torch run with the gate blocks permuted, with
one bias dropped, with h0 and c0 swapped... then that is what the port does.  The first
recogniser that speaks wins, so the table goes from the most specific to the most general.

To add one: write a function ``Evidence -> Optional[str]``, add a row to ``RECOGNISERS``, and
add a broken port (or a case) that shows it to the suite's own tests.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, Optional, TypeVar

import numpy as np

from .arrays import LSTMConfig
from .case import Case
from .compare import Tolerance, case_scale, floor, tolerance, value_scale, within
from .dropout import recover
from .gradients import masked_oracle_gradients, through_time
from .layout import sequence_lengths, state_rows, time_major
from .localise import DIRECTIONS, Location, PieceResults, run_torch
from .outcome import Outcome
from .reference import Reference
from .verdict import Problem

__all__ = ["Evidence", "GRADIENT_RECOGNISERS", "GradientEvidence", "Hint", "Recogniser", "RECOGNISERS", "recognise",
           "recognise_gradients"]

GATES = ("i", "f", "g", "o")

#: The evidence a recogniser reads: a failing case's (:class:`Evidence`) or a failing gradient check's.
EvidenceT = TypeVar("EvidenceT", "Evidence", "GradientEvidence")


@dataclass(frozen=True)
class Hint:
    """A likely bug, named by the recogniser that saw its pattern."""

    name: str
    bug: str
    detail: str


@dataclass
class Evidence:
    """Everything known about one failing case."""

    case: Case
    ref: Reference
    got: Optional[Outcome]
    problems: list[Problem]
    location: Optional[Location] = None
    departing_piece: Optional[PieceResults] = None
    candidate: Any = None  # the Candidate, for a "what if" on its side; None: none is asked

    @property
    def config(self) -> LSTMConfig:
        return self.case.config

    def state(self) -> dict:
        """The case's weights, as fresh tensors a variant may change."""
        return {k: v.detach().clone() for k, v in self.ref.model.state_dict().items()}

    def agrees(self, mine: np.ndarray, truth: np.ndarray, reference: Optional[np.ndarray] = None) -> bool:
        """``mine`` within the tolerance policy of ``truth`` (same shape required)."""
        if mine.shape != truth.shape:
            return False
        tol = tolerance(self.config.dtype, truth if reference is None else reference, truth,
                        scale=case_scale(self.ref))
        return bool(within(mine, truth, tol).all())

    def matches_torch(self, state: Optional[dict] = None, args: Optional[tuple] = None,
                      config_changes: Optional[dict] = None) -> bool:
        """Does the candidate's whole result match torch run with other weights or arguments?"""
        if self.got is None:
            return False
        config = replace(self.config, **(config_changes or {}))
        try:
            call = self.case.call
            _, reference, oracle = run_torch(config, self.state() if state is None else state,
                                             self.ref.args if args is None else args,
                                             call.training, call.packed, call.arguments)
        except Exception:  # noqa: BLE001 - a variant torch rejects is simply not what the port does
            return False
        return all(self.agrees(self.got.parts()[k], oracle.parts()[k], reference.parts()[k]) for k in oracle.parts())

    def candidate_matches(self, args: tuple, form: str = "positional") -> bool:
        """Does the candidate, called on other ``args`` (in argument ``form``), give torch's result for the
        case?  For arguments holding the case's values in another layout or another form."""
        if self.candidate is None:
            return False
        call = self.case.call
        try:
            instance = self.candidate.build(self.config, self.ref.model.state_dict())
            got = self.candidate.run(instance, args, call.training, call.packed, form)
        except Exception:  # noqa: BLE001 - it raised again, or returned something malformed: not the difference
            return False
        ref, oracle = self.ref.torch.parts(), self.ref.oracle.parts()
        return all(self.agrees(got.parts()[k], oracle[k], ref[k]) for k in oracle)

    def part_agrees(self, name: str) -> bool:
        if self.got is None:
            return False
        return self.agrees(self.got.parts()[name], self.ref.oracle.parts()[name], self.ref.torch.parts()[name])

    def hx(self) -> Optional[tuple]:
        return self.ref.args[1] if len(self.ref.args) > 1 else None


@dataclass(frozen=True)
class Recogniser(Generic[EvidenceT]):
    """One row of the table: a name, the bug it stands for, and the test of its pattern."""

    name: str
    bug: str
    test: Callable[[EvidenceT], Optional[str]]
    any_case: bool = False  # False: only for cases whose every output is fixed (no random dropout mask)


# ----------------------------------------------------------------------------- the recognisers


def _second_call(ev: Evidence) -> Optional[str]:
    labelled = [p for p in ev.problems if p.kind in ("values", "shape", "dtype")]
    if labelled and all(p.call == 2 for p in labelled):
        return "the first call matched torch; calling the same instance again with the same arguments did not"
    return None


def _mutates_input(ev: Evidence) -> Optional[str]:
    mutated = [p.detail for p in ev.problems if p.kind == "mutated"]
    if mutated:
        return f"{mutated[0]}: copy before updating in place"
    return None


def _raised_message(ev: Evidence) -> str:
    return next((p.detail for p in ev.problems if p.kind == "raised"), "")


def _numpy_of_grad_tensor(ev: Evidence) -> Optional[str]:
    message = _raised_message(ev)
    if ev.case.call.requires_grad and "numpy()" in message and "requires grad" in message:
        return "the port calls .numpy() on an input that requires grad: call .detach() first"
    return None


def _zero_state_shape(ev: Evidence) -> Optional[str]:
    message = _raised_message(ev)
    if message and not ev.case.call.with_hx and ("hidden" in message or "hx" in message):
        cfg = ev.config
        return (f"with hx=None the port's own zero state has the wrong shape; torch's is (num_layers * "
                f"num_directions = {cfg.num_layers * cfg.num_directions}, batch, features)")
    return None


def _recurrent_dropout(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.case.call.training and cfg.dropout == 1.0:
        state = ev.state()
        for name, value in state.items():
            if name.startswith("weight_hh"):
                value.zero_()
        if ev.matches_torch(state):
            return ("in training with dropout=1.0 the candidate matches torch with every weight_hh set to zero: "
                    "the recurrent state is dropped, while torch drops only the outputs passed between layers")
    if not (ev.case.call.training and 0 < cfg.dropout < 1 and cfg.num_layers > 1):
        return None
    if any(p.kind == "values" and p.region == "layer 0" for p in ev.problems):
        return ("in training, layer 0's final states differ: torch applies dropout only to the outputs passed "
                "between layers, never to the recurrent state")
    return None


def _mode_switch(ev: Evidence) -> Optional[str]:
    rules = {p.rule for p in ev.problems}
    if "eval-after-train" in rules:
        return ("the same instance matched torch until a call in eval mode came after a call in training mode: "
                ".eval() does not undo .train() (a training flag set by train() but never cleared; read "
                "self.training, or the adapter's training argument, on every call)")
    if "train-after-eval" in rules:
        return ("the same instance matched torch in eval mode, then a call in training mode after it does not "
                "follow torch's dropout: .train() after .eval() is not honoured")
    return None


#: What each statistical rule of :mod:`conformance.dropout` says about how masks are drawn, most telling first.
_MASK_REUSE = {
    "mask-reused-across-calls": "every call draws the same mask: a generator re-seeded in forward, or a mask kept "
                                "from an earlier call",
    "mask-shared-across-batch": "one mask is shared by all batch elements (a (T, 1, F) mask broadcast over the batch)",
    "mask-shared-across-time": "one mask is reused at every time step (variational or locked dropout, as Keras' LSTM "
                               "dropout draws it); torch draws every element of the (T, N, F) tensor afresh",
    "mask-shared-across-features": "one mask value is shared by all features of a step (a (T, N, 1) mask broadcast)",
}


def _dropout_mask_reuse(ev: Evidence) -> Optional[str]:
    rules = {p.rule for p in ev.problems}
    return next((text for rule, text in _MASK_REUSE.items() if rule in rules), None)


def _dropout_rate(ev: Evidence) -> Optional[str]:
    rules = {p.rule for p in ev.problems}
    if "dropout-rate-swapped" in rules:
        return ("the masks recovered from many calls drop elements with probability 1 - dropout: the drop and keep "
                "probabilities are swapped (a keep mask drawn as rand < p)")
    if "dropout-rate" in rules:
        return "the masks recovered from many calls drop elements at a rate that dropout makes unlikely"
    return None


def _dropout_scale(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.got is None or not any(p.rule == "no-legal-dropout-mask" for p in ev.problems):
        return None
    p = cfg.dropout
    for factor, what in ((1.0, "not scaled"), (1.0 / p, "scaled by 1/p"), (1.0 - p, "multiplied by 1-p")):
        if abs(factor * (1.0 - p) - 1.0) < 1e-9:  # the same as torch's 1/(1-p) (p = 0.5 for 1/p)
            continue
        found = recover(ev.case, ev.ref, ev.got, scale=factor)
        if found is not None and not found.problems:
            return (f"the result is explained by legal masks whose kept elements are {what} (x {factor:.4g}); torch "
                    f"scales them by 1/(1-p) = {1.0 / (1.0 - p):.4g}")
    return None


def _dropout_place(ev: Evidence) -> Optional[str]:
    import torch

    cfg, call = ev.config, ev.case.call
    if ev.got is None or not call.training or cfg.dropout <= 0 or not any(p.kind == "values" for p in ev.problems):
        return None
    x = ev.ref.args[0]
    if cfg.dropout == 1.0:
        zero = x._replace(data=torch.zeros_like(x.data)) if hasattr(x, "batch_sizes") else torch.zeros_like(x)
        if ev.matches_torch(args=(zero, *ev.ref.args[1:])):
            return ("with dropout=1.0 the candidate matches torch on an all-zero input: the input of layer 0 is "
                    "dropped too; torch drops only the outputs passed between layers")
        return None
    found = recover(ev.case, ev.ref, ev.got, input_dropout=True)
    if found is not None and not found.problems:
        return ("the result is explained by legal masks on the input of layer 0 as well as between layers: torch "
                "never drops the input (nor anything but the outputs passed between layers)")
    if any(p.rule == "no-legal-dropout-mask" for p in ev.problems):
        found = recover(ev.case, ev.ref, ev.got, output_dropped=True)
        if found is not None and not found.problems:
            return ("the result is explained by legal masks between layers and on the last layer's output: torch "
                    "never drops the final output")
    return None


def _dropout_on_output(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.got is None or not ev.case.call.training or cfg.dropout <= 0 or ev.part_agrees("output"):
        return None
    if not (ev.part_agrees("h_n") and ev.part_agrees("c_n")):
        return None
    got, truth = ev.got.output, ev.ref.oracle.output
    zeros = got == 0
    kept_ok = cfg.dropout >= 1 or ev.agrees(np.where(zeros, 0, got * (1 - cfg.dropout)), np.where(zeros, 0, truth))
    if zeros.any() and kept_ok:
        return ("the final output has zeros and the rest is scaled by 1/(1-dropout): torch never applies dropout "
                "to the last layer's output")
    return None


def _views(ev: Evidence) -> list[tuple[int, str, str]]:
    """The call's tensors laid out as views: (position, name, layout), the position 0 for the input (or
    the packed data), 10 and 11 for hx's h0 and c0."""
    call = ev.case.call
    views = [(0, "the packed data" if call.packed else "the input", call.layout)] if call.layout != "contiguous" else []
    if call.with_hx and call.state_layout != "contiguous" and len(ev.ref.args) > 1:
        views += [(10, "h0", call.state_layout), (11, "c0", call.state_layout)]
    return views


def _replaced(args: tuple, change: Callable[[Any], Any], positions: set[int]) -> tuple:
    """``args`` with ``change`` applied to the tensors at ``positions`` (see :func:`_views`); the packed
    input's data for position 0.  One tensor passed twice stays one tensor."""
    from torch.nn.utils.rnn import PackedSequence

    done: dict[int, Any] = {}

    def once(tensor: Any) -> Any:
        if id(tensor) not in done:
            done[id(tensor)] = change(tensor)
        return done[id(tensor)]

    x, rest = args[0], list(args[1:])
    if 0 in positions:
        x = PackedSequence(once(x.data), *x[1:]) if isinstance(x, PackedSequence) else once(x)
    if rest and {10, 11} & positions:
        rest[0] = type(rest[0])(once(t) if 10 + k in positions else t for k, t in enumerate(rest[0]))
    return (x, *rest)


def _c_strides(tensor: Any) -> tuple[int, ...]:
    strides: list[int] = []
    step = 1
    for size in reversed(tensor.shape):
        strides.insert(0, step)
        step *= size
    return tuple(strides)


#: How a port may misread a view's memory: (what it then reads, the strides and storage offset it uses).
_READINGS = (
    ("as if C-contiguous, ignoring the strides", lambda t: (_c_strides(t), t.storage_offset())),
    ("with its strides but from the start of the storage, ignoring the storage offset", lambda t: (t.stride(), 0)),
    ("from the start of the storage as if C-contiguous, ignoring the strides and the storage offset",
     lambda t: (_c_strides(t), 0)),
)


def _misread(reading: Callable[[Any], tuple]) -> Callable[[Any], Any]:
    import torch

    def read(tensor: Any) -> Any:
        strides, offset = reading(tensor)
        return torch.as_strided(tensor.detach(), tensor.shape, strides, offset)  # raises past the storage's end

    return read


def _contiguous_copy(tensor: Any) -> Any:
    import torch

    return tensor.detach().clone(memory_format=torch.contiguous_format).requires_grad_(tensor.requires_grad)


def _view_groups(ev: Evidence) -> list[tuple[str, set[int], str]]:
    """The groups of views a port may handle alike: (their names, positions, layouts)."""
    views = _views(ev)
    groups = [[v for v in views if v[0] == 0], [v for v in views if v[0] >= 10], views]
    seen, named = set(), []
    for group in groups:
        positions = frozenset(v[0] for v in group)
        if group and positions not in seen:
            seen.add(positions)
            names = _and([v[1] for v in group])
            layouts = _and(list(dict.fromkeys(v[2] for v in group)))
            named.append((names, set(positions), layouts))
    return named


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _noncontiguous_input(ev: Evidence) -> Optional[str]:
    for names, positions, layouts in _view_groups(ev):
        for how, reading in _READINGS:
            try:
                misread = _replaced(ev.ref.args, _misread(reading), positions)
            except RuntimeError:  # that reading runs past the storage: not what a port can have read
                continue
            if ev.matches_torch(args=misread):
                return (f"the candidate matches torch given {names} ({layouts}) read {how}: honour the view's strides "
                        "and storage offset (data_ptr(), stride()), or call .contiguous() first")
    for names, positions, layouts in _view_groups(ev):
        if ev.got is not None and ev.candidate_matches(_replaced(ev.ref.args, _contiguous_copy, positions),
                                                       ev.case.call.arguments):
            return (f"the candidate's result depends on the memory layout of {names} ({layouts}): given contiguous "
                    "copies of the same values it matches torch")
    return None


def _layout_rejected(ev: Evidence) -> Optional[str]:
    if not any(p.kind == "raised" for p in ev.problems):
        return None
    for names, positions, layouts in _view_groups(ev):
        if ev.candidate_matches(_replaced(ev.ref.args, _contiguous_copy, positions), ev.case.call.arguments):
            return (f"the candidate raised on a valid call whose {names} {'is a' if ' and ' not in names else 'are'} "
                    f"{layouts} view{'' if ' and ' not in names else 's'}; given contiguous copies of the same values "
                    "it matches torch: it assumes contiguous memory (.view() where .reshape() is needed?)")
    return None


def _argument_form(ev: Evidence) -> Optional[str]:
    call, args = ev.case.call, ev.ref.args
    failed = "raised" if any(p.kind == "raised" for p in ev.problems) else "differs from torch"
    positional = (args[0], tuple(args[1])) if len(args) > 1 else tuple(args)
    if call.arguments == "positional" or not ev.candidate_matches(positional):
        return None
    if call.arguments == "keywords":
        hx = ", hx=(h0, c0)" if len(args) > 1 else ""
        return (f"called as model(input=x{hx}) the candidate {failed}; called positionally it matches torch: "
                "nn.LSTM.forward takes its arguments by the names input and hx too")
    ignored = failed != "raised" and ev.matches_torch(args=(args[0],))
    return (f"with hx given as a list [h0, c0] the candidate {failed}; given the tuple (h0, c0) it matches torch"
            + (" (its result is torch's with hx=None: the list was ignored)" if ignored else "")
            + ": nn.LSTM takes hx as any sequence of two tensors")


def _squeezed(ev: Evidence) -> Optional[str]:
    x = ev.ref.args[0]
    message = _raised_message(ev)
    if message and re.search(r"\b[0-4]-?D\b|dimension", message) and 1 in tuple(getattr(x, "shape", ())):
        return (f"the port rejects a valid input of shape {tuple(x.shape)} as having the wrong rank: a dimension "
                "of size 1 was squeezed away (input.squeeze() reads batch 1, seq_len 1 or input_size 1 wrongly)")
    if ev.got is None:
        return None
    theirs = ev.ref.torch.output.shape
    if ev.got.output.shape != theirs and ev.got.output.shape == tuple(d for d in theirs if d != 1):
        return (f"output has shape {ev.got.output.shape}, torch's {theirs}: a dimension of size 1 was squeezed "
                "away (input.squeeze() reads batch 1, seq_len 1 or input_size 1 as unbatched input)")
    return None


def _unbatched_as_batched(ev: Evidence) -> Optional[str]:
    if ev.got is None or not ev.case.call.unbatched or ev.got.output.ndim != 3:
        return None
    where = "0 (batch_first=True)" if ev.config.batch_first else "1"
    return (f"unbatched input came back batched, output shape {ev.got.output.shape}: the batch dimension goes at "
            f"dim {where} and is removed from the results")


def _states_swapped(ev: Evidence) -> Optional[str]:
    if ev.got is None or ev.config.proj_size or not ev.part_agrees("output"):
        return None
    o = ev.ref.oracle
    if ev.agrees(ev.got.h_n, o.c_n) and ev.agrees(ev.got.c_n, o.h_n) and not ev.part_agrees("h_n"):
        return "the returned h_n holds torch's c_n and the returned c_n holds torch's h_n"
    return None


def _states_batch_first(ev: Evidence) -> Optional[str]:
    if ev.got is None or ev.case.call.unbatched or not ev.config.batch_first:
        return None
    o = ev.ref.oracle
    if all(ev.agrees(ev.got.parts()[k].swapaxes(0, 1), o.parts()[k]) for k in ("h_n", "c_n")):
        return (f"h_n/c_n have shape {ev.got.h_n.shape}: torch's states are (num_layers * num_directions, batch, "
                "features) whatever batch_first says")
    return None


def _projection_on_c(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.got is None or not cfg.proj_size or not (ev.part_agrees("output") and ev.part_agrees("h_n")):
        return None
    state = ev.state()
    c = state_rows(ev.ref.oracle.c_n, ev.case)
    projected = np.stack([c[r] @ state[_name("weight_hr", r, cfg)].double().numpy().T for r in range(c.shape[0])])
    if ev.agrees(state_rows(ev.got.c_n, ev.case), projected):
        return f"c_n has {cfg.proj_size} features (proj_size): torch projects h only, c_n keeps hidden_size features"
    return None


def _float32_inside(ev: Evidence) -> Optional[str]:
    if ev.got is None or ev.config.dtype != "float64":
        return None
    parts = ev.got.parts()
    oracle = ev.ref.oracle.parts()
    tol = Tolerance(floor("float32") * value_scale(oracle.values()), floor("float32"), 0.0)
    if all(parts[k].shape == oracle[k].shape and within(parts[k], oracle[k], tol).all() for k in parts):
        worst = max((float(np.max(np.abs(parts[k] - oracle[k]), initial=0.0)) for k in parts), default=0.0)
        return f"every element agrees to float32 precision, none to float64 (largest difference {worst:.2g})"
    return None


def _bfloat16_inside(ev: Evidence) -> Optional[str]:
    """A float16 model whose every element agrees with the oracle to bfloat16's precision, not to float16's."""
    if ev.got is None or ev.config.dtype != "float16":
        return None
    parts, oracle = ev.got.parts(), ev.ref.oracle.parts()
    tol = Tolerance(floor("bfloat16") * value_scale(oracle.values()), floor("bfloat16"), 0.0)
    if all(parts[k].shape == oracle[k].shape and within(parts[k], oracle[k], tol).all() for k in parts):
        worst = max((float(np.max(np.abs(parts[k] - oracle[k]), initial=0.0)) for k in parts), default=0.0)
        return (f"every element agrees to bfloat16 precision, not to float16's (largest difference {worst:.2g}): "
                "bfloat16 has 3 fewer mantissa bits than float16")
    return None


def _float16_range(ev: Evidence) -> Optional[str]:
    """A bfloat16 model overflowing where torch running it in float16 overflows too."""
    import torch

    if ev.got is None or ev.config.dtype != "bfloat16":
        return None
    parts, oracle = ev.got.parts(), ev.ref.oracle.parts()
    new = {k: ~np.isfinite(parts[k]) & np.isfinite(oracle[k]) for k in parts if parts[k].shape == oracle[k].shape}
    if not any(mask.any() for mask in new.values()):
        return None
    state = {k: v.to(torch.float16) for k, v in ev.state().items()}
    args = _converted(ev.ref.args, torch.float16)
    try:
        _, narrow, _ = run_torch(replace(ev.config, dtype="float16"), state, args, ev.case.call.training,
                                 ev.case.call.packed, ev.case.call.arguments)
    except Exception:  # noqa: BLE001 - torch rejects the float16 variant: no hint
        return None
    overflowed = narrow.parts()
    if all((~np.isfinite(overflowed[k]) | ~mask).all() for k, mask in new.items()):
        name = next(k for k, mask in new.items() if mask.any())
        return (f"{name} is NaN or inf at {int(new[name].sum())} elements where torch's is finite, and torch computing "
                "the model in float16 overflows there too: bfloat16 holds values up to 3.4e38, float16 up to 65504")
    return None


def _converted(value: Any, dtype: Any) -> Any:
    """Call arguments (tensors, packed sequences, tuples and lists of them) with every float tensor in ``dtype``."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, PackedSequence):
        return value._replace(data=value.data.detach().to(dtype))
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_converted(v, dtype) for v in value)
    return value


def _results_dtype(ev: Evidence) -> Optional[str]:
    """Every result in one dtype other than the model's: computed in another dtype, never cast back."""
    wrong = [p for p in ev.problems if p.kind == "dtype"]
    if ev.got is None or not wrong or len(wrong) != len(ev.got.parts()):
        return None
    found = {str(array.dtype) for array in ev.got.parts().values()}
    if len(found) != 1:
        return None
    return (f"output, h_n and c_n are all {found.pop()} for a {ev.config.dtype} model: the results of a computation "
            f"in another dtype, not cast back to the model's")


def _input_arrays(ev: Evidence) -> list[np.ndarray]:
    """The call's x (a packed sequence's data), h0 and c0, as float64 arrays."""
    import torch

    arrays = []
    for value in (ev.ref.args[0], *(ev.hx() or ())):
        value = getattr(value, "data", value) if not isinstance(value, torch.Tensor) else value
        if isinstance(value, torch.Tensor):
            arrays.append(value.detach().double().numpy())
    return arrays


def _largest_input(ev: Evidence) -> float:
    """The largest finite magnitude in x, h0 and c0."""
    finite = [np.abs(a[np.isfinite(a)]) for a in _input_arrays(ev)]
    return max((float(f.max()) for f in finite if f.size), default=0.0)


def _first(mask: np.ndarray) -> str:
    return "(" + ", ".join(str(int(i)) for i in np.argwhere(mask)[0]) + ")"


def _nan_not_propagated(ev: Evidence) -> Optional[str]:
    if ev.got is None or not any(np.isnan(a).any() for a in _input_arrays(ev)):
        return None
    for name, truth in ev.ref.oracle.parts().items():
        mine = ev.got.parts()[name]
        lost = np.isnan(truth) & np.isfinite(mine) if mine.shape == truth.shape else np.zeros(0, bool)
        if lost.any():
            return (f"{name} is finite at {int(lost.sum())} elements where torch's is NaN (first at {_first(lost)}): "
                    "the NaN in the call's input or hx does not propagate; the port replaces NaN (nan_to_num, a "
                    "clamp, or a max or min that drops NaN) where torch carries it through every later step and layer")
    return None


def _overflow(ev: Evidence) -> Optional[str]:
    if ev.got is None:
        return None
    largest = _largest_input(ev)
    if largest < 10 and ev.case.weight_scale <= 1:
        return None
    for name, truth in ev.ref.oracle.parts().items():
        mine = ev.got.parts()[name]
        new = ~np.isfinite(mine) & np.isfinite(truth) if mine.shape == truth.shape else np.zeros(0, bool)
        if new.any():
            scale = f", weights x{ev.case.weight_scale:g}" if ev.case.weight_scale > 1 else ""
            return (f"{name} is NaN or inf at {int(new.sum())} elements where torch's is finite (first at "
                    f"{_first(new)}), with inputs and states up to {largest:.3g}{scale}: a formula overflows at "
                    "large arguments, e.g. tanh(x) as (exp(2x) - 1) / (exp(2x) + 1) or sigmoid(x) as "
                    "exp(x) / (1 + exp(x)); torch's tanh and sigmoid saturate")
    return None


def _values_clipped(ev: Evidence) -> Optional[str]:
    if ev.got is None:
        return None
    for name in ("c_n", "h_n", "output"):
        mine, truth = ev.got.parts()[name], ev.ref.oracle.parts()[name]
        if mine.shape != truth.shape or not mine.size or ev.part_agrees(name) or not np.isfinite(mine).all():
            continue
        bound = float(np.abs(mine).max())
        attained = np.isclose(np.abs(mine), bound, rtol=1e-6, atol=0)
        beyond = np.abs(truth) > bound * (1 + 1e-3)
        bad = ~within(mine, truth, tolerance(ev.config.dtype, ev.ref.torch.parts()[name], truth,
                                             value_scale(ev.ref.oracle.parts().values())))
        clipped = attained & beyond & bad
        # clipping leaves several elements at exactly the same magnitude, past which torch goes on, or
        # one at a round bound (8.0, 10.0, 0.5): an exact round number is no accident of arithmetic
        round_bound = bound == float(f"{bound:.2g}")
        if bound > 0 and bad.any() and (int(clipped.sum()) >= 2
                                        or (int(attained.sum()) >= 2 and not (bad & ~clipped).any())
                                        or (round_bound and clipped.any() and not (bad & ~clipped).any())):
            what = "the cell state" if name == "c_n" else "the hidden state"
            reached = int(attained.sum())
            return (f"{name} never exceeds {bound:.4g} in magnitude (reached at {reached} "
                    f"element{'s' if reached != 1 else ''}) "
                    f"where torch's reaches {float(np.abs(truth[np.isfinite(truth)]).max(initial=0)):.3g}: "
                    f"{what} is clipped to [-{bound:.4g}, {bound:.4g}] (a cell_clip, or a fixed-point range)")
    return None


def _tiny_inputs_flushed(ev: Evidence) -> Optional[str]:
    import torch

    x = ev.ref.args[0]
    data = getattr(x, "data", x) if not isinstance(x, torch.Tensor) else x
    if not isinstance(data, torch.Tensor) or not data.numel():
        return None
    magnitude = data.detach().abs()
    tried = None
    for threshold in [torch.finfo(data.dtype).tiny] + [10.0 ** -k for k in range(12, 3, -1)]:
        mask = (magnitude < threshold) & (magnitude > 0)
        count = int(mask.sum())
        if not count or count == tried:
            continue
        tried = count
        flushed = torch.where(mask, torch.zeros_like(data), data.detach())
        new_x = x._replace(data=flushed) if not isinstance(x, torch.Tensor) else flushed
        if ev.matches_torch(args=(new_x, *ev.ref.args[1:])):
            return (f"the candidate matches torch with the {count} input elements below {threshold:.3g} in magnitude "
                    "set to zero: tiny inputs are flushed to zero (a threshold, or flush-to-zero arithmetic)")
    return None


def _final_states_skip_zero_steps(ev: Evidence, steps: Any, zero: Any) -> bool:
    """Are the candidate's h_n and c_n torch's on each batch element's sequence with its all-zero steps
    removed (the initial state where every step is zero)?  Confirms a skip: a port with another bug
    departs at a zero step too, but not this way."""
    import torch

    if ev.got is None or not steps.shape[1]:
        return False
    got_h, got_c = state_rows(ev.got.h_n, ev.case), state_rows(ev.got.c_n, ev.case)
    hx = ev.hx()
    if hx is None:
        h0 = torch.zeros(got_h.shape, dtype=steps.dtype)
        c0 = torch.zeros(got_c.shape, dtype=steps.dtype)
    else:
        h0, c0 = (s.detach() if s.dim() == 3 else s.detach()[:, None] for s in hx)
    lengths = sequence_lengths(ev.case, steps.shape[0], steps.shape[1])
    config = replace(ev.config, batch_first=False)
    for b in range(steps.shape[1]):
        kept = [t for t in range(int(lengths[b])) if not bool(zero[t, b])]
        initial = (h0[:, b:b + 1], c0[:, b:b + 1])
        want: tuple[tuple[np.ndarray, np.ndarray], ...]  # (truth, reference) for h_n and c_n
        if kept:
            try:
                _, reference, oracle = run_torch(config, ev.state(), (steps[kept, b:b + 1], initial),
                                                 ev.case.call.training, False)
            except Exception:  # noqa: BLE001 - torch rejects the shortened call: no confirmation
                return False
            want = ((oracle.h_n, reference.h_n), (oracle.c_n, reference.c_n))
        else:
            want = tuple((s.numpy(), s.numpy()) for s in initial)
        for mine, (truth, ref) in zip((got_h[:, b:b + 1], got_c[:, b:b + 1]), want):
            if not ev.agrees(mine, truth, ref):
                return False
    return True


def _zero_steps_skipped(ev: Evidence) -> Optional[str]:
    import torch
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

    loc = ev.location
    if loc is None or loc.time_step is None or loc.layer is None:
        return None
    x = ev.ref.args[0]
    if isinstance(x, PackedSequence):
        steps = pad_packed_sequence(x)[0]  # (T, N, F) in the caller's batch order
    elif isinstance(x, torch.Tensor):
        steps = time_major(x.detach(), ev.config, ev.case)
    else:
        return None
    zero = (steps == 0).all(dim=-1)  # (T, N)
    b = loc.batch_element or 0
    if not bool(zero[loc.time_step, b]) or not _final_states_skip_zero_steps(ev, steps, zero):
        return None
    return (f"the first step that departs (step {loc.time_step} of batch element {b}, {loc.direction} direction) "
            f"has an all-zero input ({int(zero.sum())} such steps in the input): the port treats a zero step as "
            "padding and carries the state over it (Keras' Masking(mask_value=0)); torch computes every step")


def _gate_order(ev: Evidence) -> Optional[str]:
    for order in itertools.permutations(GATES):
        if order == GATES:
            continue
        state = ev.state()
        for name, value in state.items():
            if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                blocks = value.chunk(4, 0)
                state[name] = _cat([blocks[order.index(g)] for g in GATES])
        if ev.matches_torch(state):
            return (f"the port reads torch's four gate row-blocks as ({', '.join(order)}); "
                    "torch's order is (i, f, g, o)")
    return None


def _single_bias(ev: Evidence) -> Optional[str]:
    if not ev.config.bias:
        return None
    for kept, dropped in (("bias_ih", "bias_hh"), ("bias_hh", "bias_ih")):
        state = ev.state()
        for name in state:
            if name.startswith(dropped):
                state[name].zero_()
        if ev.matches_torch(state):
            return f"the candidate matches torch with every {dropped} set to zero: torch adds both b_ih and b_hh"
    return None


def _forget_bias(ev: Evidence) -> Optional[str]:
    import torch

    state = ev.state()
    if not ev.config.bias:  # the variant needs bias vectors: zeros plus the forget-gate 1.0
        for name in list(state):
            if name.startswith("weight_ih"):
                rows = state[name].shape[0]
                for kind in ("bias_ih", "bias_hh"):
                    state[name.replace("weight_ih", kind)] = torch.zeros(rows, dtype=state[name].dtype)
    for name, value in state.items():
        if name.startswith("bias_ih"):
            value.chunk(4, 0)[1].add_(1.0)
    if ev.matches_torch(state, config_changes={"bias": True}):
        return "the candidate matches torch with 1.0 added to every forget-gate bias (TensorFlow/Keras forget_bias)"
    return None


def _hx_swapped(ev: Evidence) -> Optional[str]:
    hx = ev.hx()
    if hx is None or ev.config.proj_size:
        return None
    if ev.matches_torch(args=(ev.ref.args[0], (hx[1], hx[0]))):
        return "the candidate matches torch given (c0, h0) for (h0, c0)"
    return None


def _c0_ignored(ev: Evidence) -> Optional[str]:
    import torch

    hx = ev.hx()
    if hx is None or not ev.matches_torch(args=(ev.ref.args[0], (hx[0], torch.zeros_like(hx[1])))):
        return None
    return "the candidate matches torch with c0 set to zeros"


def _c0_from_h0(ev: Evidence) -> Optional[str]:
    hx = ev.hx()
    if hx is None or ev.config.proj_size or not ev.matches_torch(args=(ev.ref.args[0], (hx[0], hx[0]))):
        return None
    return "the candidate matches torch given h0 for c0 as well"


def _hx_not_permuted(ev: Evidence) -> Optional[str]:
    x, hx = ev.ref.args[0], ev.hx()
    if hx is None or getattr(x, "unsorted_indices", None) is None:
        return None
    order = x.unsorted_indices
    if ev.matches_torch(args=(x, (hx[0][:, order], hx[1][:, order]))):
        return "with enforce_sorted=False torch reorders hx by sorted_indices; the candidate used hx in the caller's order"
    return None


def _reverse_halves(ev: Evidence) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(got, oracle, lengths) of the reverse half of the departing layer's output, time-major."""
    run, loc = ev.departing_piece, ev.location
    if run is None or run.got is None or loc is None or not ev.config.bidirectional:
        return None
    features = ev.config.output_size
    got = time_major(run.got.output, run.config, ev.case)[..., features:]
    truth = time_major(run.oracle.output, run.config, ev.case)[..., features:]
    if got.shape != truth.shape:
        return None
    return got, truth, sequence_lengths(ev.case, got.shape[0], got.shape[1])


def _reverse_not_flipped(ev: Evidence) -> Optional[str]:
    halves = _reverse_halves(ev)
    if halves is None or ev.location is None or ev.location.directions_differing != ("reverse",):
        return None
    got, truth, lengths = halves
    flipped = truth.copy()
    for b, n in enumerate(lengths):
        flipped[:n, b] = truth[:n, b][::-1]
    if ev.agrees(got, flipped):
        return "the reverse half of the output equals torch's, read backwards in time"
    return None


def _directions_interleaved(ev: Evidence) -> Optional[str]:
    run = ev.departing_piece
    if run is None or run.got is None or not ev.config.bidirectional or ev.case.call.packed:
        return None
    if ev.case.call.unbatched or ev.case.call.batch == 1 or ev.part_agrees("output"):
        return None  # with one batch element the two layouts are the same
    got = time_major(run.got.output, run.config, ev.case)
    truth = time_major(run.oracle.output, run.config, ev.case)
    steps, batch, width = truth.shape
    onnx_style = truth.reshape(steps, batch, 2, width // 2).transpose(0, 2, 1, 3).reshape(steps, batch, width)
    if got.shape == truth.shape and ev.agrees(got, onnx_style):
        return ("the output equals torch's laid out as (T, directions, batch, features) and reshaped to "
                "(T, batch, directions * features) without moving the direction axis next to the features "
                "(ONNX's Y layout)")
    return None


def _packed_reverse_from_padded_end(ev: Evidence) -> Optional[str]:
    halves = _reverse_halves(ev)
    if halves is None or ev.location is None or not ev.case.call.packed \
            or ev.location.directions_differing != ("reverse",):
        return None
    got, truth, lengths = halves
    bad = ~within(got, truth, tolerance(ev.config.dtype, truth, truth))
    differing = set(np.nonzero(bad.any(axis=(0, 2)))[0].tolist())
    shorter = {b for b, n in enumerate(lengths) if n < lengths.max()}
    if differing and differing <= shorter:
        return (f"only the reverse direction differs, and only for the shorter sequences {sorted(differing)} "
                f"(lengths {[int(lengths[b]) for b in sorted(differing)]} of up to {int(lengths.max())})")
    return None


def _packed_state_not_held(ev: Evidence) -> Optional[str]:
    if ev.got is None or not ev.case.call.packed or not ev.part_agrees("output"):
        return None
    lengths = np.asarray(ev.case.call.lengths)
    differing: set[int] = set()
    for name in ("h_n", "c_n"):
        mine, truth = ev.got.parts()[name], ev.ref.oracle.parts()[name]
        if mine.shape != truth.shape:
            return None
        bad = ~within(mine, truth, tolerance(ev.config.dtype, ev.ref.torch.parts()[name], truth))
        differing |= set(np.nonzero(state_rows(bad, ev.case).any(axis=(0, 2)))[0].tolist())
    shorter = {b for b, n in enumerate(lengths) if n < lengths.max()}
    if differing and differing <= shorter:
        return (f"the output matches, but h_n/c_n differ for the shorter sequences {sorted(differing)} only: "
                "the final state must be taken at each sequence's own last step")
    return None


def _matching(mine: np.ndarray, truth: np.ndarray, ev: Evidence, axis: int) -> Optional[list[int]]:
    """For each index along ``axis`` of ``mine``, the index of ``truth`` it equals (None if any has none)."""
    tol = tolerance(ev.config.dtype, truth, truth)
    picks = []
    for i in range(mine.shape[axis]):
        row = np.take(mine, i, axis=axis)
        hits = [j for j in range(truth.shape[axis]) if within(row, np.take(truth, j, axis=axis), tol).all()]
        if not hits:
            return None
        picks.append(i if i in hits else hits[0])
    return picks


def _state_rows_permuted(ev: Evidence) -> Optional[str]:
    if ev.got is None or not ev.part_agrees("output") or ev.part_agrees("h_n"):
        return None
    mine, truth = state_rows(ev.got.h_n, ev.case), state_rows(ev.ref.oracle.h_n, ev.case)
    if mine.shape != truth.shape:
        return None
    cfg = ev.config
    rows = _matching(mine, truth, ev, 0)
    if rows is not None and rows != list(range(len(rows))):
        layers, d_count = cfg.num_layers, cfg.num_directions
        direction_major = [(r % layers) * d_count + r // layers for r in range(len(rows))]
        if rows == direction_major:
            return ("h_n/c_n rows are ordered direction * num_layers + layer; torch orders them "
                    "layer * num_directions + direction")
        return f"h_n row k holds torch's row {rows}[k]; torch orders rows layer * num_directions + direction"
    batch = _matching(mine, truth, ev, 1)
    if batch is not None and batch != list(range(len(batch))):
        return (f"h_n/c_n batch element k holds torch's element {batch}[k]"
                + (" (sorted order not undone with unsorted_indices?)" if ev.case.call.packed else ""))
    return None


def _dropout_in_eval(ev: Evidence) -> Optional[str]:
    cfg, loc = ev.config, ev.location
    if cfg.dropout <= 0 or ev.case.call.training or cfg.num_layers < 2 or loc is None or not loc.layer:
        return None
    alone = loc.piece(f"layer {loc.layer} alone")
    if alone is not None and alone.status == "matches":
        return (f"in eval mode with dropout={cfg.dropout}, layer {loc.layer} is right alone but wrong in the stack: "
                "torch applies dropout between layers only in training")
    return None


def _upper_layer_weights(ev: Evidence) -> Optional[str]:
    cfg, loc = ev.config, ev.location
    if cfg.num_layers < 2 or loc is None or not loc.layer:
        return None
    alone = loc.piece(f"layer {loc.layer} alone")
    if alone is None or alone.status != "matches":
        return None
    variants = []
    if cfg.bidirectional:
        state = ev.state()
        for name in state:
            if name.endswith("_reverse") and not name.endswith("_l0_reverse"):
                state[name] = state[name.removesuffix("_reverse")].clone()
        variants.append(("the reverse direction of layers above 0 uses the forward direction's weights", state))
    state = ev.state()
    for name in state:
        if name.startswith("weight_hh") and "_l0" not in name:
            state[name] = state[name.replace(name.split("_")[2], "l0")].clone()
    variants.append(("every layer uses layer 0's weight_hh", state))
    for text, variant in variants:
        if ev.matches_torch(variant):
            return text
    return (f"layer {loc.layer} is right alone but wrong in the stack: check how the weights and states of "
            "layers above 0 are loaded and indexed")


def _first_step_features_from(ev: Evidence) -> Optional[int]:
    """At the first step that departs, the first output feature that differs, where the features below
    it all agree and it is a multiple of 8 (the start of a block); None otherwise."""
    run, loc = ev.departing_piece, ev.location
    if run is None or loc is None or loc.tensor != "output" or loc.time_step is None:
        return None
    mask = run.bad.get("output")
    if mask is None:
        return None
    features = ev.config.output_size
    d = DIRECTIONS.index(loc.direction)
    step = time_major(mask, run.config, ev.case)[loc.time_step, :, d * features:(d + 1) * features]
    units = np.nonzero(step.any(axis=0))[0]
    first = int(units.min())
    return first if first >= 8 and first % 8 == 0 else None


def _hidden_units_from(ev: Evidence) -> Optional[str]:
    first = None if ev.config.proj_size else _first_step_features_from(ev)
    if first is None:
        return None
    return (f"at the first step that departs only features {first} and up differ: a block or tile of "
            f"{first} hidden units is handled, the rest are not")


def _projected_features_from(ev: Evidence) -> Optional[str]:
    first = _first_step_features_from(ev) if ev.config.proj_size else None
    if first is None:
        return None
    return (f"at the first step that departs only projected features {first} and up (of proj_size "
            f"{ev.config.proj_size}) differ: the projection handles a block or tile of {first} features, "
            "the rest are not")


def _kernel_rows(ev: Evidence, rows: np.ndarray) -> np.ndarray:
    """Batch rows in the caller's order as the kernel sees them: sorted by length for packed input."""
    order = getattr(ev.ref.args[0], "unsorted_indices", None)
    return rows if order is None else order.numpy()[rows]


def _batch_rows_from(ev: Evidence) -> Optional[str]:
    """Only the batch rows from a multiple of 8 on differ, every one of them, as a kernel tiling the
    batch would leave its partial last tile."""
    if ev.got is None or ev.case.call.unbatched:
        return None
    differing: set[int] = set()
    batch = 0
    for name in ("output", "h_n", "c_n"):
        mine, truth = ev.got.parts()[name], ev.ref.oracle.parts()[name]
        if mine.shape != truth.shape:
            return None
        bad = ~within(mine, truth, tolerance(ev.config.dtype, ev.ref.torch.parts()[name], truth,
                                             value_scale(ev.ref.oracle.parts().values())))
        rows = (time_major(bad, ev.config, ev.case) if name == "output" else state_rows(bad, ev.case)).any(axis=(0, 2))
        batch = rows.shape[0]
        differing |= set(_kernel_rows(ev, np.nonzero(rows)[0]).tolist())
    if not differing:
        return None
    first = min(differing)
    if first < 8 or first % 8 or differing != set(range(first, batch)):
        return None
    order = ", counted in sorted order (longest sequence first)" if ev.case.call.packed else ""
    return (f"batch rows 0 to {first - 1} agree and every row from {first} on (of {batch}{order}) differs: the batch "
            f"is handled in whole tiles of rows (the first {first}), and the partial last tile is not")


def _input_features_from(ev: Evidence) -> Optional[str]:
    """The candidate matches torch with the input features past the last full block of a tile ignored
    (zero weights for them), in the first layer or in every layer."""
    cfg, tried = ev.config, set()
    for tile in (256, 128, 64, 32, 16, 8):
        for every_layer in (False, True):
            state, starts, cut = ev.state(), set(), set()
            for name, value in state.items():
                if not name.startswith("weight_ih") or not (every_layer or "_l0" in name):
                    continue
                width = value.shape[1]
                if width > tile and width % tile:
                    value[:, width // tile * tile:] = 0
                    starts.add(width // tile * tile)
                    cut.add((name, width // tile * tile))
            if not cut or frozenset(cut) in tried:  # nothing dropped, or the same variant as a larger tile's
                continue
            tried.add(frozenset(cut))
            if ev.matches_torch(state):
                if every_layer:
                    return (f"the candidate matches torch with each layer's input features past its last full "
                            f"block of {tile} set to zero: the input projection handles input features in blocks "
                            f"of {tile} and drops the partial last block")
                return (f"the candidate matches torch with input features {min(starts)} and up set to zero: the "
                        f"input projection handles input features in whole blocks (the first {min(starts)} of "
                        f"{cfg.input_size}) and drops the partial last block")
    return None


def _layer_limit(ev: Evidence) -> Optional[str]:
    """Layers from some k on compute with layer k - 1's weights: weight loading (or a state buffer) sized
    for k layers."""
    cfg, loc = ev.config, ev.location
    if cfg.num_layers < 3 or loc is None or not loc.layer:
        return None
    for limit in range(2, cfg.num_layers):
        state = ev.state()
        for name in list(state):
            layer = _layer_of(name)
            if layer >= limit:
                state[name] = state[name.replace(f"_l{layer}", f"_l{limit - 1}")].clone()
        if ev.matches_torch(state):
            return (f"the candidate matches torch with every layer from {limit} on given layer {limit - 1}'s "
                    f"weights: weight loading (or a buffer of weights) handles at most {limit} layers")
    return None


def _fixed_step_buffer(ev: Evidence) -> Optional[str]:
    loc = ev.location
    if loc is None or loc.direction != "forward" or loc.time_step is None or loc.time_step < 8:
        return None
    return (f"the first {loc.time_step} steps agree and step {loc.time_step} departs: a fixed-size step buffer, "
            "chunking, or a state reset every few steps")


RECOGNISERS: tuple[Recogniser[Evidence], ...] = (
    Recogniser("mutates-input", "the port modifies its inputs in place", _mutates_input, any_case=True),
    Recogniser("numpy-of-grad-tensor", "input that requires grad not detached", _numpy_of_grad_tensor, any_case=True),
    Recogniser("argument-form", "a way of passing the arguments that nn.LSTM accepts is not supported", _argument_form),
    Recogniser("layout-rejected", "a valid view rejected: the port needs contiguous tensors", _layout_rejected),
    Recogniser("noncontiguous-input", "a view's memory read as if laid out otherwise (strides or storage offset "
               "ignored)", _noncontiguous_input),
    Recogniser("zero-state-shape", "default initial state built with the wrong shape", _zero_state_shape,
               any_case=True),
    Recogniser("results-dtype", "results returned in another dtype than the model's", _results_dtype,
               any_case=True),
    Recogniser("mode-switch", "switching .train()/.eval() on one instance not honoured", _mode_switch, any_case=True),
    Recogniser("second-call", "the port keeps state between calls (hx=None must mean zeros every time)", _second_call,
               any_case=True),
    Recogniser("dropout-mask-reuse", "dropout masks not drawn independently per element and call", _dropout_mask_reuse,
               any_case=True),
    Recogniser("dropout-rate", "dropout drops elements at the wrong rate", _dropout_rate, any_case=True),
    Recogniser("dropout-scale", "kept dropout elements scaled by the wrong factor", _dropout_scale, any_case=True),
    Recogniser("dropout-place", "dropout applied somewhere torch does not apply it", _dropout_place, any_case=True),
    Recogniser("recurrent-dropout", "dropout applied to the recurrent state", _recurrent_dropout, any_case=True),
    Recogniser("squeezed-size-one", "a dimension of size 1 squeezed away", _squeezed, any_case=True),
    Recogniser("unbatched-as-batched", "unbatched input handled as a batch", _unbatched_as_batched, any_case=True),
    Recogniser("dropout-on-output", "dropout applied after the last layer", _dropout_on_output),
    Recogniser("states-swapped", "h_n and c_n returned in swapped order", _states_swapped),
    Recogniser("states-batch-first", "h_n/c_n returned in batch_first layout", _states_batch_first),
    Recogniser("projection-on-c", "the projection applied to c_n as well as h_n", _projection_on_c),
    Recogniser("nan-not-propagated", "NaN in the input not propagated", _nan_not_propagated),
    Recogniser("float16-range", "a bfloat16 model computed in float16, which overflows past 65504",
               _float16_range),
    Recogniser("overflow", "overflow at large values (a formula that does not saturate)", _overflow),
    Recogniser("values-clipped", "state clipped to a fixed range", _values_clipped),
    Recogniser("tiny-inputs-flushed", "tiny inputs flushed to zero", _tiny_inputs_flushed),
    Recogniser("zero-steps-skipped", "all-zero time steps skipped as padding", _zero_steps_skipped),
    Recogniser("float32-inside", "float32 arithmetic inside a float64 model", _float32_inside),
    Recogniser("bfloat16-inside", "bfloat16 arithmetic inside a float16 model", _bfloat16_inside),
    Recogniser("gate-order", "gate order", _gate_order),
    Recogniser("single-bias", "only one of the two bias vectors used", _single_bias),
    Recogniser("forget-bias", "a forget-gate bias of 1.0 added", _forget_bias),
    Recogniser("hx-swapped", "hx read as (c0, h0)", _hx_swapped),
    Recogniser("c0-ignored", "the given c0 ignored", _c0_ignored),
    Recogniser("c0-from-h0", "c0 taken from h0", _c0_from_h0),
    Recogniser("hx-not-permuted", "hx not permuted by sorted_indices", _hx_not_permuted),
    Recogniser("reverse-not-flipped", "reverse outputs not put back in time order", _reverse_not_flipped),
    Recogniser("directions-interleaved", "directions stacked and reshaped without a transpose", _directions_interleaved),
    Recogniser("packed-reverse-from-padded-end",
               "the reverse direction of a packed batch starts at the padded end, not at each sequence's own end",
               _packed_reverse_from_padded_end),
    Recogniser("packed-state-not-held", "state not held at each sequence's end", _packed_state_not_held),
    Recogniser("state-layout", "state layout: h_n/c_n rows in the wrong order", _state_rows_permuted),
    Recogniser("dropout-in-eval", "dropout applied outside training", _dropout_in_eval),
    Recogniser("layer-limit", "layers past a fixed number run with the last one's weights", _layer_limit),
    Recogniser("upper-layer-weights", "weights of layers above 0 mixed up", _upper_layer_weights),
    Recogniser("batch-block", "a block of batch rows handled, the rows past it not", _batch_rows_from),
    Recogniser("input-block", "input features past a block dropped", _input_features_from),
    Recogniser("proj-block", "a block of projected features mishandled", _projected_features_from),
    Recogniser("hidden-block", "a block of hidden units mishandled", _hidden_units_from),
    Recogniser("fixed-step-buffer", "a fixed number of steps handled right", _fixed_step_buffer),
)


def recognise(evidence: Evidence, recognisers: tuple[Recogniser[Evidence], ...] = RECOGNISERS) -> Optional[Hint]:
    """The first recogniser that sees its pattern; a recogniser that fails is skipped."""
    return _first_hint(evidence, recognisers)


def _first_hint(evidence: EvidenceT, recognisers: tuple[Recogniser[EvidenceT], ...]) -> Optional[Hint]:
    for recogniser in recognisers:
        if not (recogniser.any_case or evidence.case.deterministic):
            continue
        try:
            detail = recogniser.test(evidence)
        except Exception:  # noqa: BLE001 - a hint is a bonus: never let it hide the failure
            continue
        if detail:
            return Hint(recogniser.name, recogniser.bug, detail)
    return None


# ------------------------------------------------------------------------------------ helpers


def _cat(blocks: list) -> object:
    import torch

    return torch.cat(blocks, 0)


def _layer_of(name: str) -> int:
    """The layer of a parameter name such as ``weight_ih_l3_reverse``."""
    return int(name.split("_l")[-1].split("_")[0])


def _name(prefix: str, row: int, cfg: LSTMConfig) -> str:
    layer, direction = divmod(row, cfg.num_directions)
    return f"{prefix}_l{layer}" + ("_reverse" if direction else "")


# ------------------------------------------------------------------------- gradient recognisers


@dataclass
class GradientEvidence:
    """What is known about one failing gradient check (:func:`conformance.checks.check_gradients`):
    the case, its positional arguments, the problems and each loss's gradients as compared
    (:class:`conformance.gradients.Gradients`; the last one is the loss that failed)."""

    case: Case
    args: tuple
    problems: list[Problem]
    grads: list

    def compared(self) -> dict:
        """name -> (tolerance, element-wise ok, the candidate's gradient, the oracle's, None given) of the
        loss that failed."""
        return self.grads[-1].compared if self.grads else {}

    def differing(self) -> set[str]:
        return {name for name, (_, ok, *_) in self.compared().items() if not ok.all()}


def _no_gradient(entry: tuple) -> bool:
    """The candidate's gradient is None or zero where the oracle's is not."""
    _, _, mine, oracle, none = entry
    return (none or not np.any(mine)) and bool(np.any(oracle))


def _gradient_detached(ev: GradientEvidence) -> Optional[str]:
    status = [p for p in ev.problems if p.rule == "autograd-status" and p.tensor in ("output", "h_n", "c_n")]
    if status and not ev.grads:
        names = ", ".join(sorted({p.tensor for p in status}))
        return f"{names} carry no autograd graph where torch's do: the forward runs outside autograd"
    return None


def _float32_gradients(ev: GradientEvidence) -> Optional[str]:
    if ev.case.config.dtype != "float64" or not ev.differing():
        return None
    worst = 0.0
    for name in ev.differing():
        _, _, mine, oracle, none = ev.compared()[name]
        finite = np.isfinite(oracle) & np.isfinite(mine)
        scale = float(np.abs(oracle[finite]).max()) if finite.any() else 0.0
        if none or scale == 0.0:
            return None
        error = float(np.abs(mine[finite] - oracle[finite]).max()) / scale
        if not 1e-10 < error < 1e-5:
            return None
        worst = max(worst, error)
    return (f"every differing gradient is off by float32 rounding (up to {worst:.1g} of its scale) on a float64 "
            "model: the forward matches, the backward computes in float32")


def _through_time(ev: GradientEvidence) -> Optional[str]:
    entry = ev.compared().get("input")
    if entry is None or entry[1].all():
        return None
    if through_time(ev.case, entry[1], ev.args):
        return ("each sequence's last step's input gradient matches torch's and the earlier steps' do not: the "
                "gradient does not flow back through the recurrence (the state detached between steps, or its "
                "gradient dropped)")
    return None


def _initial_state_no_gradient(ev: GradientEvidence) -> Optional[str]:
    differing = ev.differing()
    if not differing or not differing <= {"h0", "c0"}:
        return None
    if all(_no_gradient(ev.compared()[name]) for name in differing):
        names = [name for name in ("h0", "c0") if name in differing]
        verb = "gets" if len(names) == 1 else "get"
        return f"{' and '.join(names)} {verb} no gradient; every other gradient matches torch's"
    return None


def _parameter_no_gradient(ev: GradientEvidence) -> Optional[str]:
    differing = ev.differing()
    stems = {name.split("_l")[0] for name in differing}
    if not differing or len(stems) != 1 or stems <= {"input", "h0", "c0"}:
        return None
    if all(_no_gradient(ev.compared()[name]) for name in differing):
        names = sorted(differing)
        verb = "gets" if len(names) == 1 else "get"
        return f"{', '.join(names)} {verb} no gradient; every other gradient matches torch's"
    return None


def _lower_layers_cut_off(ev: GradientEvidence) -> Optional[str]:
    cfg = ev.case.config
    differing = ev.differing()
    if cfg.num_layers < 2 or not differing:
        return None
    last = cfg.num_layers - 1
    params = {name: _layer_of(name) for name in ev.compared() if name not in ("input", "h0", "c0")}
    if any(layer == last for name, layer in params.items() if name in differing):
        return None
    lower = sorted({layer for name, layer in params.items() if name in differing})
    if not lower:
        return None
    return (f"the last layer's gradients match torch's, those of layer{'s' if len(lower) > 1 else ''} "
            f"{', '.join(map(str, lower))} below do not: the gradient does not flow from a layer to the one below "
            "(its input detached between layers)")


def _batch_first_gradient(ev: GradientEvidence) -> Optional[str]:
    case = ev.case
    if not case.config.batch_first or case.call.packed or case.call.unbatched or ev.differing() != {"input"}:
        return None
    tol, _, mine, oracle, _ = ev.compared()["input"]
    misread = np.ascontiguousarray(oracle.swapaxes(0, 1)).reshape(oracle.shape)
    if misread.shape[0] > 1 and misread.shape[1] > 1 and within(mine, misread, tol).all():
        return ("the input gradient is torch's, computed time-major and reshaped to (N, T, F) instead of "
                "transposed back to batch_first")
    return None


def _dropout_ignored_in_backward(ev: GradientEvidence) -> Optional[str]:
    grads = ev.grads[-1] if ev.grads else None
    if grads is None or grads.masks is None or not ev.differing():
        return None
    what_if = masked_oracle_gradients(ev.case, ev.args, grads.state, grads.masks, grads.cotangents,
                                      mask_in_backward=False)
    for name, (tol, _, mine, oracle, _) in ev.compared().items():
        theirs = what_if.get(name)
        if not within(mine, np.zeros_like(oracle) if theirs is None else theirs, tol).all():
            return None
    return ("the gradients are torch's with the forward's dropout mask left out of the backward: the mask scales "
            "the values between layers, and the gradient passes through it unmasked")


#: The gradient recognisers (:func:`recognise_gradients`), first match wins.
GRADIENT_RECOGNISERS: tuple[Recogniser[GradientEvidence], ...] = (
    Recogniser("gradient-detached", "the result is detached from autograd", _gradient_detached, any_case=True),
    Recogniser("float32-gradients", "the backward computes a float64 model in float32", _float32_gradients,
               any_case=True),
    Recogniser("dropout-ignored-in-backward", "the backward ignores the forward's dropout mask",
               _dropout_ignored_in_backward, any_case=True),
    Recogniser("batch-first-gradient", "the batch_first input gradient laid out wrongly", _batch_first_gradient,
               any_case=True),
    Recogniser("no-gradient-through-time", "the gradient does not flow back through time (truncated BPTT)",
               _through_time, any_case=True),
    Recogniser("initial-state-no-gradient", "h0 and c0 detached: the initial state gets no gradient",
               _initial_state_no_gradient, any_case=True),
    Recogniser("parameter-no-gradient", "a parameter gets no gradient (detached or not a parameter)",
               _parameter_no_gradient, any_case=True),
    Recogniser("layers-cut-off", "the gradient does not reach the layers below the last", _lower_layers_cut_off),
)


def recognise_gradients(evidence: GradientEvidence,
                        recognisers: tuple[Recogniser[GradientEvidence], ...] = GRADIENT_RECOGNISERS) -> Optional[Hint]:
    """The first gradient recogniser that sees its pattern; one that fails is skipped (as :func:`recognise`)."""
    return _first_hint(evidence, recognisers)
