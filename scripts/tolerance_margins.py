"""How close correct ports come to the tolerance policy, and how often broken ones cross it.

Draws random cases with the suite's own strategies (``conformance.strategies.cases``), larger than
the suite's tests draw them (up to ``--hidden`` units, ``--steps`` steps, ``--batch`` rows), one group
per dtype and kind of values, and runs each port on every case.  For each port and group it prints how
many cases failed and the largest *margin*: the worst element's ``|a - o| / (atol + rtol * |o|)`` over
the output, h_n and c_n (1 is the line; a correct port should stay well below it), and for each group
torch's own largest error against the oracle, in eps of the dtype.  With
``--gradients [KIND ...]`` it also runs the gradient check on every case (of those kinds of values) and
counts the failures.

    python scripts/tolerance_margins.py --dtypes float16 bfloat16 --cases 30 \\
        --ports torch numpy tests.ports.broken_dtypes:NativeKernels tests.ports.broken_dtypes:Bfloat16InsideFloat16

``--native`` runs torch's reference with oneDNN off, on ATen's native kernels (the path a CPU without
half-precision instructions takes; the ports run as they are, so ``torch`` is then a port on oneDNN
judged against a reference on the native path); with ``--gradients`` the gradient checks, which run
torch and the port together, run entirely on the native kernels.  So the policy is checked against
both paths on one machine.  Run from the checkout, with the project's interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from conformance import dtypes
from conformance.adapters import Capabilities
from conformance.forward import judged
from conformance.compare import within
from conformance.checks import check_gradients
from conformance.gradients import unsupported_reason
from conformance.reference import reference_for
from conformance.registry import resolve
from conformance.strategies import VALUE_KINDS, cases
from conformance.verdict import ConformanceFailure

KINDS = ("plain", *VALUE_KINDS)


def margin(actual: np.ndarray, oracle: np.ndarray, reference: np.ndarray, tol: Any) -> float:
    """The worst finite element's |a - o| / (atol + rtol |o|); inf where NaN or inf disagree."""
    a, o = np.asarray(actual, np.float64), np.asarray(oracle, np.float64)
    both = np.isfinite(a) & np.isfinite(o)
    worst = float(np.max(np.abs(a - o)[both] / (tol.atol + tol.rtol * np.abs(o[both])), initial=0.0))
    return worst if within(a, o, tol, reference)[~both].all() else float("inf")


def reference(case: Any, native: bool) -> Any:
    """torch's result and the oracle on a case (``conformance.reference.Reference``), with torch on its native
    kernels where ``native`` says so."""
    import torch

    with torch.backends.mkldnn.flags(enabled=False) if native else contextlib.nullcontext():
        return reference_for(case)


def torch_error(case: Any, expected: Any) -> float:
    """torch's own largest error against the oracle over the output, h_n and c_n, in eps of the case's dtype."""
    worst = 0.0
    for name in ("output", "h_n", "c_n"):
        theirs, truth, _ = judged(case, expected, name)
        both = np.isfinite(theirs.astype(np.float64)) & np.isfinite(truth)
        worst = max(worst, float(np.max(np.abs(theirs.astype(np.float64) - truth)[both], initial=0.0)))
    return worst / dtypes.eps(case.config.dtype)


def case_margin(candidate: Any, case: Any, expected: Any) -> float:
    """The worst margin of the candidate's output, h_n and c_n on one case (inf: wrong shape, dtype or specials)."""
    try:
        instance = candidate.build(case.config, expected.model.state_dict())
        got = candidate.run(instance, expected.args, case.call.training, case.call.packed, case.call.arguments)
    except Exception:  # noqa: BLE001 - a port that raises has no margin
        return float("inf")
    worst = 0.0
    for name, mine in got.parts().items():
        theirs, truth, tol = judged(case, expected, name)
        if mine.shape != truth.shape or mine.dtype != theirs.dtype:
            return float("inf")
        worst = max(worst, margin(mine, truth, theirs, tol))
    return worst


def draw_cases(dtype: str, kind: str, count: int, args: argparse.Namespace) -> list:
    drawn: list = []
    sizes: dict[str, Any] = dict(hidden_size=st.integers(1, args.hidden), input_size=st.integers(1, args.inputs),
                 seq_len=st.integers(1, args.steps), batch=st.integers(1, args.batch))
    strategy = cases(Capabilities().without("dropout"), dtype=dtype, training=False,
                     values=None if kind == "plain" else kind, **sizes)
    if kind == "plain":
        strategy = strategy.filter(lambda c: c.call.x_values.plain and c.call.h0_values.plain and c.weight_scale == 1)

    @seed(args.seed)
    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case: Any) -> None:
        drawn.append(case)

    collect()
    return drawn[-count:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", nargs="+", default=["torch", "numpy"])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=130)
    parser.add_argument("--inputs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradients", nargs="*", choices=KINDS, default=None, metavar="KIND",
                        help="also run the gradient check on every case of these kinds of values (none named: all)")
    parser.add_argument("--native", action="store_true", help="torch's reference with oneDNN off (its native kernels)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    # switching oneDNN off and on again says each time that TF32 is for Intel GPUs: nothing about the case
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    candidates = [resolve(port) for port in args.ports]
    print(f"torch {torch.__version__}, oneDNN {'off' if args.native else 'on'}; {args.cases} cases per group, "
          f"seed {args.seed}; margin = worst |a - o| / (atol + rtol |o|)")
    for dtype in args.dtypes:
        for kind in args.kinds:
            start = time.time()
            drawn = draw_cases(dtype, kind, args.cases, args)
            expected = [reference(case, args.native) for case in drawn]
            errors = [torch_error(case, e) for case, e in zip(drawn, expected)]
            print(f"{dtype:9} {kind:8} torch's own error against the oracle: up to {max(errors):.2g} eps "
                  f"(median {float(np.median(errors)):.2g})", flush=True)
            for candidate in candidates:
                if dtype not in candidate.capabilities.dtypes:
                    print(f"{dtype:9} {kind:8} {candidate.name:55} declares no {dtype}", flush=True)
                    continue
                # the cases whose features the port declares (a port without proj_size gets none with one)
                pairs = [(case, e) for case, e in zip(drawn, expected)
                         if not candidate.capabilities.missing(case.features())]
                margins = [case_margin(candidate, case, e) for case, e in pairs]
                line = (f"{dtype:9} {kind:8} {candidate.name:55} forward failed {sum(m > 1 for m in margins):3}"
                        f"/{len(pairs)}, largest margin {max(margins, default=0.0):.3g}")
                judged_gradients = args.gradients is not None and (not args.gradients or kind in args.gradients)
                if judged_gradients and unsupported_reason(candidate) is not None:
                    line += "; gradients not declared"
                elif judged_gradients:
                    failed = 0
                    for case, _ in pairs:
                        try:
                            with torch.backends.mkldnn.flags(enabled=False) if args.native else contextlib.nullcontext():
                                check_gradients(candidate, case)
                        except ConformanceFailure:
                            failed += 1
                    line += f"; gradients failed {failed}/{len(pairs)}"
                print(line, flush=True)
            print(f"  ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
