"""Drop-in ports that misbehave as processes: they crash, hang, are slow, or return the wrong structure.

The suite must turn each into a failure of the case (naming what was wrong) and go on; a port
that is only slow on its first call must pass.
"""

from __future__ import annotations

import ctypes
import os
import time

from tests.ports.scratch_lstm import ScratchLSTM


def _batch(module: ScratchLSTM, input) -> int:
    if input.dim() == 2:
        return 1
    return input.size(0) if module.batch_first else input.size(1)


class SegfaultsOnBatches(ScratchLSTM):
    """A native kernel that reads a null pointer for dense batches of 2 or more."""

    def forward(self, input, hx=None):
        if not hasattr(input, "batch_sizes") and _batch(self, input) >= 2:
            ctypes.string_at(0)
        return super().forward(input, hx)


class HangsOnInputSizeSeven(ScratchLSTM):
    """Deadlocks (here: sleeps for an hour) whenever input_size is 7."""

    def forward(self, input, hx=None):
        if self.input_size == 7:
            time.sleep(3600)
        return super().forward(input, hx)


class AlwaysHangs(ScratchLSTM):
    """Deadlocks (here: sleeps for an hour) on every call."""

    def forward(self, input, hx=None):
        time.sleep(3600)
        return super().forward(input, hx)


#: How long :class:`SlowFirstCallInEachProcess` takes on its first call: more than a limit of 3 s,
#: less than twice that (the retry's limit).
FIRST_CALL_SECONDS = 4.0
_CALLED_IN_THIS_PROCESS: list = []


class SlowFirstCallInEachProcess(ScratchLSTM):
    """Correct, but its first call in each process takes FIRST_CALL_SECONDS (a backend starting, a
    compilation), as each fresh worker finds it again."""

    def forward(self, input, hx=None):
        if not _CALLED_IN_THIS_PROCESS:
            _CALLED_IN_THIS_PROCESS.append(True)
            time.sleep(FIRST_CALL_SECONDS)
        return super().forward(input, hx)


class SlowFirstCallOfTheRun(ScratchLSTM):
    """Correct, but its first call of the run hangs, and every later call, in any process, is fast:
    like a compilation slowed once (a loaded machine) whose next try finds a cache on disk.  The
    file $SLOW_FIRST_CALL_MARKER records that the first call was made."""

    def forward(self, input, hx=None):
        marker = os.environ["SLOW_FIRST_CALL_MARKER"]
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            time.sleep(3600)
        return super().forward(input, hx)


class ReturnsList(ScratchLSTM):
    """Returns [output, (h_n, c_n)]: a list where nn.LSTM returns a tuple."""

    def forward(self, input, hx=None):
        return list(super().forward(input, hx))


class ReturnsNumpy(ScratchLSTM):
    """A drop-in that hands back NumPy arrays instead of tensors."""

    def forward(self, input, hx=None):
        output, (h_n, c_n) = super().forward(input, hx)
        return output, (h_n.detach().numpy(), c_n.detach().numpy())


class MissingCellState(ScratchLSTM):
    """Returns (output, h_n) only, like nn.GRU."""

    def forward(self, input, hx=None):
        output, (h_n, _) = super().forward(input, hx)
        return output, h_n


class FlatResult(ScratchLSTM):
    """Returns (output, h_n, c_n): the wrong nesting."""

    def forward(self, input, hx=None):
        output, (h_n, c_n) = super().forward(input, hx)
        return output, h_n, c_n
