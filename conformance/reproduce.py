"""Standalone reproducer scripts: one failing case, inline, that exits 1 until the port is fixed.

A reproducer carries the case as data (sizes and seeds: the weights and inputs are regenerated
from the seeds, never stored), names the implementation exactly as the run named it, and calls
:func:`main`, which runs the same check the suite ran, prints what differs, where, and the likely
bug, and returns the exit status.  Edit the case in the script to explore; run it under a
debugger (forward cases run in-process).
"""

from __future__ import annotations

import math
import sys
import textwrap
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

__all__ = ["main", "script", "source"]


def source(value: Any) -> str:
    """Python source that rebuilds ``value``: a Case, Call, Fault, LSTMConfig or PackingCall."""
    if is_dataclass(value) and not isinstance(value, type):
        parts = []
        for f in fields(value):
            item = getattr(value, f.name)
            if f.default is not MISSING and _same(item, f.default):
                continue
            parts.append(f"{f.name}={source(item)}")
        return f"{type(value).__name__}({', '.join(parts)})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if isinstance(value, tuple):
        inner = ", ".join(source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def script(implementation: str, failure: Any, test_id: str = "", repeat: bool = False) -> str:
    """The source of a reproducer for a :class:`~conformance.verdict.ConformanceFailure`."""
    case = failure.case
    kind = type(case).__name__
    found = f"Found by {test_id}." if test_id else "Found by lstm-conformance."
    what = "\n".join(f"  - {p.message.splitlines()[0]}" for p in failure.problems)
    extra = []
    if getattr(failure, "location", None) is not None:
        extra.append("Where: " + failure.location.describe().splitlines()[0])
    if getattr(failure, "hint", None) is not None:
        extra.append("Likely bug: " + failure.hint.describe())
    code = textwrap.indent(case.to_code().rstrip(), "    ")
    extra_text = "".join(f"\n{line}" for line in extra)
    imports = ("from conformance.case import PackingCall" if kind == "PackingCall"
               else "from conformance.arrays import LSTMConfig\nfrom conformance.case import Call, Case, Fault")
    doc = f'''"""lstm-conformance reproducer: {implementation} against torch.nn.LSTM.

{found}  Run it from the folder the suite ran in, so that
`{implementation}` imports the same way:

    python this_file.py

It exits 1 while the implementation still differs from torch on this case, and 0 once it matches.

What differed:
{what}{extra_text}

The case, as torch code (torch's result is model(*args)):

{code}
"""'''
    return "\n".join([
        "#!/usr/bin/env python3",
        doc.replace("\\", "\\\\"),
        "import sys",
        "",
        imports,
        "from conformance.reproduce import main",
        "",
        f"IMPLEMENTATION = {implementation!r}",
        f"CASE = {source(case)}",
        "",
        'if __name__ == "__main__":',
        f"    sys.exit(main(IMPLEMENTATION, CASE{', repeat=True' if repeat else ''}))",
        "",
    ])


def main(implementation: str, case: Any, repeat: bool = False) -> int:
    """Run the check behind ``case``; print the result; 1 while it fails, 0 once it passes, 2 on bad input."""
    from .case import Case, PackingCall
    from .checks import check_error, check_forward, check_packing_error
    from .registry import ResolutionError, resolve
    from .verdict import ConformanceFailure

    try:
        candidate = resolve(implementation, origin="reproducer")
    except ResolutionError as exc:
        print(f"lstm-conformance reproducer: error: {exc}", file=sys.stderr)
        return 2
    print(f"reproducing {case!r} on {candidate.name}")
    try:
        if isinstance(case, PackingCall):
            functions = getattr(candidate.target, "lstm_conformance_packing", None)
            if functions is None:
                print(f"{candidate.name} no longer provides packing functions (lstm_conformance_packing)")
                return 1
            check_packing_error(candidate, case, functions)
        elif isinstance(case, Case) and case.fault is not None:
            check_error(candidate, case)
        else:
            check_forward(candidate, case, repeat=repeat, diagnose=True)
    except ConformanceFailure as failure:
        print(failure)
        print("\nstill differs from torch.nn.LSTM: exit 1")
        return 1
    print("matches torch.nn.LSTM on this case: exit 0")
    return 0
