"""The ``lstm-conformance`` command: ``check`` an implementation, ``report`` its conformance
matrix, ``table`` several reports side by side, ``bench`` the suite's speed, ``list`` what is registered."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from . import bench, report
from .adapters import FEATURES
from .registry import ResolutionError, available, resolve

__all__ = ["main"]


def _pytest_args(args: argparse.Namespace) -> list[str]:
    out = ["-q", "--no-header", f"--hypothesis-profile={args.profile}"]
    if args.max_examples is not None:
        out.append(f"--lstm-max-examples={args.max_examples}")
    if args.seed is not None:
        out.append(f"--hypothesis-seed={args.seed}")
    if args.workers:
        out += ["-n", str(args.workers)]
    if getattr(args, "reproducers", None):
        out.append(f"--lstm-reproducers={args.reproducers}")
    if not args.verbose:
        out += ["--tb=line"]
    return out


def _resolve(impl: str) -> Optional[Any]:
    try:
        return resolve(impl, origin="command line")
    except ResolutionError as exc:
        print(f"lstm-conformance: error: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace, doing: str) -> Optional[tuple[Any, report.Collector, int]]:
    """Resolve the implementation and run the suite on it, ending with the summary table."""
    candidate = _resolve(args.impl)
    if candidate is None:
        return None
    print(f"{doing} {candidate.name} ({candidate.path}, {candidate.kind}) against torch.nn.LSTM")
    collector = report.Collector()
    code, elapsed = report.run_suite(args.impl, _pytest_args(args), collector)
    _summary(collector.results, elapsed)
    return candidate, collector, code


def _check(args: argparse.Namespace) -> int:
    ran = _run(args, "checking")
    return 2 if ran is None else ran[2]


def _report(args: argparse.Namespace) -> int:
    if not (args.json or args.markdown):
        print("lstm-conformance: error: report needs --json FILE and/or --markdown FILE", file=sys.stderr)
        return 2
    for option, path in (("--json", args.json), ("--markdown", args.markdown)):
        problem = report.check_writable(path, option)
        if problem:
            print(f"lstm-conformance: error: {problem}", file=sys.stderr)
            return 2
    ran = _run(args, "reporting on")
    if ran is None:
        return 2
    candidate, collector, code = ran
    if not collector.results:
        print(f"lstm-conformance: error: the suite ran no test (pytest exit code {code})", file=sys.stderr)
        return code or 2
    doc = report.document(args.impl, candidate, args.profile, collector.results)
    if args.json:
        Path(args.json).write_text(report.to_json(doc))
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(report.to_markdown(doc))
        print(f"wrote {args.markdown}")
    return code


def _table(args: argparse.Namespace) -> int:
    docs = []
    for path in args.reports:
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("schema") != report.SCHEMA_VERSION or "features" not in doc:
                raise ValueError(f"not an lstm-conformance report (schema {report.SCHEMA_VERSION})")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            print(f"lstm-conformance: error: cannot read report {path}: {reason}", file=sys.stderr)
            return 2
        docs.append(doc)
    text = report.port_table(docs)
    if args.markdown:
        problem = report.check_writable(args.markdown, "--markdown")
        if problem:
            print(f"lstm-conformance: error: {problem}", file=sys.stderr)
            return 2
        Path(args.markdown).write_text(text)
    print(text, end="")
    return 0


def _summary(results: dict[str, report.TestResult], elapsed: float) -> None:
    if not results:
        return
    rows = report.matrix(results)
    width = max(len(row.name) for row in rows)
    print(f"\n{'feature':<{width}}  {'examples':>8}  status")
    for row in rows:
        print(f"{row.name:<{width}}  {row.examples:>8}  {row.cell()}")
    counts = Counter(r.status for r in results.values())
    print("\n" + ", ".join(f"{counts[s]} {s}" for s in report.STATUSES if counts[s])
          + f" ({len(results)} tests) in {elapsed:.1f}s")
    for result in results.values():
        if result.status == "failed":
            print(f"FAILED {result.test}: {(result.failures[0]['summary'] if result.failures else result.detail)[:300]}")


def _list(args: argparse.Namespace) -> int:
    names = available()
    width = max(len(name) for name in names)
    for name, path in names.items():
        try:
            candidate = resolve(name)
        except ResolutionError as exc:
            print(f"{name:<{width}}  {path}\n    cannot load: {exc}")
            continue
        caps = candidate.capabilities
        lacks = sorted(set(FEATURES) - caps.features)
        print(f"{name:<{width}}  {path} ({candidate.kind})")
        print(f"    dtypes: {', '.join(sorted(caps.dtypes))}; errors: {caps.errors}; "
              f"unsupported: {', '.join(lacks) or 'nothing'}")
    return 0


def _suite_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("impl", help="registered name or import path package.module:Class")
    parser.add_argument("--profile", choices=["dev", "ci", "thorough"], default="ci")
    parser.add_argument("--max-examples", type=int, default=None, help="examples per test")
    parser.add_argument("-n", dest="workers", type=int, default=0, help="parallel workers (pytest-xdist)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed, to reproduce a run")
    parser.add_argument("-v", "--verbose", action="store_true", help="full failure reports")


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported on one line (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lstm-conformance: error: {message} (see lstm-conformance --help)\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = _Parser(prog="lstm-conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = sub.add_parser("check", help="run the conformance suite on one implementation")
    _suite_options(check)
    check.add_argument("--reproducers", metavar="DIR", help="save each failure's reproducer script into DIR")
    check.set_defaults(func=_check)
    rep = sub.add_parser("report", help="run the suite and write the conformance matrix (JSON and/or Markdown)")
    _suite_options(rep)
    rep.add_argument("--json", metavar="FILE", help="write the report as JSON (schema: conformance.report)")
    rep.add_argument("--markdown", metavar="FILE", help="write the report as Markdown")
    rep.set_defaults(func=_report)
    table = sub.add_parser("table", help="one Markdown table, feature x implementation, from report JSON files")
    table.add_argument("reports", nargs="+", metavar="REPORT.json")
    table.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    table.set_defaults(func=_table)
    bench.add_parser(sub)
    lister = sub.add_parser("list", help="registered implementations and their capabilities")
    lister.set_defaults(func=_list)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
