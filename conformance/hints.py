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
from typing import Callable, Optional

import numpy as np

from .case import Case
from .compare import Tolerance, floor, tolerance, within
from .localise import DIRECTIONS, Location, Run, run_torch, sequence_lengths, state_rows, time_major
from .outcome import Outcome
from .reference import Expected
from .verdict import Problem

__all__ = ["Evidence", "Hint", "Recogniser", "RECOGNISERS", "recognise"]

GATES = ("i", "f", "g", "o")


@dataclass(frozen=True)
class Hint:
    """A likely bug, named by the recogniser that saw its pattern."""

    name: str
    bug: str
    detail: str

    def describe(self) -> str:
        return f"{self.bug} [{self.name}]" + (f": {self.detail}" if self.detail else "")


@dataclass
class Evidence:
    """Everything known about one failing case."""

    case: Case
    expected: Expected
    got: Optional[Outcome]
    problems: list[Problem]
    location: Optional[Location] = None
    focus: Optional[Run] = None

    @property
    def config(self):  # noqa: ANN201 - LSTMConfig
        return self.case.config

    def state(self) -> dict:
        """The case's weights, as fresh tensors a variant may change."""
        return {k: v.detach().clone() for k, v in self.expected.model.state_dict().items()}

    def agrees(self, mine: np.ndarray, truth: np.ndarray, reference: Optional[np.ndarray] = None) -> bool:
        """``mine`` within the tolerance policy of ``truth`` (same shape required)."""
        if mine.shape != truth.shape:
            return False
        tol = tolerance(self.config.dtype, truth if reference is None else reference, truth)
        return bool(within(mine, truth, tol).all())

    def matches_torch(self, state: Optional[dict] = None, args: Optional[tuple] = None,
                      config_changes: Optional[dict] = None) -> bool:
        """Does the candidate's whole result match torch run with other weights or arguments?"""
        if self.got is None:
            return False
        config = replace(self.config, **(config_changes or {}))
        try:
            _, reference, oracle = run_torch(config, self.state() if state is None else state,
                                             self.expected.args if args is None else args,
                                             self.case.call.training, self.case.call.packed)
        except Exception:  # a variant torch rejects is simply not what the port does
            return False
        return all(self.agrees(self.got.parts()[k], oracle.parts()[k], reference.parts()[k]) for k in oracle.parts())

    def part_agrees(self, name: str) -> bool:
        if self.got is None:
            return False
        return self.agrees(self.got.parts()[name], self.expected.oracle.parts()[name], self.expected.reference.parts()[name])

    def hx(self) -> Optional[tuple]:
        return self.expected.args[1] if len(self.expected.args) > 1 else None


@dataclass(frozen=True)
class Recogniser:
    """One row of the table: a name, the bug it stands for, and the test of its pattern."""

    name: str
    bug: str
    test: Callable[[Evidence], Optional[str]]
    any_case: bool = False  # False: only for cases whose every output is fixed (no random dropout mask)


# ----------------------------------------------------------------------------- the recognisers


def _second_call(ev: Evidence) -> Optional[str]:
    labelled = [p for p in ev.problems if p.kind in ("values", "shape", "dtype")]
    if labelled and all(p.message.startswith("second call: ") for p in labelled):
        return "the first call matched torch; calling the same instance again with the same arguments did not"
    return None


def _mutates_input(ev: Evidence) -> Optional[str]:
    mutated = [p.message for p in ev.problems if p.kind == "mutated"]
    if mutated:
        return f"{mutated[0]}: copy before updating in place"
    return None


def _raised_message(ev: Evidence) -> str:
    return next((p.message for p in ev.problems if p.kind == "raised"), "")


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
    if any(p.kind == "values" and "(layer 0)" in p.message for p in ev.problems):
        return ("in training, layer 0's final states differ: torch applies dropout only to the outputs passed "
                "between layers, never to the recurrent state")
    return None


def _dropout_on_output(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.got is None or not ev.case.call.training or cfg.dropout <= 0 or ev.part_agrees("output"):
        return None
    if not (ev.part_agrees("h_n") and ev.part_agrees("c_n")):
        return None
    got, truth = ev.got.output, ev.expected.oracle.output
    zeros = got == 0
    kept_ok = cfg.dropout >= 1 or ev.agrees(np.where(zeros, 0, got * (1 - cfg.dropout)), np.where(zeros, 0, truth))
    if zeros.any() and kept_ok:
        return ("the final output has zeros and the rest is scaled by 1/(1-dropout): torch never applies dropout "
                "to the last layer's output")
    return None


def _noncontiguous_input(ev: Evidence) -> Optional[str]:
    import torch

    x = ev.expected.args[0]
    if ev.case.call.layout == "contiguous" or not isinstance(x, torch.Tensor):
        return None
    strides, step = [], 1
    for size in reversed(x.shape):
        strides.insert(0, step)
        step *= size
    as_contiguous = torch.as_strided(x, x.shape, strides, x.storage_offset())
    if ev.matches_torch(args=(as_contiguous, *ev.expected.args[1:])):
        return "the port reads the input's memory as if it were C-contiguous: honour strides or call .contiguous()"
    return None


def _squeezed(ev: Evidence) -> Optional[str]:
    x = ev.expected.args[0]
    message = _raised_message(ev)
    if message and re.search(r"\b[0-4]-?D\b|dimension", message) and 1 in tuple(getattr(x, "shape", ())):
        return (f"the port rejects a valid input of shape {tuple(x.shape)} as having the wrong rank: a dimension "
                "of size 1 was squeezed away (input.squeeze() reads batch 1, seq_len 1 or input_size 1 wrongly)")
    if ev.got is None:
        return None
    theirs = ev.expected.reference.output.shape
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
    o = ev.expected.oracle
    if ev.agrees(ev.got.h_n, o.c_n) and ev.agrees(ev.got.c_n, o.h_n) and not ev.part_agrees("h_n"):
        return "the returned h_n holds torch's c_n and the returned c_n holds torch's h_n"
    return None


def _states_batch_first(ev: Evidence) -> Optional[str]:
    if ev.got is None or ev.case.call.unbatched or not ev.config.batch_first:
        return None
    o = ev.expected.oracle
    if all(ev.agrees(ev.got.parts()[k].swapaxes(0, 1), o.parts()[k]) for k in ("h_n", "c_n")):
        return (f"h_n/c_n have shape {ev.got.h_n.shape}: torch's states are (num_layers * num_directions, batch, "
                "features) whatever batch_first says")
    return None


def _projection_on_c(ev: Evidence) -> Optional[str]:
    cfg = ev.config
    if ev.got is None or not cfg.proj_size or not (ev.part_agrees("output") and ev.part_agrees("h_n")):
        return None
    state = ev.state()
    c = state_rows(ev.expected.oracle.c_n, ev.case)
    projected = np.stack([c[r] @ state[_name("weight_hr", r, cfg)].double().numpy().T for r in range(c.shape[0])])
    if ev.agrees(state_rows(ev.got.c_n, ev.case), projected):
        return f"c_n has {cfg.proj_size} features (proj_size): torch projects h only, c_n keeps hidden_size features"
    return None


def _float32_inside(ev: Evidence) -> Optional[str]:
    if ev.got is None or ev.config.dtype != "float64":
        return None
    tol = Tolerance(floor("float32"), floor("float32"), 0.0)
    parts = ev.got.parts()
    oracle = ev.expected.oracle.parts()
    if all(parts[k].shape == oracle[k].shape and within(parts[k], oracle[k], tol).all() for k in parts):
        worst = max((float(np.max(np.abs(parts[k] - oracle[k]), initial=0.0)) for k in parts), default=0.0)
        return f"every element agrees to float32 precision, none to float64 (largest difference {worst:.2g})"
    return None


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
    if ev.matches_torch(args=(ev.expected.args[0], (hx[1], hx[0]))):
        return "the candidate matches torch given (c0, h0) for (h0, c0)"
    return None


def _c0_ignored(ev: Evidence) -> Optional[str]:
    import torch

    hx = ev.hx()
    if hx is None or not ev.matches_torch(args=(ev.expected.args[0], (hx[0], torch.zeros_like(hx[1])))):
        return None
    return "the candidate matches torch with c0 set to zeros"


def _c0_from_h0(ev: Evidence) -> Optional[str]:
    hx = ev.hx()
    if hx is None or ev.config.proj_size or not ev.matches_torch(args=(ev.expected.args[0], (hx[0], hx[0]))):
        return None
    return "the candidate matches torch given h0 for c0 as well"


def _hx_not_permuted(ev: Evidence) -> Optional[str]:
    x, hx = ev.expected.args[0], ev.hx()
    if hx is None or getattr(x, "unsorted_indices", None) is None:
        return None
    order = x.unsorted_indices
    if ev.matches_torch(args=(x, (hx[0][:, order], hx[1][:, order]))):
        return "with enforce_sorted=False torch reorders hx by sorted_indices; the candidate used hx in the caller's order"
    return None


def _reverse_halves(ev: Evidence) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(got, oracle, lengths) of the reverse half of the departing layer's output, time-major."""
    run, loc = ev.focus, ev.location
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
    if halves is None or ev.location.directions_differing != ("reverse",):
        return None
    got, truth, lengths = halves
    flipped = truth.copy()
    for b, n in enumerate(lengths):
        flipped[:n, b] = truth[:n, b][::-1]
    if ev.agrees(got, flipped):
        return "the reverse half of the output equals torch's, read backwards in time"
    return None


def _directions_interleaved(ev: Evidence) -> Optional[str]:
    run = ev.focus
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
    if halves is None or not ev.case.call.packed or ev.location.directions_differing != ("reverse",):
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
        mine, truth = ev.got.parts()[name], ev.expected.oracle.parts()[name]
        if mine.shape != truth.shape:
            return None
        bad = ~within(mine, truth, tolerance(ev.config.dtype, ev.expected.reference.parts()[name], truth))
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
    mine, truth = state_rows(ev.got.h_n, ev.case), state_rows(ev.expected.oracle.h_n, ev.case)
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


def _hidden_units_from(ev: Evidence) -> Optional[str]:
    run, loc = ev.focus, ev.location
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
    if first >= 8 and first % 8 == 0:
        return (f"at the first step that departs only features {first} and up differ: a block or tile of "
                f"{first} hidden units is handled, the rest are not")
    return None


def _fixed_step_buffer(ev: Evidence) -> Optional[str]:
    loc = ev.location
    if loc is None or loc.direction != "forward" or loc.time_step is None or loc.time_step < 8:
        return None
    return (f"the first {loc.time_step} steps agree and step {loc.time_step} departs: a fixed-size step buffer, "
            "chunking, or a state reset every few steps")


RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser("mutates-input", "the port modifies its inputs in place", _mutates_input, any_case=True),
    Recogniser("numpy-of-grad-tensor", "input that requires grad not detached", _numpy_of_grad_tensor, any_case=True),
    Recogniser("zero-state-shape", "default initial state built with the wrong shape", _zero_state_shape,
               any_case=True),
    Recogniser("second-call", "the port keeps state between calls (hx=None must mean zeros every time)", _second_call,
               any_case=True),
    Recogniser("recurrent-dropout", "dropout applied to the recurrent state", _recurrent_dropout, any_case=True),
    Recogniser("squeezed-size-one", "a dimension of size 1 squeezed away", _squeezed, any_case=True),
    Recogniser("unbatched-as-batched", "unbatched input handled as a batch", _unbatched_as_batched, any_case=True),
    Recogniser("dropout-on-output", "dropout applied after the last layer", _dropout_on_output),
    Recogniser("states-swapped", "h_n and c_n returned in swapped order", _states_swapped),
    Recogniser("states-batch-first", "h_n/c_n returned in batch_first layout", _states_batch_first),
    Recogniser("projection-on-c", "the projection applied to c_n as well as h_n", _projection_on_c),
    Recogniser("float32-inside", "float32 arithmetic inside a float64 model", _float32_inside),
    Recogniser("gate-order", "gate order", _gate_order),
    Recogniser("single-bias", "only one of the two bias vectors used", _single_bias),
    Recogniser("forget-bias", "a forget-gate bias of 1.0 added", _forget_bias),
    Recogniser("hx-swapped", "hx read as (c0, h0)", _hx_swapped),
    Recogniser("c0-ignored", "the given c0 ignored", _c0_ignored),
    Recogniser("c0-from-h0", "c0 taken from h0", _c0_from_h0),
    Recogniser("hx-not-permuted", "hx not permuted by sorted_indices", _hx_not_permuted),
    Recogniser("noncontiguous-input", "strides of a non-contiguous input ignored", _noncontiguous_input),
    Recogniser("reverse-not-flipped", "reverse outputs not put back in time order", _reverse_not_flipped),
    Recogniser("directions-interleaved", "directions stacked and reshaped without a transpose", _directions_interleaved),
    Recogniser("packed-reverse-from-padded-end",
               "the reverse direction of a packed batch starts at the padded end, not at each sequence's own end",
               _packed_reverse_from_padded_end),
    Recogniser("packed-state-not-held", "state not held at each sequence's end", _packed_state_not_held),
    Recogniser("state-layout", "state layout: h_n/c_n rows in the wrong order", _state_rows_permuted),
    Recogniser("dropout-in-eval", "dropout applied outside training", _dropout_in_eval),
    Recogniser("upper-layer-weights", "weights of layers above 0 mixed up", _upper_layer_weights),
    Recogniser("hidden-block", "a block of hidden units mishandled", _hidden_units_from),
    Recogniser("fixed-step-buffer", "a fixed number of steps handled right", _fixed_step_buffer),
)


def recognise(evidence: Evidence, recognisers: tuple[Recogniser, ...] = RECOGNISERS) -> Optional[Hint]:
    """The first recogniser that sees its pattern; a recogniser that fails is skipped."""
    for recogniser in recognisers:
        if not (recogniser.any_case or evidence.case.deterministic):
            continue
        try:
            detail = recogniser.test(evidence)
        except Exception:  # a hint is a bonus: never let it hide the failure
            continue
        if detail:
            return Hint(recogniser.name, recogniser.bug, detail)
    return None


# ------------------------------------------------------------------------------------ helpers


def _cat(blocks: list) -> object:
    import torch

    return torch.cat(blocks, 0)


def _name(prefix: str, row: int, cfg) -> str:  # noqa: ANN001 - LSTMConfig
    layer, direction = divmod(row, cfg.num_directions)
    return f"{prefix}_l{layer}" + ("_reverse" if direction else "")
