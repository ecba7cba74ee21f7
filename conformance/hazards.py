"""torch's known hazards on invalid calls: the calls it answers differently run to run, and those that may
corrupt its heap and crash it later, blaming another case.

Who uses this: :mod:`conformance.invalid_calls` (which calls to make in a forked child) and the error
policy (whose answers are reference-undefined).  Why each rule holds: ``docs/errors.md``.
"""

from __future__ import annotations

from .case import Case

__all__ = ["NOT_RUN_UNSTABLE", "UNSTABLE_PACKED_FAULTS", "may_corrupt_heap", "unstable"]

#: Invalid packed calls on which torch reads or writes out of bounds (pytorch/pytorch#173946 and the
#: like): what it does depends on the heap around the states, so it returns a result, raises or
#: crashes, and two processes given the same case can answer differently (measured: torch's call and
#: a drop-in that *is* torch, forked side by side, disagreed on "c0 has one dimension too many").
#: Each fault here was seen crashing torch (SIGSEGV, SIGABRT or ``free(): invalid next size``) in
#: 120 calls; they are reference-undefined whatever one run of torch did.  No hand-built packed
#: structure (``bad_calls.PACKED_STRUCTURE_FAULTS``) is here: torch answers each the same way every time.
UNSTABLE_PACKED_FAULTS = frozenset({"h0 has one layer too many", "c0 has one layer too few", "c0 has one dimension too many",
                                    "h0 has one batch element too few", "c0 has one batch element too many",
                                    "hx in batch_first layout"})


def unstable(case: Case) -> bool:
    """Whether torch's answer to this invalid call varies run to run (``UNSTABLE_PACKED_FAULTS``)."""
    return case.call.packed and case.fault is not None and case.fault.name in UNSTABLE_PACKED_FAULTS


#: torch's record on an ``unstable`` case: its call would decide nothing (any answer of the candidate
#: passes) and costs a forked child, so it is not made; the candidate's call still is.
NOT_RUN_UNSTABLE = ("its answer to this call varies run to run: it indexes the states out of bounds, "
                    "pytorch/pytorch#173946")


def may_corrupt_heap(case: Case, args: tuple) -> bool:
    """Whether torch's call could corrupt its own heap and crash later, blaming another case.

    Only packed input skips torch's Python checks, and its C++ code indexes the states unchecked:
    h0 and c0 with different numbers of layers (pytorch/pytorch#173946) or a batch other than the
    input's (measured here: ``free(): invalid next size``, hangs) write out of bounds.  So a packed
    call runs unforked only when hx is absent or two 3-D tensors of the input's batch with as many
    layers each; anything else runs in a forked child of its own.

    Fewer than two states never reach that code: torch's Python indexes ``hx[1]`` (``IndexError``)
    or, for sorted input, its C++ checks the count first ("lstm expects two hidden states").  With
    more than two, only the first two can reach it (the extra one is dropped, or rejected by that
    check), so they decide.  Measured: 2000 such calls unforked, no crash, the same records as forked.

    A packed structure built by hand whose parts do not fit together (``PACKED_STRUCTURE_FAULTS``:
    batch_sizes that miscount the data's rows, increase, end with 0 or are int32; sorted_indices that are
    no permutation) is decided by the same rule, through its ``batch_sizes[0]``: the kernel takes each
    step's rows and states with bounds-checked slices, and indexes hx by sorted_indices checked too.
    Measured on each fault: forked, torch never crashed and answered each case the same way twice;
    unforked in one process, the same records as forked, and torch still right on a valid call after.
    """
    if not case.call.packed or len(args) < 2:
        return False
    import torch

    hx = args[1]
    if not isinstance(hx, (tuple, list)):
        return True
    if len(hx) < 2:
        return False
    h0, c0 = hx[0], hx[1]
    if not (isinstance(h0, torch.Tensor) and isinstance(c0, torch.Tensor)):
        return True
    batch = int(args[0].batch_sizes[0]) if len(args[0].batch_sizes) else 0
    return h0.dim() != 3 or c0.dim() != 3 or h0.shape[0] != c0.shape[0] or not h0.shape[1] == c0.shape[1] == batch
