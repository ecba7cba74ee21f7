"""Every broken port gets the right localisation and the right hint; correct ports get none.

Each row is a small case on which the port's bug shows, the location the suite must report
(tensor, layer, direction, time step, batch element; ``None`` where the difference is not in
the values, e.g. a wrong shape or an exception), and the recogniser that must name the bug.
The cases run in-process (``check_forward(..., diagnose=True)``), so this file is fast.
"""

from __future__ import annotations

import pytest

from conformance.arrays import LSTMConfig as C
from conformance.case import Call, Case, Values
from conformance.checks import check_forward
from conformance.dropout import STATISTICS_CALLS, SWITCH_MODES, statistics_case
from conformance.hints import RECOGNISERS, Evidence, recognise
from conformance.registry import resolve
from conformance.verdict import ConformanceFailure
from tests.ports.broken import CATALOGUE
from tests.ports.broken_gradients import DOUBLE_BACKWARD_CATALOGUE, GRADIENTS_CATALOGUE

PACKED = dict(packing="pack_padded_sequence", lengths=(5, 3, 2))
UNSORTED = dict(packing="pack_padded_sequence", lengths=(2, 5, 3), enforce_sorted=False)

#: name -> (case, (tensor, layer, direction, time step, batch element) or None, recogniser)
DIAGNOSES: dict[str, tuple[Case, object, str]] = {
    "onnx-gate-order": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 0, 0), "gate-order"),
    "tf-forget-bias": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 1, 0), "forget-bias"),
    "single-bias": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 0, 0), "single-bias"),
    "hidden-tile-64": (Case(C(3, 72), Call(3, 2)), ("output", 0, "forward", 1, 0), "hidden-block"),
    "float32-inside": (Case(C(3, 4, dtype="float64"), Call(5, 2)), ("output", 0, "forward", 0, 0), "float32-inside"),
    "hn-direction-major": (Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2)),
                           ("h_n", 0, "reverse", None, 0), "state-layout"),
    "hn-batch-first": (Case(C(3, 4, batch_first=True), Call(5, 2)), None, "states-batch-first"),
    "cn-projected": (Case(C(3, 4, proj_size=2), Call(5, 2)), None, "projection-on-c"),
    "hidden-init-no-directions": (Case(C(3, 4, bidirectional=True), Call(5, 2)), None, "zero-state-shape"),
    "reverse-not-flipped": (Case(C(3, 4, bidirectional=True), Call(5, 2)), ("output", 0, "reverse", 4, 0),
                            "reverse-not-flipped"),
    "onnx-output-reshape": (Case(C(3, 4, bidirectional=True), Call(5, 3)), ("output", 0, "forward", 0, 1),
                            "directions-interleaved"),
    "reverse-uses-forward-weights": (Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2)),
                                     ("output", 1, "reverse", 4, 0), "upper-layer-weights"),
    "shared-hidden-weights": (Case(C(3, 4, num_layers=2), Call(5, 2)), ("output", 1, "forward", 1, 0),
                              "upper-layer-weights"),
    "packed-reverse-from-padded-end": (Case(C(3, 4, bidirectional=True), Call(5, 3, **PACKED)),
                                       ("output", 0, "reverse", 2, 1), "packed-reverse-from-padded-end"),
    "packed-final-state-at-padded-end": (Case(C(3, 4), Call(5, 3, **PACKED)), ("h_n", 0, "forward", None, 1),
                                         "packed-state-not-held"),
    "hx-not-permuted": (Case(C(3, 4), Call(5, 3, with_hx=True, **UNSORTED)), ("output", 0, "forward", 0, 0),
                        "hx-not-permuted"),
    "c-permuted-from-h": (Case(C(3, 4), Call(5, 3, with_hx=True, **UNSORTED)), ("output", 0, "forward", 0, 0),
                          "c0-from-h0"),
    "states-not-unpermuted": (Case(C(3, 4), Call(5, 3, **UNSORTED)), ("h_n", 0, "forward", None, 0), "state-layout"),
    "stable-resort": (Case(C(3, 4), Call(2, 17, packing="pack_padded_sequence", lengths=(1,) * 17,
                                         enforce_sorted=False)), ("h_n", 0, "forward", None, 0), "state-layout"),
    "dropout-in-eval": (Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2)), ("output", 1, "forward", 0, 0),
                        "dropout-in-eval"),
    "dropout-after-last-layer": (Case(C(3, 4, dropout=0.5), Call(5, 2, training=True)),
                                 ("output", 0, "forward", 0, 0), "dropout-on-output"),
    "recurrent-dropout": (Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)), None,
                          "recurrent-dropout"),
    "c0-ignored": (Case(C(3, 4), Call(5, 2, with_hx=True)), ("output", 0, "forward", 0, 0), "c0-ignored"),
    "swapped-hc": (Case(C(3, 4), Call(5, 2, with_hx=True)), ("output", 0, "forward", 0, 0), "hx-swapped"),
    "stateful": (Case(C(3, 4), Call(5, 2)), None, "second-call"),
    "updates-c0-in-place": (Case(C(3, 4), Call(5, 2, with_hx=True)), None, "mutates-input"),
    "unbatched-batch-first-dim0": (Case(C(3, 4, batch_first=True), Call(5, None)), None, "unbatched-as-batched"),
    "squeeze-batch": (Case(C(3, 4), Call(5, 1)), None, "squeezed-size-one"),
    "numpy-kernel": (Case(C(3, 4), Call(5, 2, requires_grad=True)), None, "numpy-of-grad-tensor"),
    "assumes-contiguous": (Case(C(3, 4), Call(5, 2, layout="transposed")), ("output", 0, "forward", 0, 1),
                           "noncontiguous-input"),
    "max-steps-64": (Case(C(3, 4), Call(70, 2)), ("output", 0, "forward", 64, 0), "fixed-step-buffer"),
    # sizes just past a tile boundary (tests/ports/broken_sizes.py)
    "batch-tile-32": (Case(C(3, 4), Call(2, 33)), ("output", 0, "forward", 0, 32), "batch-block"),
    "input-block-128": (Case(C(130, 4), Call(3, 2)), ("output", 0, "forward", 0, 0), "input-block"),
    "proj-tile-128": (Case(C(3, 131, proj_size=130), Call(3, 2)), ("output", 0, "forward", 0, 0), "proj-block"),
    "max-steps-256": (Case(C(3, 4), Call(258, 2)), ("output", 0, "forward", 256, 0), "fixed-step-buffer"),
    "weights-for-four-layers": (Case(C(3, 4, num_layers=5), Call(3, 2)), ("output", 4, "forward", 0, 0),
                                "layer-limit"),
    # training-mode dropout (tests/ports/broken_dropout.py): random masks, so no localisation
    "dropout-unscaled": (Case(C(3, 2, num_layers=2, dropout=0.4), Call(3, 2, training=True)), None, "dropout-scale"),
    "dropout-scaled-by-inverse-p": (Case(C(3, 2, num_layers=2, dropout=0.25), Call(3, 2, training=True)), None,
                                    "dropout-scale"),
    "dropout-on-input": (Case(C(2, 3, num_layers=2, dropout=0.5), Call(3, 2, training=True)), None, "dropout-place"),
    "dropout-sticky-training": (Case(C(3, 2, num_layers=2, dropout=0.5), Call(3, 2, training=True)), None,
                                "mode-switch"),
    "dropout-keeps-with-probability-p": (statistics_case(), None, "dropout-rate"),
    "dropout-mask-per-sequence": (statistics_case(), None, "dropout-mask-reuse"),
    "dropout-mask-shared-over-batch": (statistics_case(), None, "dropout-mask-reuse"),
    "dropout-fixed-seed": (statistics_case(), None, "dropout-mask-reuse"),
    "states-flattened-with-view": (Case(C(3, 4, num_layers=2), Call(5, 2, with_hx=True, state_layout="transposed")),
                                   None, "layout-rejected"),
    "states-read-from-storage": (Case(C(3, 4), Call(5, 2, with_hx=True, state_layout="sliced")),
                                 ("output", 0, "forward", 0, 1), "noncontiguous-input"),
    "input-offset-ignored": (Case(C(3, 4), Call(5, 2, layout="offset")), ("output", 0, "forward", 0, 0),
                             "noncontiguous-input"),
    "positional-only": (Case(C(3, 4), Call(5, 2, with_hx=True, arguments="keywords")), None, "argument-form"),
    "list-hx-ignored": (Case(C(3, 4), Call(5, 2, with_hx=True, arguments="hx_list")), ("output", 0, "forward", 0, 0),
                        "argument-form"),
    "list-hx-rejected": (Case(C(3, 4), Call(5, 2, with_hx=True, arguments="hx_list")), None, "argument-form"),
    "tanh-via-exp": (Case(C(3, 4), Call(5, 2, x_values=Values(scale=1e4))), ("output", 0, "forward", 0, 0), "overflow"),
    "cell-clip": (Case(C(3, 4), Call(1, 2, with_hx=True, c0_values=Values(scale=100.0))),
                  ("c_n", 0, "forward", None, 0), "values-clipped"),
    "zero-steps-skipped": (Case(C(3, 4), Call(5, 2, x_values=Values(zero_steps=(2,)))), ("output", 0, "forward", 2, 0),
                           "zero-steps-skipped"),
    "nan-to-num": (Case(C(3, 4), Call(5, 2, x_values=Values(special=(((1, 0, 2), "nan"),)))),
                   ("output", 0, "forward", 1, 0), "nan-not-propagated"),
    "flush-tiny-inputs": (Case(C(3, 4, dtype="float64"), Call(5, 2, x_values=Values(scale=1e-6))),
                          ("output", 0, "forward", 2, 1), "tiny-inputs-flushed"),
    # half precision (tests/ports/broken_dtypes.py)
    "bfloat16-inside-float16": (Case(C(3, 4, dtype="float16"), Call(5, 2)), ("c_n", 0, "forward", None, 0),
                                "bfloat16-inside"),
    "float16-inside-bfloat16": (Case(C(3, 4, dtype="bfloat16"), Call(5, 2, with_hx=True,
                                                                    c0_values=Values(scale=1e6))),
                                ("c_n", 0, "forward", None, 0), "float16-range"),
    "float32-results": (Case(C(3, 4, dtype="bfloat16"), Call(5, 2)), None, "results-dtype"),
}
#: the calls a port's bug needs (check_forward's ``repeat``), by class name; the others need one
REPEATS: dict[str, object] = {"Stateful": True, "DropoutStickyTraining": SWITCH_MODES,
                              **dict.fromkeys(["DropoutKeepsWithProbabilityP", "DropoutMaskPerSequence",
                                               "DropoutMaskSharedOverBatch", "DropoutFixedSeed"], STATISTICS_CALLS)}
#: ports outside the drop-in catalogue that show a recogniser of their own
OTHER_PORTS = {"tests.ports.adapters:SwappedStatesAdapter": (Case(C(3, 4), Call(5, 2)), ("h_n", 0, "forward", None, 0),
                                                            "states-swapped")}


def _failure(path: str, case: Case) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        check_forward(resolve(path), case, repeat=REPEATS.get(path.rpartition(":")[2], False), diagnose=True)
    return info.value


def _located(failure: ConformanceFailure) -> object:
    loc = failure.location
    return None if loc is None else (loc.tensor, loc.layer, loc.direction, loc.time_step, loc.batch_element)


#: broken ports whose only bug is how they reject bad calls: no valid case shows it, the error tests do
ERRORS_ONLY = {"packed-structure-trusted"}
#: broken ports whose forward is exact: their diagnoses are tests/test_gradients.py's GRADIENT_DIAGNOSES
GRADIENTS_ONLY = set(GRADIENTS_CATALOGUE) | set(DOUBLE_BACKWARD_CATALOGUE)


def test_every_broken_port_has_a_diagnosis() -> None:
    assert set(DIAGNOSES) == set(CATALOGUE) - ERRORS_ONLY - GRADIENTS_ONLY


def test_every_recogniser_is_shown_by_some_port() -> None:
    shown = {hint for _, _, hint in [*DIAGNOSES.values(), *OTHER_PORTS.values()]}
    assert shown == {r.name for r in RECOGNISERS}


@pytest.mark.parametrize("name", list(DIAGNOSES))
def test_broken_port_gets_its_location_and_hint(name: str) -> None:
    case, location, hint = DIAGNOSES[name]
    failure = _failure(f"tests.ports.broken:{CATALOGUE[name].__name__}", case)
    assert _located(failure) == location, failure
    assert failure.hint is not None and failure.hint.name == hint, failure
    rendered = str(failure)
    assert f"Likely bug: {failure.hint.bug} [{hint}]" in rendered
    if location is not None:
        assert "Where: first departs from torch at layer" in rendered


#: the minimal cases hypothesis reported in the suite's own runs, where a first hint was wrong
MINIMAL = {
    "hn-direction-major": Case(C(1, 2, num_layers=2, bidirectional=True), Call(1)),
    "recurrent-dropout": Case(C(1, 1, dropout=1.0), Call(2, training=True)),
    "squeeze-batch": Case(C(1, 1), Call(1)),
    "input-offset-ignored": Case(C(1, 1), Call(1, layout="offset")),
    "cell-clip": Case(C(1, 2, proj_size=1, dtype="float64"),
                      Call(1, with_hx=True, x_values=Values(scale=100.0), c0_values=Values(scale=100.0))),
}


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_cases_get_the_hint_too(name: str) -> None:
    failure = _failure(f"tests.ports.broken:{CATALOGUE[name].__name__}", MINIMAL[name])
    assert failure.hint is not None and failure.hint.name == DIAGNOSES[name][2], failure


@pytest.mark.parametrize("path", list(OTHER_PORTS))
def test_other_ports_get_their_hint(path: str) -> None:
    case, location, hint = OTHER_PORTS[path]
    failure = _failure(path, case)
    assert _located(failure) == location and failure.hint is not None and failure.hint.name == hint, failure


def test_pieces_tell_a_layer_right_alone_from_a_wrong_stack() -> None:
    case, _, _ = DIAGNOSES["reverse-uses-forward-weights"]
    failure = _failure("tests.ports.broken:ReverseUsesForwardWeights", case)
    statuses = {p.name.split(" (")[0]: p.status for p in failure.location.pieces}
    assert statuses == {"layers 0..0": "matches", "layer 1 alone, fed torch's input to it": "matches",
                        "layer 1 forward direction alone": "matches", "layer 1 reverse direction alone": "matches"}


def test_a_wrong_first_layer_is_found_by_the_one_layer_prefix() -> None:
    case = Case(C(3, 4, num_layers=3), Call(4, 2))
    failure = _failure("tests.ports.broken:OnnxGateOrder", case)
    assert failure.location.layer == 0 and failure.location.pieces[0].status == "differs"
    assert len([p for p in failure.location.pieces if p.name.startswith("layers")]) == 1  # stops at the first


def test_no_hint_for_a_difference_without_a_pattern() -> None:
    """A port whose every value is off by a little: no recogniser may claim to know why."""
    import numpy as np

    from conformance.reference import reference_for

    case = Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2, with_hx=True))
    expected = reference_for(case)
    rng = np.random.default_rng(0)
    noisy = type(expected.torch)(*(part + rng.normal(0, 1e-3, part.shape).astype(part.dtype)
                                       for part in expected.torch.parts().values()))
    from conformance.verdict import Problem

    evidence = Evidence(case, expected, noisy, [Problem("values", "output: ...")])
    assert recognise(evidence) is None


def test_correct_ports_are_not_diagnosed() -> None:
    for case, _, _ in DIAGNOSES.values():
        check_forward(resolve("tests.ports.scratch_lstm:ScratchLSTM"), case, diagnose=True)


SIZE_PORTS = ("batch-tile-32", "input-block-128", "proj-tile-128", "max-steps-256", "weights-for-four-layers")


def test_a_port_computing_in_tiles_correctly_passes_where_the_tile_bugs_show() -> None:
    for name in SIZE_PORTS:
        check_forward(resolve("tests.ports.broken_sizes:TiledLSTM"), DIAGNOSES[name][0], diagnose=True)


def test_a_batch_tile_is_found_in_the_sorted_order_of_a_packed_batch() -> None:
    """The rows past the tile are the shortest sequences, wherever the caller put them."""
    lengths = (3, 1) * 3 + (3,) * 34  # sorted: the 34 + 3 long ones first, the 3 short ones last
    case = Case(C(3, 4), Call(3, 40, packing="pack_sequence", lengths=lengths, enforce_sorted=False))
    failure = _failure("tests.ports.broken:BatchTile32", case)
    assert failure.hint is not None and failure.hint.name == "batch-block", failure
    assert "every row from 32 on (of 40, counted in sorted order" in failure.hint.detail, failure.hint


def test_a_failing_recogniser_is_skipped_not_fatal() -> None:
    from conformance.hints import Recogniser

    case, _, _ = DIAGNOSES["onnx-gate-order"]
    failure = _failure("tests.ports.broken:OnnxGateOrder", case)

    def broken(evidence: Evidence) -> str:
        raise ZeroDivisionError

    from conformance.reference import reference_for

    evidence = Evidence(case, reference_for(case), None, failure.problems)
    table = (Recogniser("broken", "never", broken), Recogniser("always", "always", lambda ev: "yes", any_case=True))
    assert recognise(evidence, table).name == "always"


def test_another_bug_departing_at_a_zero_step_gets_its_own_hint() -> None:
    """An all-zero first step is where every bug departs on it: the zero-step hint must confirm a skip."""
    case = Case(C(1, 1), Call(1, x_values=Values(zero_steps=(0,))))
    failure = _failure("tests.ports.broken:OnnxGateOrder", case)
    assert failure.hint is not None and failure.hint.name == "gate-order", failure


@pytest.mark.parametrize("config, call", [
    (C(3, 4, num_layers=2, bidirectional=True), Call(5, 2, with_hx=True, x_values=Values(zero_steps=(1, 3)))),
    (C(3, 4, batch_first=True), Call(5, 3, x_values=Values(zero_steps=(0,)), **UNSORTED)),
    (C(3, 4, proj_size=2), Call(4, None, with_hx=True, x_values=Values(zero_steps=(2,)))),
    (C(1, 1), Call(1, None, x_values=Values(zero_steps=(0,)))),  # every step zero: the state stays h0's
])
def test_zero_steps_skipped_is_confirmed_in_every_shape(config: C, call: Call) -> None:
    failure = _failure("tests.ports.broken:ZeroStepsSkipped", Case(config, call))
    assert failure.hint is not None and failure.hint.name == "zero-steps-skipped", failure
