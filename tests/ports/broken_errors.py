"""A catalogue of drop-in LSTM ports whose only bug is their ERROR behaviour.

Each class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` (which raises and warns exactly as
``torch.nn.LSTM`` 2.13 does) with one realistic mistake in how it rejects bad calls: a message of
its own, the wrong exception type, a missing check, a check that also rejects valid calls, a
missing warning, or a silent answer to an empty sequence.  Their results on valid calls are
correct (except :class:`RaisesOnValid`, which raises on one), so only the suite's error and
warning checks can flag them.

``ERROR_CATALOGUE`` maps a short kebab-case name to each class.
"""

from __future__ import annotations

from .scratch_lstm import ScratchLSTM

__all__ = ["ERROR_CATALOGUE"]


class WrongErrorMessage(ScratchLSTM):
    """Rejects a wrong input feature size with the right type (RuntimeError) but a message of its own."""

    def _check_input_size(self, features):
        if features != self.input_size:
            raise RuntimeError(f"bad input size: got {features} features, the model takes {self.input_size}")


class WrongErrorType(ScratchLSTM):
    """Raises ValueError instead of torch's RuntimeError for a wrongly shaped h0 or c0 (same message)."""

    def _check_hidden_size(self, hx, batch):
        n = self.num_layers * self._num_directions
        for k, expected in ((0, (n, batch, self._real_hidden_size)), (1, (n, batch, self.hidden_size))):
            if hx[k].size() != expected:
                raise ValueError(f"Expected hidden[{k}] size {expected}, got {list(hx[k].size())}")


class AcceptsBadHx(ScratchLSTM):
    """Checks only c0's shape: an h0 with an extra layer or a batch of 1 is silently ignored or broadcast."""

    def _check_hidden_size(self, hx, batch):
        expected = (self.num_layers * self._num_directions, batch, self.hidden_size)
        if hx[1].size() != expected:
            raise RuntimeError(f"Expected hidden[1] size {expected}, got {list(hx[1].size())}")


class RaisesOnValid(ScratchLSTM):
    """Rejects a batch of size 0, which torch accepts (it returns empty outputs and states)."""

    def _check_forward_args(self, input, hx, batch):
        if batch == 0:
            raise ValueError("LSTM: expected a non-empty batch, got batch size 0")
        super()._check_forward_args(input, hx, batch)


class MissingDropoutWarning(ScratchLSTM):
    """Does not emit torch's UserWarning for dropout > 0 with num_layers=1."""

    def _warn_dropout(self, dropout):
        pass


class AcceptsZeroLength(ScratchLSTM):
    """Returns an empty output and (h0, c0) unchanged for a sequence of length 0 instead of raising."""

    def _check_sequence_length(self, seq_len):
        pass

    def _run_direction(self, x, h, c, w, reverse):
        if x.shape[0] == 0:  # the loop never runs: no outputs, and the state stays where it started
            return x.new_empty((0,) + tuple(h.shape)), (h, c)
        return super()._run_direction(x, h, c, w, reverse)


ERROR_CATALOGUE: dict[str, type] = {
    "wrong-error-message": WrongErrorMessage,
    "wrong-error-type": WrongErrorType,
    "accepts-bad-hx": AcceptsBadHx,
    "raises-on-valid": RaisesOnValid,
    "missing-dropout-warning": MissingDropoutWarning,
    "accepts-zero-length": AcceptsZeroLength,
}
