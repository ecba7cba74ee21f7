"""The conformance matrix's rows (``conformance/matrix_rows.py``): every focus and test function has its
row, in the suite's order, and a report folds each test into it."""

from __future__ import annotations

import ast
from pathlib import Path

from conformance import report
from conformance.matrix_rows import MATRIX_ROWS, order, row_of
from conformance.strategies import FOCI

SUITE = Path(__file__).resolve().parent.parent / "conformance" / "suite"


def test_each_row_and_each_test_appear_once() -> None:
    names = [row.name for row in MATRIX_ROWS]
    tests = [test for row in MATRIX_ROWS for test in row.tests]
    assert len(names) == len(set(names)) and len(tests) == len(set(tests))


def test_every_focus_is_a_row_first_in_its_order() -> None:
    assert [row.name for row in MATRIX_ROWS[:len(FOCI)]] == list(FOCI)
    for focus in FOCI:
        assert row_of(f"test_conformance.py::test_matches_torch[{focus}]") == focus


def test_the_rows_name_test_functions_of_the_suite() -> None:
    functions = {node.name for path in SUITE.glob("test_*.py") for node in ast.parse(path.read_text()).body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    named = {test.partition("[")[0] for row in MATRIX_ROWS for test in row.tests}
    assert named <= functions, named - functions


def test_a_test_function_folds_into_one_row() -> None:
    assert row_of("test_errors.py::test_call_errors_match_torch[input_is_0D]") == "errors: forward call"
    assert row_of("test_gradients.py::test_gradients_match_torch[batch_first]") == "gradients"
    assert row_of("test_dropout.py::test_some_new_check") == "test_some_new_check"  # no row: a row of its own


def test_rows_sort_in_the_suites_order_unknown_ones_last() -> None:
    rows = ["errors: forward call", "test_some_new_check", "repeated calls", "batch_first", "any"]
    assert sorted(rows, key=order) == ["any", "batch_first", "repeated calls", "errors: forward call",
                                       "test_some_new_check"]


def test_the_matrix_folds_results_into_rows() -> None:
    results = {test: report.TestResult(test, row_of(test), status, examples) for test, status, examples in (
        ("test_errors.py::test_call_errors_match_torch[input_is_0D]", "passed", 2),
        ("test_errors.py::test_call_errors_match_torch[input_is_1D]", "failed", 3),
        ("test_conformance.py::test_matches_torch[any]", "passed", 5))}
    rows = report.matrix(results)
    assert [(row.name, row.status, row.examples) for row in rows] == [("any", "passed", 5),
                                                                      ("errors: forward call", "failed", 5)]
    assert rows[1].cell() == "passed 1, failed 1"
