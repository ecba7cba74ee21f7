"""A port that crashes, hangs or returns the wrong structure fails that case; the run goes on."""

from __future__ import annotations

import re
import sys
import time

import pytest

from conformance.arrays import LSTMConfig
from conformance.case import Call, Case
from conformance.isolation import RETRY_FACTOR, Worker
from conformance.process_messages import Answered, Crashed, Ping, TimedOut
from conformance.service import SERVICE, CheckForward, Passed, RecordInvalidCall, ask
from conformance.registry import resolve

MISBEHAVING = "tests.ports.misbehaving"


def _summary(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_crashing_port_fails_its_cases_and_the_run_goes_on(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={MISBEHAVING}:SegfaultsOnBatches", "--hypothesis-profile=dev",
                          "-k", "test_matches_torch and (packed or large_batch or unbatched)")
    assert result.returncode == 1
    assert "the candidate was killed by signal 11 (SIGSEGV) on this case" in result.stdout
    summary = _summary(result.stdout)
    assert re.search(r"\d+ failed", summary) and re.search(r"\d+ passed", summary), summary  # packed, unbatched pass


TIMED_OUT = ("the candidate did not finish within 1 s, nor within 2 s on a retry in a fresh worker: a hang, "
             "or a port slower than the limit; raise the limit with --lstm-timeout SECONDS")


@pytest.mark.slow
def test_a_hanging_port_fails_at_the_time_limit(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={MISBEHAVING}:HangsOnInputSizeSeven", "--lstm-timeout=1", "-x",
                          "--hypothesis-profile=dev", "-k", "test_matches_torch and any",
                          "--hypothesis-seed=1")
    assert result.returncode == 1, result.stdout[-2000:]
    assert TIMED_OUT in result.stdout, result.stdout[-3000:]
    assert "Flaky" not in result.stdout and "unreliable" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("port", ["SlowFirstCallInEachProcess", "SlowFirstCallOfTheRun"])
def test_a_port_slow_only_on_its_first_call_passes_on_the_retry(suite_runner, tmp_path, port: str) -> None:
    """Past the limit once, then fast: the retry in a fresh worker passes it, never a flaky failure."""
    from tests.ports.misbehaving import FIRST_CALL_SECONDS

    limit = 3
    assert limit < FIRST_CALL_SECONDS < limit * RETRY_FACTOR
    result = suite_runner(f"--lstm-impl={MISBEHAVING}:{port}", f"--lstm-timeout={limit}", "--hypothesis-profile=dev",
                          "-k", "test_matches_torch and any", env={"SLOW_FIRST_CALL_MARKER": str(tmp_path / "called")})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Flaky" not in output and "unreliable" not in output


@pytest.mark.slow
def test_a_hang_is_a_timeout_within_a_bounded_time_and_its_replay_answers_at_once() -> None:
    from conformance.runner import Runner
    from conformance.verdict import ConformanceFailure

    runner = Runner(resolve(f"{MISBEHAVING}:AlwaysHangs"), timeout=1)
    case = Case(LSTMConfig(3, 4), Call(2, 2))
    assert ask(Ping(), timeout=120) == Answered("pong")  # started (torch imported) before the 1 s limit
    started = time.monotonic()
    with pytest.raises(ConformanceFailure) as first:
        runner.forward(case, diagnose=False)
    took = time.monotonic() - started
    assert [(p.kind, p.message) for p in first.value.problems] == [("timeout", TIMED_OUT)]
    assert 1 + RETRY_FACTOR <= took < 1 + RETRY_FACTOR + 5  # the limit, then the retry's, and little more
    started = time.monotonic()
    with pytest.raises(ConformanceFailure) as replay:  # hypothesis' final run of the example it reports
        runner.forward(case, diagnose=True)
    assert time.monotonic() - started < 0.5 and replay.value.problems == first.value.problems


@pytest.mark.slow
def test_an_invalid_call_that_hangs_fails_as_a_crash_named_as_a_timeout() -> None:
    from hypothesis import HealthCheck, find, settings

    from conformance.bad_calls import bad_call_cases
    from conformance.runner import Runner
    from conformance.verdict import ConformanceFailure

    case = find(bad_call_cases("c0 has one feature too many"), lambda case: True,
                settings=settings(database=None, suppress_health_check=list(HealthCheck)))
    assert ask(Ping(), timeout=120) == Answered("pong")
    with pytest.raises(ConformanceFailure) as caught:
        Runner(resolve(f"{MISBEHAVING}:AlwaysHangs"), timeout=1).error(case)
    (problem,) = caught.value.problems
    assert problem.kind == "crashed", problem
    assert problem.message.startswith(f"{TIMED_OUT}; torch "), problem


@pytest.mark.slow
@pytest.mark.parametrize("port, message", [
    ("ReturnsList", "returned a list of length 2; expected a tuple (output, (h_n, c_n))"),
    ("ReturnsNumpy", "returned h_n as numpy.ndarray; expected a torch.Tensor"),
    ("MissingCellState", "returned (output, torch.Tensor); expected the states as a tuple (h_n, c_n)"),
    ("FlatResult", "returned a tuple of length 3; expected a tuple (output, (h_n, c_n))"),
])
def test_a_wrong_structure_is_named(suite_runner, port: str, message: str) -> None:
    result = suite_runner(f"--lstm-impl={MISBEHAVING}:{port}", "--hypothesis-profile=dev", "-x",
                          "-k", "test_matches_torch and any")
    assert result.returncode == 1
    assert message in result.stdout, result.stdout[-3000:]
    assert "The case as code" in result.stdout


@pytest.mark.slow
def test_the_worker_survives_a_crash_and_reports_it() -> None:
    worker = Worker(SERVICE)
    try:
        assert worker.call(Ping()) == Answered("pong")
        case = Case(LSTMConfig(3, 4), Call(2, 2))
        assert worker.call(CheckForward(f"{MISBEHAVING}:SegfaultsOnBatches", case)) == \
            Crashed("was killed by signal 11 (SIGSEGV)")
        assert worker.call(CheckForward("torch", case)) == Answered(Passed())
    finally:
        worker.stop()


def test_a_ports_own_assert_is_reported_as_the_port_raising() -> None:
    import torch

    from conformance.arrays import LSTMConfig
    from conformance.candidates import make_candidate
    from conformance.case import Call, Case
    from conformance.checks import check_forward
    from conformance.verdict import ConformanceFailure

    class AssertsOnHx(torch.nn.LSTM):
        def forward(self, input, hx=None):
            assert hx is not None, "this port insists on an initial state"
            return super().forward(input, hx)

    candidate = make_candidate(AssertsOnHx, name="asserts-on-hx")
    try:
        check_forward(candidate, Case(LSTMConfig(2, 3), Call(2, 1)))
    except ConformanceFailure as failure:
        assert failure.problems[0].kind == "raised"
        assert "AssertionError: this port insists on an initial state" in failure.problems[0].message
    else:
        raise AssertionError("a port raising AssertionError on a valid call was not flagged")


def test_a_forked_call_that_fails_outside_the_call_is_a_crash_of_that_call() -> None:
    """After torch corrupts its heap, the child may fail anywhere: never an error of the suite itself."""
    from conformance.service import forked_record

    class Unpicklable:  # a local class cannot be pickled: the child fails while sending its result
        pass

    record = forked_record(Unpicklable, timeout=30)
    assert record.crashed and record.crashed.startswith("failed in its isolated process")


def test_the_worker_follows_the_import_path(tmp_path, monkeypatch) -> None:
    """A folder pytest adds after the worker started (collecting tests) still reaches it."""
    worker = Worker(SERVICE)
    try:
        worker.prestart()
        (tmp_path / "late_port.py").write_text("from torch import nn\n\nclass LatePort(nn.LSTM):\n    pass\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        assert worker.call(CheckForward("late_port:LatePort", Case(LSTMConfig(3, 4), Call(2, 2)))) == Answered(Passed())
    finally:
        worker.stop()


HANGS_IN_ITS_CHILD = """
import os, time
from torch import nn

class WritesItsPidThenHangs(nn.LSTM):
    def forward(self, input, hx=None):
        with open(os.environ["HUNG_PID_FILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(3600)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_hung_forked_call_does_not_outlive_its_worker(tmp_path, monkeypatch) -> None:
    """At the time limit the worker is killed; its forked child, hung in the call, must go with it
    (an orphan would eat a core for the rest of the run), on the first try and on the retry."""
    from hypothesis import HealthCheck, find, settings

    from conformance.bad_calls import bad_call_cases

    (tmp_path / "hangs_in_child.py").write_text(HANGS_IN_ITS_CHILD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HUNG_PID_FILE", str(tmp_path / "pid"))
    case = find(bad_call_cases("h0 has one layer too many", packed=True), lambda case: True,
                settings=settings(database=None, suppress_health_check=list(HealthCheck)))
    worker = Worker(SERVICE)
    try:
        assert worker.call(Ping(), timeout=120) == Answered("pong")  # started (torch imported) before the 1.5 s limit
        # both limits below the forked call's own (the request's 30 s): the worker is killed each time
        request = RecordInvalidCall("hangs_in_child:WritesItsPidThenHangs", case, time_limit=30)
        assert worker.call(request, timeout=1.5) == \
            TimedOut("did not finish within 1.5 s, nor within 3 s on a retry in a fresh worker")
        hung = [int(pid) for pid in (tmp_path / "pid").read_text().split()]
        assert hung
        for _ in range(100):
            if not any(_running(pid) for pid in hung):
                break
            time.sleep(0.1)
        assert not any(_running(pid) for pid in hung), f"a forked child of {hung} outlived its worker"
    finally:
        worker.stop()


def test_packed_batch_sizes_that_differ_are_named_as_plain_numbers() -> None:
    from conformance.arrays import PackedArrays
    from conformance.candidates import make_candidate
    from conformance.checks import check_forward
    from conformance.verdict import ConformanceFailure
    from implementations.numpy_lstm import NumpyLSTM

    class DropsTheLastStep(NumpyLSTM):
        def forward(self, input, hx, *, training):
            output, states = super().forward(input, hx, training=training)
            last = int(output.batch_sizes[-1])
            return PackedArrays(output.data[:-last], output.batch_sizes[:-1], output.sorted_indices,
                                output.unsorted_indices), states

    case = Case(LSTMConfig(3, 4), Call(3, 2, packing="pack_padded_sequence", lengths=(3, 2)))
    with pytest.raises(ConformanceFailure) as info:
        check_forward(make_candidate(DropsTheLastStep), case)
    assert "packed output batch_sizes [2, 2] != torch's [2, 2, 1]" in str(info.value), str(info.value)
