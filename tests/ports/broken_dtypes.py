"""Ports that are right in float32 and float64 and wrong in half precision.

Each broken class is :class:`~tests.ports.scratch_lstm.ScratchLSTM` with one shortcut that ports to
accelerators take with float16 and bfloat16; its one-line docstring says the shortcut and where it
shows.  In float32 and float64 each computes exactly as ScratchLSTM does.  The correct classes compute
a half-precision model more accurately than torch, or on torch's other kernels, and must pass.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .scratch_lstm import ScratchLSTM

__all__ = ["DTYPES_CATALOGUE", "DTYPES_CORRECT", "Bfloat16InsideFloat16", "Float16InsideBfloat16", "Float32Results",
           "Float32InsideHalf", "NativeKernels"]

_HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------- broken


class Bfloat16InsideFloat16(ScratchLSTM):
    """Computes a float16 model in bfloat16 (a kernel for units that only multiply bfloat16, as some NPUs and TPU paths do), three bits of mantissa short; shows on every float16 model."""

    def _compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self._param_dtype == torch.float16 else self._param_dtype


class Float16InsideBfloat16(ScratchLSTM):
    """Computes a bfloat16 model in float16 (a kernel written for float16 reused for bfloat16), which overflows past 65504 where bfloat16 holds float32's range; shows on bfloat16 models with large inputs or states."""

    def _compute_dtype(self) -> torch.dtype:
        return torch.float16 if self._param_dtype == torch.bfloat16 else self._param_dtype


class Float32Results(ScratchLSTM):
    """Computes a half-precision model in float32 and returns the float32 results without casting them back (torch returns the model's dtype); shows on every float16 or bfloat16 model."""

    def _compute_dtype(self) -> torch.dtype:
        return torch.float32 if self._param_dtype in _HALF else self._param_dtype

    def _compute(self, x, h0, c0, batch_sizes):
        if self._param_dtype not in _HALF:
            return super()._compute(x, h0, c0, batch_sizes)
        return self._run_layers(x.float(), h0.float(), c0.float(), batch_sizes)


# ---------------------------------------------------------------------------- correct


class Float32InsideHalf(ScratchLSTM):
    """Correct: computes a float16 or bfloat16 model in float32 and rounds the results once, more accurate than torch, which rounds between its operations."""

    def _compute_dtype(self) -> torch.dtype:
        return torch.float32 if self._param_dtype in _HALF else self._param_dtype


class NativeKernels(nn.LSTM):
    """Correct: torch's own LSTM with oneDNN turned off, so it runs ATen's native kernels, the path CPUs without half-precision instructions take; differs from torch here only in rounding."""

    def forward(self, input, hx: Optional[tuple] = None):
        with torch.backends.mkldnn.flags(enabled=False):
            return super().forward(input, hx)


DTYPES_CATALOGUE: dict[str, type] = {
    "bfloat16-inside-float16": Bfloat16InsideFloat16,
    "float16-inside-bfloat16": Float16InsideBfloat16,
    "float32-results": Float32Results,
}

DTYPES_CORRECT: dict[str, type] = {"float32-inside-half": Float32InsideHalf, "native-kernels": NativeKernels}
