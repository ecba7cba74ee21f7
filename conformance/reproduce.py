"""Standalone reproducer scripts: one failing case, inline, that exits 1 until the port is fixed.

A reproducer carries the case as data (sizes and seeds: the weights and inputs are regenerated
from the seeds, never stored), names the implementation exactly as the run named it, and calls
:func:`main`, which runs the same check the suite ran, prints what differs, where, and the likely
bug, and returns the exit status: 1 while the implementation still differs, 0 once it matches,
2 when the reproducer cannot run (``conformance``, torch or the port does not import in the
interpreter running it; the script names the interpreter the suite ran in).  Edit the case in the
script to explore; run it under a debugger (forward cases run in-process).
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import traceback
from dataclasses import MISSING, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Optional

from . import render

if TYPE_CHECKING:
    from .verdict import Repeat

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


def script(implementation: str, failure: Any, test_id: str = "", repeat: Repeat = False) -> str:
    """The source of a reproducer for a :class:`~conformance.verdict.ConformanceFailure`."""
    case = failure.case
    kind = type(case).__name__
    check = getattr(failure, "check", "forward")
    found = f"Found by {test_id}." if test_id else "Found by lstm-conformance."
    data = failure.to_data()
    what = "\n".join(f"  - {render.problem_line(p)}" for p in data["problems"])
    extra = []
    if data["location"] is not None:
        extra.append("Where: " + render.location(data["location"], pieces=False))
    if data["hint"] is not None:
        extra.append("Likely bug: " + render.hint(data["hint"]))
    code = textwrap.indent(case.to_code().rstrip(), "    ")
    extra_text = "".join(f"\n{line}" for line in extra)
    imports = ("from conformance.case import PackingCall" if kind == "PackingCall"
               else "from conformance.arrays import LSTMConfig\nfrom conformance.case import Call, Case, Fault, Values")
    doc = f'''"""lstm-conformance reproducer: {implementation} against torch.nn.LSTM.

{found}  Run it from the folder the suite ran in, so that
`{implementation}` imports the same way:

    python this_file.py

It exits 1 while the implementation still differs from torch on this case, 0 once it matches, and
2 if it cannot run here (conformance, torch or the implementation not importable).

What differed:
{what}{extra_text}

The case, as torch code (torch's result is {getattr(case, 'torch_call', 'model(*args)')}):

{code}
"""'''
    return "\n".join([
        "#!/usr/bin/env python3",
        doc.replace("\\", "\\\\"),
        "import sys",
        "",
        f"PYTHON = {sys.executable!r}  # the interpreter the suite ran in",
        "try:",
        textwrap.indent(imports, "    "),
        "    from conformance.reproduce import main",
        "except ImportError as exc:  # exit 2: this interpreter cannot run the reproducer (1 means: still differs)",
        '    print(f"lstm-conformance reproducer: cannot run in {sys.executable}: {exc}; "',
        f'          "{_INSTALL}, "',
        '          f"or run this file with the interpreter the suite ran in: {PYTHON}", file=sys.stderr)',
        "    sys.exit(2)",
        "",
        f"IMPLEMENTATION = {implementation!r}",
        f"CASE = {source(case)}",
        "",
        'if __name__ == "__main__":',
        f"    sys.exit(main(IMPLEMENTATION, CASE{f', repeat={repeat!r}' if repeat else ''}"
        f"{f', check={check!r}' if check != 'forward' else ''}, python=PYTHON))",
        "",
    ])


def _torch_pin() -> str:
    """``torch==X.Y.Z`` for the torch the suite runs (its version without a local build tag)."""
    from importlib import metadata

    try:
        return f"torch=={metadata.version('torch').split('+')[0]}"
    except metadata.PackageNotFoundError:  # pragma: no cover - the suite always runs with torch
        return "torch"


_INSTALL = f"install it there (pip install {_torch_pin()} first, then pip install lstm-conformance)"


def _cannot_run(problem: str, python: Optional[str], hint: str) -> int:
    """Say why the reproducer cannot run, in which interpreter, and what to do; exit status 2."""
    elsewhere = f", or run this file with the interpreter the suite ran in: {python}" \
        if python and os.path.realpath(python) != os.path.realpath(sys.executable) else ""
    print(f"lstm-conformance reproducer: cannot run in {sys.executable}: {problem}; {hint}{elsewhere}",
          file=sys.stderr)
    return 2


def main(implementation: str, case: Any, repeat: Repeat = False, python: Optional[str] = None,
         check: str = "forward") -> int:
    """Run the check behind ``case`` (``check``: one of ``conformance.verdict.CHECKS``); print the result.

    Returns 1 while the implementation differs from torch, 0 once it matches, and 2 when the check
    cannot run here: torch or the implementation does not import, or the check itself broke.
    ``python`` is the interpreter the suite ran in, named in those messages."""
    try:
        import torch  # noqa: F401 - the reference; imported first, so that its absence is named as such

        from .case import Case, PackingCall
        from .checks import check_forward, check_packing_error, run_gradients
        from .runner import check_error
        from .processes import ProcessFailure
        from .registry import ResolutionError, resolve
        from .verdict import ConformanceFailure
    except ImportError as exc:
        return _cannot_run(str(exc), python, _INSTALL)
    try:
        candidate = resolve(implementation, origin="reproducer")
    except ResolutionError as exc:
        return _cannot_run(f"{exc} (from {os.getcwd()})", python,
                           f"run this file from the folder the suite ran in, so that {implementation!r} "
                           "resolves the same way, or make it importable in this interpreter")
    try:
        print(f"reproducing {case!r} on {candidate.name}")
        if isinstance(case, PackingCall):
            functions = getattr(candidate.target, "lstm_conformance_packing", None)
            if functions is None:  # nothing to check: not a difference
                return _cannot_run(f"{candidate.name} provides no packing functions (lstm_conformance_packing)",
                                   python, "this case checks a port's own packing functions")
            check_packing_error(candidate, case, functions)
        elif isinstance(case, Case) and case.fault is not None:
            check_error(candidate, case)
        elif check != "forward":
            run_gradients(candidate, case, check, diagnose=True)
        else:
            check_forward(candidate, case, repeat=repeat, diagnose=True)
    except ConformanceFailure as failure:
        print(failure)
        print("\nstill differs from torch.nn.LSTM: exit 1")
        return 1
    except ProcessFailure as failure:  # a process port's program crashed, hung or broke the protocol
        print(f"the candidate {failure} on this case")
        print("\nstill differs from torch.nn.LSTM: exit 1")
        return 1
    except Exception as exc:  # noqa: BLE001 - the check itself broke (not a difference): exit 2, never 1
        traceback.print_exc()
        return _cannot_run(f"the check raised {type(exc).__name__}: {exc}", python,
                           "see the traceback above; this is not a difference from torch")
    print("matches torch.nn.LSTM on this case: exit 0")
    return 0


def command(implementation: str, case: Any, repeat: Repeat = False, check: str = "forward") -> str:
    """A one-line shell command that runs the same check as :func:`script`'s file."""
    import shlex

    flags = _repeat_flag(repeat) + (f" --{check}" if check != "forward" else "")
    text = source(case)
    # double quotes read better around reprs' single quotes, where nothing inside means anything to a shell
    quoted = f'"{text}"' if not set(text) & set('"$`\\!') else shlex.quote(text)
    return f"python -m conformance.reproduce{flags} {shlex.quote(implementation)} {quoted}"


#: What a bare ``--repeat`` stands for: one more call on the same instance (the second-call test).
_SECOND_CALL = "twice"


def _repeat_flag(repeat: Repeat) -> str:
    """``--repeat`` as :func:`cli` reads it back: bare for a second call, ``=N`` for N calls, ``=eval,train,...``
    for calls in those modes on one instance."""
    if repeat is True:
        return " --repeat"
    if repeat is False:
        return ""
    if isinstance(repeat, int):
        return f" --repeat={repeat}"
    return " --repeat=" + ",".join("train" if mode else "eval" for mode in repeat)


def _parse_repeat(text: Optional[str]) -> Repeat:
    """The value of ``--repeat`` (see :func:`_repeat_flag`); ValueError for anything else."""
    if text is None:
        return False
    if text == _SECOND_CALL:
        return True
    if text.isdigit():
        return int(text)
    modes = text.split(",")
    if not all(mode in ("train", "eval") for mode in modes):
        raise ValueError(f"--repeat takes a number of calls or modes such as eval,train,eval, got {text!r}")
    return tuple(mode == "train" for mode in modes)


def _parse_case(text: str) -> Any:
    """A case from its :func:`source` text: only the case's own dataclasses (and float, for nan/inf)."""
    import ast
    from dataclasses import is_dataclass as _is_dataclass

    from . import arrays, case as case_module

    names: dict[str, Any] = {name: value for module in (case_module, arrays) for name, value in vars(module).items()
                             if isinstance(value, type) and _is_dataclass(value)}
    names["float"] = float
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names:
            raise ValueError(f"{node.id!r} is not part of a case")
        if isinstance(node, (ast.Attribute, ast.Lambda, ast.Subscript)):
            raise ValueError("a case is written with its dataclasses, numbers, strings and tuples only")
    return eval(compile(tree, "<case>", "eval"), {"__builtins__": {}}, names)  # noqa: S307 - names checked above


def cli(argv: Optional[list[str]] = None) -> int:
    """``python -m conformance.reproduce [--repeat[=CALLS]] IMPLEMENTATION CASE``: exit 1, 0 or 2 as :func:`main`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conformance.reproduce",
                                     description="Run one case of lstm-conformance again: exit 1 while the "
                                                 "implementation differs from torch, 0 once it matches, 2 if the "
                                                 "check cannot run.")
    parser.add_argument("implementation", help="a registered name or package.module:Class, as the run named it")
    parser.add_argument("case", help="the case as the report prints it: Case(config=LSTMConfig(...), call=Call(...))")
    parser.add_argument("--repeat", nargs="?", const=_SECOND_CALL, default=None, metavar="CALLS",
                        help="call the same instance again: bare, twice (the second-call test); a number, that many "
                             "calls (the dropout mask statistics); or modes such as eval,eval,train,eval, one call in "
                             "each (.train()/.eval() switched between calls)")
    parser.add_argument("--gradients", action="store_true", help="check the gradients (the gradient tests)")
    parser.add_argument("--gradients-accumulate", action="store_true",
                        help="check that .grad accumulates over two calls (the accumulation test)")
    parser.add_argument("--double-backward", action="store_true",
                        help="check the double backward, a Hessian-vector product (the double-backward test)")
    args = parser.parse_args(argv)
    try:
        case = _parse_case(args.case)
    except (SyntaxError, ValueError, TypeError) as exc:
        print(f"lstm-conformance reproducer: error: cannot read the case {args.case!r}: {exc}", file=sys.stderr)
        return 2
    chosen = [c for c, on in (("gradients", args.gradients), ("gradients-accumulate", args.gradients_accumulate),
                                ("double-backward", args.double_backward)) if on]
    if len(chosen) > 1:
        parser.error(f"choose one check, not {', '.join('--' + c for c in chosen)}")
    check = chosen[0] if chosen else "forward"
    try:
        repeat = _parse_repeat(args.repeat)
    except ValueError as exc:
        parser.error(str(exc))
    return main(args.implementation, case, repeat=repeat, check=check)


if __name__ == "__main__":
    sys.exit(cli())
