"""The ``lstm-conformance`` command: ``check`` an implementation, ``report`` its conformance
matrix, ``table`` several reports side by side, ``bench`` the suite's speed, ``list`` what is registered."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from . import bench, database, report, report_collect, report_render
from .adapters import FEATURES
from .options import OneLineParser, OptionError, argparse_type, check_writable, non_negative_int, positive_int
from .registry import ResolutionError, available, resolve

__all__ = ["default_profile", "main"]

PROFILES = ("dev", "ci", "thorough")


def default_profile() -> str:
    """The profile when none is asked for: ``ci`` when the environment variable CI is set, else ``dev``,
    as the pytest plugin chooses."""
    return "ci" if os.environ.get("CI") else "dev"


def _pytest_args(args: argparse.Namespace) -> list[str]:
    # -qq and -rN: pytest's own closing line and short summary give way to the summary table below
    out = ["-qq", "-rN", "--no-header", f"--lstm-profile={args.profile}"]
    if args.max_examples is not None:
        out.append(f"--lstm-max-examples={args.max_examples}")
    if args.seed is not None:
        out.append(f"--hypothesis-seed={args.seed}")
    if args.workers:
        out += ["-n", str(args.workers)]
    if getattr(args, "reproducers", None):
        out.append(f"--lstm-reproducers={args.reproducers}")
    if args.database is not None:
        out.append(f"--lstm-database={args.database}")
    if args.database_read_only:
        out.append("--lstm-database-read-only")
    if args.verbose:
        out += ["-v", "--lstm-all-reports"]
    return out


def _resolve(impl: str) -> Optional[Any]:
    try:
        return resolve(impl, origin="command line")
    except ResolutionError as exc:
        print(f"lstm-conformance: error: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace, doing: str) -> Optional[tuple[Any, report_collect.Collector, int, float]]:
    """Resolve the implementation and run the suite on it, ending with the summary table.

    Returns the candidate, the collected results, pytest's exit code and the run's seconds.
    """
    if args.workers and importlib.util.find_spec("xdist") is None:
        print(f"lstm-conformance: error: -n {args.workers} needs pytest-xdist, which is not installed "
              "(pip install pytest-xdist, or leave -n out)", file=sys.stderr)
        return None
    try:
        database.given(args.database, "--database", args.database_read_only, args.seed, "--seed")
    except OptionError as exc:
        print(f"lstm-conformance: error: {exc}", file=sys.stderr)
        return None
    candidate = _resolve(args.impl)
    if candidate is None:
        return None
    print(f"{doing} {candidate.name} ({candidate.path}, {candidate.kind}) against torch.nn.LSTM, "
          f"profile {args.profile}")
    collector = report_collect.Collector()
    code, elapsed = report_collect.run_suite(args.impl, _pytest_args(args), collector)
    _summary(collector.results, elapsed)
    return candidate, collector, code, elapsed


def _check(args: argparse.Namespace) -> int:
    ran = _run(args, "checking")
    return 2 if ran is None else ran[2]


def _report(args: argparse.Namespace) -> int:
    if not (args.json or args.markdown):
        print("lstm-conformance: error: report needs --json FILE and/or --markdown FILE", file=sys.stderr)
        return 2
    for option, path in (("--json", args.json), ("--markdown", args.markdown)):
        problem = check_writable(path, option)
        if problem:
            print(f"lstm-conformance: error: {problem}", file=sys.stderr)
            return 2
    ran = _run(args, "reporting on")
    if ran is None:
        return 2
    candidate, collector, code, elapsed = ran
    if not collector.results:
        print(f"lstm-conformance: error: the suite ran no test (pytest exit code {code})", file=sys.stderr)
        return code or 2
    doc = report.document(args.impl, candidate, args.profile, collector.results, seed=args.seed, duration_s=elapsed,
                          notes={kind: len(notes) for kind, notes in collector.notes.items()})
    if args.json:
        Path(args.json).write_text(report_render.to_json(doc))
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(report_render.to_markdown(doc))
        print(f"wrote {args.markdown}")
    return code


def _table(args: argparse.Namespace) -> int:
    docs = []
    for path in args.reports:
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("schema") not in report.READABLE_SCHEMAS or "features" not in doc:
                raise ValueError(f"not an lstm-conformance report (schema "
                                 f"{' or '.join(map(str, report.READABLE_SCHEMAS))})")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            print(f"lstm-conformance: error: cannot read report {path}: {reason}", file=sys.stderr)
            return 2
        docs.append(doc)
    text = report_render.port_table(docs)
    if args.markdown:
        problem = check_writable(args.markdown, "--markdown")
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
    parser.add_argument("impl", help="the implementation: a registered name (see `lstm-conformance list`) "
                                     "or an import path package.module:Class")
    parser.add_argument("--profile", choices=PROFILES, default=default_profile(),
                        help="the suite's profile: dev (few examples per test, quick), ci (more: what the main "
                             "job runs) or thorough (many, slow). Default: ci when the environment variable CI "
                             "is set, else dev, as for pytest")
    parser.add_argument("--max-examples", type=argparse_type(positive_int, "--max-examples"), default=None,
                        metavar="N", help="examples per test, 1 or more (default: the profile's number)")
    parser.add_argument("-n", dest="workers", type=argparse_type(non_negative_int, "-n"), default=0,
                        metavar="WORKERS", help="pytest-xdist worker processes running tests in parallel "
                                                "(default 0: no xdist, every test in one process)")
    parser.add_argument("--seed", type=argparse_type(non_negative_int, "--seed"), default=None, metavar="N",
                        help="hypothesis seed, 0 or more, to reproduce a run, also under CI (default: none: "
                             "hypothesis draws at random, or derandomizes when CI is set)")
    parser.add_argument("--database", metavar="URL", default=None,
                        help="a shared example database, beside the local one: a folder or redis://host:port/db "
                             "(the redis extra); failures are saved there and replayed first by every run reading "
                             f"it (default: ${database.ENV_VAR}, else none)")
    parser.add_argument("--database-read-only", action="store_true",
                        help="read the shared database and write nothing to it, as pull-request CI does "
                             "(default: a shared database is read and written)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="every failure in full and examples of each kind of note (default: the first failure "
                             "of each root cause in full, the others one line each; notes counted)")


def _parser() -> OneLineParser:
    """The whole command line: each sub-command's options, with their defaults in their help."""
    parser = OneLineParser(prog="lstm-conformance", description=__doc__,
                           error_name="lstm-conformance", error_hint=" (see lstm-conformance --help)")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the conformance suite on one implementation",
                           description="Run the conformance suite on IMPL and print one row per feature: "
                                       "its status and the examples run. Exit status 0 if IMPL conforms, "
                                       "1 if not, 2 for a usage error.")
    _suite_options(check)
    check.add_argument("--reproducers", metavar="DIR",
                       help="also save each failure's reproducer script into DIR (default: none saved; "
                            "each failure's report carries its reproducer anyway)")
    check.set_defaults(func=_check)
    rep = sub.add_parser("report", help="run the suite and write the conformance matrix (JSON and/or Markdown)",
                         description="Run the suite as check does and write the conformance matrix, with the "
                                     "run's profile, seed and duration; at least one of --json and --markdown.")
    _suite_options(rep)
    rep.add_argument("--json", metavar="FILE",
                     help="write the report as JSON to FILE (schema: conformance.report; default: not written)")
    rep.add_argument("--markdown", metavar="FILE",
                     help="write the report as Markdown to FILE (default: not written)")
    rep.set_defaults(func=_report)
    table = sub.add_parser("table", help="one Markdown table, feature x implementation, from report JSON files",
                           description="Print one Markdown table, feature x implementation, from the JSON "
                                       "files of lstm-conformance report.")
    table.add_argument("reports", nargs="+", metavar="REPORT.json", help="reports written by report --json")
    table.add_argument("--markdown", metavar="FILE",
                       help="also write the table to FILE (default: the table is only printed)")
    table.set_defaults(func=_table)
    bench.add_parser(sub)
    lister = sub.add_parser("list", help="registered implementations and their capabilities")
    lister.set_defaults(func=_list)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
