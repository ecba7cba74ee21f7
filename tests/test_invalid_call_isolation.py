"""Which invalid calls get a forked child of their own, and one build serving torch's call and the port's.

A fork costs ~10 ms of kernel time, so only the packed calls that can corrupt torch's heap
fork; these tests pin which ones, and that sharing one build cannot leak one call's effects into the other.
"""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import HealthCheck, find, settings

from conformance import children, service
from conformance.candidates import make_candidate
from conformance.hazards import UNSTABLE_PACKED_FAULTS
from conformance.invalid_calls import prepare, record_candidate, record_reference
from conformance.isolation import Worker
from conformance.process_messages import Answered, Ping, TimedOut
from conformance.runner import check_error
from conformance.service import SERVICE, RecordInvalidCall, RecordTorchCall
from conformance.registry import resolve
from conformance.reference import copy_args
from conformance.bad_calls import (PACKED_CALL_FAULTS, PACKED_STRUCTURE_FAULTS, bad_call_cases, bad_constructor_cases,
                                   fault_ids)

#: Packed calls whose states torch's C++ code indexes out of bounds: layer counts of h0 and c0 that
#: differ (pytorch/pytorch#173946), a batch other than the input's (measured: ``free(): invalid next
#: size``, hangs), or states that are not two 3-D tensors.  Feature and dtype faults are checked, and
#: so is the number of states (a tuple of one or of three tensors).
FORKED = {"hx is a single tensor, not a tuple", "h0 has one dimension too few", "c0 has one dimension too many", "h0 has one layer too many",
          "c0 has one layer too many", "h0 has one layer too few", "c0 has one layer too few",
          "h0 has one batch element too many", "c0 has one batch element too many",
          "h0 has one batch element too few", "hx in batch_first layout"}

_FIND = settings(database=None, max_examples=50, suppress_health_check=list(HealthCheck))


def _example(fault: str, packed: bool):
    return find(bad_call_cases(fault, packed=packed), lambda case: True, settings=_FIND)


def test_the_table_names_real_faults() -> None:
    assert FORKED < set(PACKED_CALL_FAULTS) and FORKED != set(PACKED_CALL_FAULTS)


@pytest.mark.slow
@pytest.mark.parametrize("fault", PACKED_CALL_FAULTS, ids=fault_ids(PACKED_CALL_FAULTS))
def test_only_packed_calls_with_malformed_states_fork(fault: str) -> None:
    assert prepare(_example(fault, packed=True)).may_corrupt_heap() is (fault in FORKED)
    assert not prepare(_example(fault, packed=False)).may_corrupt_heap()  # torch's Python checks come first


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(PACKED_STRUCTURE_FAULTS), ids=fault_ids(PACKED_STRUCTURE_FAULTS))
def test_hand_built_packed_structures_fork_only_with_hx_of_another_batch(fault: str) -> None:
    """The kernel slices a hand-built structure's rows and states with checks; hx of another batch than
    ``batch_sizes[0]`` is what writes out of bounds, as for the hx faults."""
    with_hx = find(bad_call_cases(fault, packed=True), lambda case: case.call.with_hx, settings=_FIND)
    assert prepare(with_hx).may_corrupt_heap() is (fault == "batch_sizes increase")  # its first step is smaller
    assert not prepare(_example(fault, packed=True)).may_corrupt_heap()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["c0 has one layer too few", "h0 has one layer too few"])
def test_torch_is_not_asked_where_its_answer_varies_run_to_run(fault: str, monkeypatch) -> None:
    """Any answer of the port passes on an unstable fault, so torch's forked call would decide nothing."""
    asked = []
    torch_record = service._Handler.torch_record

    def spy(handler, case):
        asked.append(case)
        return torch_record(handler, case)

    monkeypatch.setattr(service._Handler, "torch_record", spy)
    case = _example(fault, packed=True)
    records = service._Handler().answer(RecordInvalidCall("torch", case))
    assert (asked == []) is (fault in UNSTABLE_PACKED_FAULTS) and bool(records.reference.not_run) is not asked
    notes = check_error(resolve("torch"), case)  # the same, through the worker
    if fault in UNSTABLE_PACKED_FAULTS:
        assert len(notes) == 1
        assert (notes[0].kind, notes[0].what) == ("reference-undefined", fault)
        assert notes[0].torch.startswith("was not run (its answer"), notes[0]
    else:
        assert all("was not run" not in note.torch for note in notes)


class MutatesItsInput(torch.nn.LSTM):
    """A port that scribbles over the caller's input before failing as torch does."""

    def forward(self, input, hx=None):
        data = input.data if isinstance(input, torch.nn.utils.rnn.PackedSequence) else input
        with torch.no_grad():
            data.fill_(1e6)
        return super().forward(input, hx)


@pytest.mark.parametrize("packed", [False, True])
def test_one_build_serves_both_calls_untouched(packed: bool) -> None:
    case = _example("c0 has one feature too many", packed)
    prepared = prepare(case)
    pristine = copy_args(prepared.args)
    port = make_candidate(MutatesItsInput, name="mutates-its-input")
    record_candidate(port, case, prepared)
    first = prepared.args[0].data if packed else prepared.args[0]
    assert torch.equal(first, pristine[0].data if packed else pristine[0])
    assert record_reference(case, prepared) == record_reference(case)  # the same as a build of its own


def test_clones_keep_strides_requires_grad_and_one_tensor_passed_twice() -> None:
    x = torch.randn(3, 4, 10)[..., ::2].requires_grad_(False)
    h = torch.randn(1, 4, 5, requires_grad=True)
    x_copy, (h_copy, c_copy) = copy_args((x, (h, h)))
    assert x_copy.shape == x.shape and x_copy.stride() == x.stride() and not x_copy.is_contiguous()
    assert torch.equal(x_copy, x) and x_copy.data_ptr() != x.data_ptr()
    assert h_copy is c_copy and h_copy.requires_grad and h_copy.data_ptr() != h.data_ptr()


def test_a_bad_constructor_is_recorded_while_building() -> None:
    case = find(bad_constructor_cases(), lambda case: True, settings=_FIND)
    prepared = prepare(case)
    assert prepared.record is not None and prepared.model is None and not prepared.may_corrupt_heap()
    assert record_reference(case) == prepared.record
    assert prepared.record.raised is None or prepared.record.raised.stage == "construct"


CRASHES_ON_PACKED = """
import ctypes
from torch import nn

class CrashesOnPacked(nn.LSTM):
    def forward(self, input, hx=None):
        if hasattr(input, "batch_sizes"):
            ctypes.string_at(0)
        return super().forward(input, hx)
"""


@pytest.mark.slow
def test_a_drop_ins_call_started_beside_torchs_is_still_its_own(tmp_path, monkeypatch) -> None:
    """torch's forked call and the drop-in's run side by side: each record is the one its own call makes."""
    case = _example("hx is a single tensor, not a tuple", packed=True)
    assert prepare(case).may_corrupt_heap()
    (tmp_path / "crashes_on_packed.py").write_text(CRASHES_ON_PACKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = Worker(SERVICE)
    try:
        torch_alone = worker.call(RecordTorchCall(case)).value
        beside = worker.call(RecordInvalidCall("torch", case)).value  # the drop-in's forked call runs beside torch's
        assert beside.reference == torch_alone
        assert beside.candidate.raised is not None and beside.candidate.raised.describe() == torch_alone.raised.describe()
        crashing = worker.call(RecordInvalidCall("crashes_on_packed:CrashesOnPacked", case)).value
        assert crashing.reference == torch_alone and crashing.candidate.crashed == "was killed by signal 11 (SIGSEGV)"
        assert isinstance(worker.call(RecordInvalidCall("torch", _example("c0 has one layer too few", packed=True))),
                          Answered)
        assert worker.call(Ping()) == Answered("pong")
    finally:
        worker.stop()


def test_children_that_answered_are_reaped_later_not_left_as_zombies() -> None:
    for _ in range(20):
        assert children.run_in_fork(int, "7", timeout=30) == Answered(7)
    for _ in range(100):
        children._reap_finished()
        if not children._UNREAPED:
            break
        time.sleep(0.05)
    assert not children._UNREAPED


@pytest.mark.slow
def test_a_forked_call_past_its_limit_is_a_timeout_recorded_as_a_crash_of_that_call() -> None:
    """Not retried (a child starts from its parent's state each time); the record says it timed out."""
    assert children.run_in_fork(time.sleep, 60, timeout=1) == TimedOut("did not finish within 1 s")
    assert service.forked_record(time.sleep, 60, timeout=1).crashed == "did not finish within 1 s"
