"""Writing conformance reports: a report as JSON or Markdown, and several side by side in one table.

:func:`to_json` and :func:`to_markdown` write one report (a :func:`conformance.report.document`);
:func:`port_table` puts several reports' rows side by side, feature x implementation, whichever of
``conformance.report.READABLE_SCHEMAS`` each was written in.  The formats: ``docs/cli.md``.
"""

from __future__ import annotations

import json

from .matrix_rows import order
from .report import Row

__all__ = ["port_table", "to_json", "to_markdown"]


def to_json(doc: dict) -> str:
    """The report as JSON, as ``lstm-conformance report --json`` writes it."""
    return json.dumps(doc, indent=2) + "\n"


def _profile(doc: dict) -> str:
    return doc["profile"] if "profile" in doc else doc["hypothesis_profile"]  # schema 1: hypothesis_profile


def to_markdown(doc: dict) -> str:
    """The report as Markdown: the run, its notes, the matrix, and each failure with its reproducer."""
    seed = "no seed given" if doc["seed"] is None else f"seed {doc['seed']}"
    took = "" if doc["duration_s"] is None else f", {doc['duration_s']:.1f} s"
    lines = [f"# Conformance of `{doc['implementation']}` to torch.nn.LSTM", "",
             f"torch {doc['torch_version']}, profile `{doc['profile']}`, {seed}{took}, "
             f"{doc['kind']} `{doc['path']}`.", ""]
    if doc.get("notes"):
        counts = ", ".join(f"{kind} {count}" for kind, count in doc["notes"].items())
        lines += [f"Notes (information, not failures): {counts}.", ""]
    lines += ["| feature | status | examples |", "|---|---|---|"]
    lines += [f"| {row['name']} | {Row(**row).cell()} | {row['examples']} |" for row in doc["features"]]
    if doc["failures"]:
        lines += ["", "## Failures", ""]
        for failure in doc["failures"]:
            lines += [f"### {failure['feature']}: `{failure['test']}`", "", failure["summary"], ""]
            if failure["reproducer"]:
                lines += ["```python", failure["reproducer"].rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


_MARKS = {"passed": "passed", "failed": "**failed**", "unsupported": "unsupported",
          "expected failure": "expected failure", "not run": "not run"}


def port_table(docs: list[dict]) -> str:
    """A Markdown table, feature x implementation, from several reports' JSON documents."""
    names = [doc["implementation"] for doc in docs]
    features: list[str] = []
    for doc in docs:
        features += [row["name"] for row in doc["features"] if row["name"] not in features]
    status = [{row["name"]: Row(**row).cell() for row in doc["features"]} for doc in docs]
    lines = ["| feature | " + " | ".join(f"`{name}`" for name in names) + " |",
             "|---|" + "---|" * len(names)]
    for feature in sorted(features, key=order):
        cells = [_MARKS.get(s.get(feature, "not run"), s.get(feature, "not run")) for s in status]
        cells = [cell.replace("failed ", "**failed** ") for cell in cells]
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    versions = sorted({doc["torch_version"] for doc in docs})
    profiles = sorted({_profile(doc) for doc in docs})
    lines += ["", f"torch {', '.join(versions)}; hypothesis profile {', '.join(profiles)}; "
                  "made by `lstm-conformance table` from `lstm-conformance report --json` files."]
    return "\n".join(lines) + "\n"
