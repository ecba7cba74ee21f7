"""Text for people: failures, problems, locations, hints and notes, rendered from their plain data.

Everything here reads the data form of a verdict (:meth:`ConformanceFailure.to_data`, dicts of
strings and numbers), so the terminal, the reports and the reproducer scripts say the same thing
in the same words, and a failure that crossed a process boundary renders like one that did not.
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable, Optional

__all__ = ["failure", "headline", "hint", "location", "note", "problem", "problem_line", "summary", "test_list"]


def _shape(index: Iterable[int]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ")"


def _prefix(p: dict[str, Any]) -> str:
    return "second call: " if p.get("call") == 2 else ""


def _tensor(p: dict[str, Any]) -> str:
    name = p.get("tensor") or ""
    return f"{name} ({p['region']})" if p.get("region") else name


def problem(p: dict[str, Any]) -> str:
    """A problem in words: one line, and for value mismatches a second with the tolerance."""
    mismatch = p.get("mismatch")
    if p["kind"] == "values" and mismatch:
        total = max(mismatch["total"], 1)
        tol = mismatch["tolerance"]
        return (f"{_prefix(p)}{_tensor(p)}: {mismatch['mismatched']} of {mismatch['total']} elements differ "
                f"({100.0 * mismatch['mismatched'] / total:.1f}%); largest difference {mismatch['max_abs']:.3g} "
                f"at {_shape(mismatch['max_abs_index'])}, largest relative {mismatch['max_rel']:.3g} at "
                f"{_shape(mismatch['max_rel_index'])}\n"
                f"  allowed |a - o| <= {tol['atol']:.2g} + {tol['rtol']:.2g} * |o|, o the float64 oracle; "
                f"torch's own error on this tensor: {tol['torch_error']:.2g}"
                + (f"; how far rounding may move this case's result: {tol['sensitivity']:.2g}"
                   if tol.get("sensitivity") else "")
                + (f"\n  NaN and inf: {mismatch['special']}" if mismatch.get("special") else ""))
    if p["kind"] == "gradient" and mismatch:
        total = max(mismatch["total"], 1)
        tol = mismatch["tolerance"]
        loss = f" ({p['region']})" if p.get("region") else ""
        values = p.get("rule") == "gradient-values"  # else the detail says what is wrong (.grad not accumulated)
        head = f"gradient w.r.t. {p['tensor']}{loss}" if values else p["detail"]
        return (f"{_prefix(p)}{head}: {mismatch['mismatched']} of {mismatch['total']} "
                f"elements differ ({100.0 * mismatch['mismatched'] / total:.1f}%); largest difference "
                f"{mismatch['max_abs']:.3g} at {_shape(mismatch['max_abs_index'])}, largest relative "
                f"{mismatch['max_rel']:.3g} at {_shape(mismatch['max_rel_index'])}"
                + (f"\n  where: {p['detail']}" if values and p.get("detail") else "")
                + f"\n  allowed |a - o| <= {tol['atol']:.2g} + {tol['rtol']:.2g} * |o|, o the float64 oracle's "
                f"gradient; torch's own error on this gradient: {tol['torch_error']:.2g}"
                + (f"; how far rounding may move it: {tol['sensitivity']:.2g}" if tol.get("sensitivity") else "")
                + (f"\n  NaN and inf: {mismatch['special']}" if mismatch.get("special") else ""))
    if p["kind"] == "gradient":
        loss = f" ({p['region']})" if p.get("region") else ""
        return f"{_prefix(p)}{p['detail']}{loss}"
    if p["kind"] in ("shape", "dtype") and p.get("tensor"):
        return f"{_prefix(p)}{_tensor(p)} {p['detail']}"
    return f"{_prefix(p)}{p['detail']}"


def problem_line(p: dict[str, Any]) -> str:
    """The first line of :func:`problem`."""
    return problem(p).splitlines()[0] if problem(p) else p["kind"]


def location(loc: dict[str, Any], pieces: bool = True) -> str:
    """Where the candidate first departs from torch, and what each smaller model showed."""
    where = []
    if loc.get("layer") is not None:
        where.append(f"layer {loc['layer']}")
    if loc.get("direction") is not None:
        where.append(f"{loc['direction']} direction")
    if loc.get("time_step") is not None:
        where.append(f"time step {loc['time_step']}")
    if loc.get("batch_element") is not None:
        where.append(f"batch element {loc['batch_element']}")
    text = f"first departs from torch at {', '.join(where) or 'the whole model'} (in {loc['tensor']})"
    if loc.get("time_step") is not None and loc.get("steps_total"):
        text += f"; {loc['steps_differing']} of {loc['steps_total']} steps of that direction differ"
    if len(loc.get("directions_differing") or ()) > 1:
        text += "; both directions differ"
    if not pieces:
        return text
    lines = [text] + [f"  {piece['name']}: {piece['status']}" + (f" ({piece['detail']})" if piece.get("detail") else "")
                      for piece in loc.get("pieces") or ()]
    return "\n".join(lines)


def hint(h: dict[str, Any]) -> str:
    """A likely bug: what it is, the recogniser's name, and what it saw."""
    return f"{h['bug']} [{h['name']}]" + (f": {h['detail']}" if h.get("detail") else "")


def _diagnosed_on(data: dict[str, Any]) -> str:
    return f" (seen on {data['diagnosed_on']})" if data.get("diagnosed_on") else ""


def summary(data: dict[str, Any]) -> str:
    """One line: what differed, where and why, for tables and reports."""
    text = "; ".join(problem_line(p) for p in data["problems"]) or "the candidate does not match torch"
    if data.get("location"):
        text += f"; {location(data['location'], pieces=False)}"
    if data.get("hint"):
        text += f"; likely bug: {data['hint']['bug']}{_diagnosed_on(data)}"
    return text


def headline(data: dict[str, Any]) -> str:
    """A short line naming the failure: the likely bug, or the first problem."""
    if data.get("hint"):
        return f"likely bug: {data['hint']['bug']}"
    if data["problems"]:
        return problem_line(data["problems"][0])
    return "the candidate does not match torch"


def _code_intro(data: dict[str, Any]) -> str:
    if data.get("case_kind") == "case" and "\nkwargs = " in data.get("case_code", ""):  # a call by keyword
        return "builds `model`, `args` and `kwargs`; torch's result is `model(*args, **kwargs)`"
    if data.get("case_kind") == "case":
        return "builds `model` and `args`; torch's result is `model(*args)`"
    return "torch's packing function on the same arguments"


def failure(data: dict[str, Any], test: str = "", reproducer: Optional[str] = None) -> str:
    """The full report of one failure: what differs, where, the likely bug, the case as code, and
    the reproducer when one is given."""
    count = len(data["problems"])
    on = f" on {test}" if test else ""
    lines = [f"{data['candidate']} does not match torch.nn.LSTM{on} ({data['call']} call)"]
    if data.get("hint"):
        lines.append(f"Likely bug{_diagnosed_on(data)}: {hint(data['hint'])}")
    if data.get("location"):
        lines.append("Where: " + location(data["location"]).replace("\n", "\n  "))
    lines.append(f"What differs ({count} problem{'s' if count != 1 else ''}) on case: {data['case']}")
    lines += [f"- {problem(p)}".replace("\n", "\n  ") for p in data["problems"]]
    lines += ["", f"The case as code ({_code_intro(data)}):", "", textwrap.indent(data["case_code"].rstrip(), "    ")]
    if reproducer:
        lines += ["", reproducer.rstrip()]
    return "\n".join(lines)


def note(n: dict[str, Any]) -> str:
    """A note in words: ``[what] (call) torch ...; the candidate ...``."""
    where = f"[{n['what']}] " if n.get("what") else ""
    call = f"({n['call']} call) " if n.get("call") else ""
    if n.get("torch") or n.get("candidate"):
        return f"{where}{call}torch {n.get('torch', '')}; the candidate {n.get('candidate', '')}"
    return f"{where}{call}".strip()


def test_list(tests: list[str], width: int = 100, prefix: str = "") -> str:
    """``prefix`` then short test names, ``[batch_first], [bidirectional], ...``, wrapped to ``width``."""
    return textwrap.fill(", ".join(tests), width=width, break_on_hyphens=False, initial_indent=prefix,
                         subsequent_indent="  ")
