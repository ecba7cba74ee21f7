"""The rows of the conformance matrix: each row's name, the tests that feed it, and the rows' order.

One row per focus of :data:`~conformance.strategies.FOCI` (fed by ``test_matches_torch[<focus>]``),
then the rows that fold whole test functions (every parametrization of a gradient or error test is
one row).  A test in no row is a row of its own, named after its function, after the known rows.
:mod:`conformance.report` folds a run's results into these rows; the report's rows: ``docs/cli.md``,
"The report JSON".
"""

from __future__ import annotations

from dataclasses import dataclass

from .strategies import FOCI

__all__ = ["MATRIX_ROWS", "MatrixRow", "order", "row_of"]


@dataclass(frozen=True)
class MatrixRow:
    """A row of the matrix and the tests it folds: ``function`` (its every parametrization) or
    ``function[param]`` (that one test), by the test's name within its file."""

    name: str
    tests: tuple[str, ...]


#: Every known row, in the order the report shows them: the focused value tests, then the other
#: value tests, then the error tests.
MATRIX_ROWS: tuple[MatrixRow, ...] = (
    *(MatrixRow(focus, (f"test_matches_torch[{focus}]",)) for focus in FOCI),
    MatrixRow("repeated calls", ("test_second_call_gives_the_same_result",)),
    MatrixRow("stress (large weights, long sequences)", ("test_stress_matches_torch",)),
    MatrixRow("gradients", ("test_gradients_match_torch",)),
    MatrixRow("gradients accumulate in .grad", ("test_gradients_accumulate_over_calls",)),
    MatrixRow("double backward (Hessian-vector products)", ("test_double_backward_matches_torch",)),
    MatrixRow("errors: constructor arguments", ("test_constructor_errors_match_torch",)),
    MatrixRow("errors: forward call", ("test_call_errors_match_torch",)),
    MatrixRow("errors: packed call", ("test_packed_call_errors_match_torch",)),
    MatrixRow("errors: packing functions", ("test_packing_errors_match_torch",)),
)

_ROW_OF_TEST = {test: row.name for row in MATRIX_ROWS for test in row.tests}
_POSITION = {row.name: index for index, row in enumerate(MATRIX_ROWS)}


def row_of(test_id: str) -> str:
    """The row of a test, by its short id (``test_conformance.py::test_matches_torch[batch_first]``)."""
    name = test_id.partition("::")[2]
    function = name.partition("[")[0]
    return _ROW_OF_TEST.get(name) or _ROW_OF_TEST.get(function) or function


def order(row: str) -> tuple[int, int]:
    """A sort key putting the known rows in :data:`MATRIX_ROWS`' order, and the others after them."""
    return (0, _POSITION[row]) if row in _POSITION else (1, 0)
