"""Process ports: the wire format, the process machinery, the protocol's checks, naming a port, the
JavaScript helper, and nothing left running.

The protocol's failure cases run against small Python programs (tests/ports/python_port.py and
one-liners here), so they need neither node nor npm packages; the JavaScript tests skip with the
reason where ``node`` is missing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import process_ports, schema, wire
from conformance.arrays import LSTMConfig
from conformance.case import Call, Case
from conformance.checks import check_forward
from conformance.checks import check_gradients
from conformance.processes import (ChildProcess, FrameError, ProcessCrashed, ProcessFailure, ProcessTimedOut,
                                   ProtocolError, running_children)
from conformance.registry import ResolutionError, resolve
from conformance.verdict import ConformanceFailure
from implementations.real_ports import REAL_PORTS
from tests.conftest import REPO, run_pytest

PYTHON_PORT = REPO / "tests" / "ports" / "python_port.py"
JS_PORTS = REPO / "tests" / "ports" / "js"
needs_node = pytest.mark.skipif(not __import__("shutil").which("node"), reason="node is not installed")


def python_port(behaviour: str = "correct") -> str:
    return f"exec:{shlex.quote(sys.executable)} {shlex.quote(str(PYTHON_PORT))} {behaviour}"


def js_port(name: str) -> str:
    return f"exec:node {shlex.quote(str(JS_PORTS / name))}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


DENSE = Case(LSTMConfig(input_size=3, hidden_size=5, num_layers=2, batch_first=True),
             Call(seq_len=6, batch=3, with_hx=True, seed=1), weight_seed=7)
PACKED = Case(LSTMConfig(input_size=2, hidden_size=4, bidirectional=True),
              Call(seq_len=5, batch=3, packing="pack_padded_sequence", lengths=(3, 5, 2), enforce_sorted=False,
                   with_hx=True, seed=2), weight_seed=3)


# ----------------------------------------------------------------------------- the wire format
def test_arrays_travel_exactly_whatever_their_dtype_and_layout() -> None:
    base = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-310, 3.0], dtype=np.float64)
    message = {
        "transposed": base.transpose(2, 0, 1).astype(np.float32),
        "strided": base[:, ::2, 1:],
        "expanded": np.broadcast_to(np.float32(7.5), (3, 4)),
        "special": special,
        "half": special.astype(np.float16),
        "indices": [np.array([2, 0, 1], np.int64), None, np.array([5], np.int32)],
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, np.float32),
    }
    got = wire.decode(wire.encode(message))
    for key in ("transposed", "strided", "expanded", "special", "half", "empty", "scalar"):
        assert got[key].dtype == message[key].dtype and got[key].shape == message[key].shape, key
        assert got[key].tobytes() == np.ascontiguousarray(message[key]).tobytes(), key  # bit for bit: NaN, -0.0
    assert got["indices"][1] is None and got["indices"][0].tolist() == [2, 0, 1]
    assert got["indices"][2].dtype == np.int32


def test_bfloat16_travels_as_its_bit_patterns() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.0, -0.0, np.nan, 3.140625, -1e30, 1e-40], dtype=ml_dtypes.bfloat16)[::-1]  # a view
    body = wire.encode({"x": values})
    descriptor = wire.document(body)["x"]
    assert descriptor["$array"] == "bfloat16" and descriptor["nbytes"] == 2 * values.size
    got = wire.decode(body)["x"]
    assert got.dtype == values.dtype and got.view(np.uint16).tolist() == np.ascontiguousarray(values).view(np.uint16).tolist()


def _body(document: dict, binary: bytes = b"") -> bytes:
    text = json.dumps(document).encode()
    return len(text).to_bytes(4, "little") + text + binary


ARRAY = {"$array": "float32", "shape": [2], "offset": 0, "nbytes": 8}


@pytest.mark.parametrize("body, message", [
    (b"\x01\x00", "too short"),
    ((100).to_bytes(4, "little") + b"{}", "the JSON text's length says 100 bytes"),
    ((3).to_bytes(4, "little") + b"{a:", "does not parse"),
    (_body({"x": dict(ARRAY, nbytes=12)}, bytes(12)), "states dtype float32 and shape [2] (8 bytes), but nbytes 12"),
    (_body({"x": ARRAY}, bytes(4)), "extends past the binary section"),
    (_body({"x": ARRAY}, bytes(12)), "bytes 8..12 of the binary section belong to no array"),
    (_body({"x": ARRAY, "y": dict(ARRAY, offset=4)}, bytes(12)), "overlap"),
    (_body({"x": dict(ARRAY, **{"$array": "complex64"})}, bytes(8)), "states dtype 'complex64'"),
    (_body({"x": dict(ARRAY, strides=[4])}, bytes(8)), "unknown field(s) ['strides']"),
    (_body({"x": dict(ARRAY, shape=[-2])}, bytes(8)), "a shape is a list of whole numbers"),
])
def test_a_malformed_body_is_a_clear_error(body: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as error:
        wire.decode(body)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_array_of_a_dtype_the_wire_lacks_cannot_be_sent() -> None:
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.encode({"x": np.zeros(2, np.complex64)})


# ----------------------------------------------------------------------------- the schema
def test_the_schema_uses_only_what_the_validator_implements_and_covers_every_message() -> None:
    root = json.loads(process_ports.SCHEMA_PATH.read_text())
    assert schema.unknown_keywords(root) == []
    kinds = {"request": {"start", "construct", "forward", "backward", "stop"},
             "reply": {"started", "constructed", "result", "gradients", "error", "unsupported"}}
    for group, names in kinds.items():
        assert {schema._kind(branch, root) for branch in root["$defs"][group]["oneOf"]} == names


def test_the_validator_names_what_is_wrong() -> None:
    root = json.loads(process_ports.SCHEMA_PATH.read_text())
    reply = root["$defs"]["reply"]
    good = {"type": "error", "id": 3, "error": {"type": "ValueError", "message": "bad"}}
    schema.validate(good, reply, root)
    for bad, message in [
        ({**good, "id": -1}, "message.id: -1 is less than the minimum 0"),
        ({**good, "extra": 1}, "unknown field 'extra'"),
        ({"type": "error", "id": 3}, "missing required field(s) 'error'"),
        ({**good, "type": "results"}, "type 'results' is not one of"),
        ({**good, "error": {"type": "", "message": "m"}}, "message.error.type: '' is shorter than 1"),
        ({"type": "result", "id": 1, "output": ARRAY, "h_n": ARRAY, "c_n": dict(ARRAY, **{"$array": "f32"})},
         "message.c_n.$array: 'f32' is not one of"),
    ]:
        with pytest.raises(schema.SchemaViolation) as error:
            schema.validate(bad, reply, root)
        assert message in str(error.value), str(error.value)


# ----------------------------------------------------------------------------- the process machinery
def _child(code: str) -> ChildProcess:
    child = ChildProcess([sys.executable, "-c", textwrap.dedent(code)], name="test program")
    child.start()
    return child


ECHO = """
    import sys
    while True:
        header = sys.stdin.buffer.read(4)
        if len(header) < 4:
            break
        body = sys.stdin.buffer.read(int.from_bytes(header, "little"))
        sys.stdout.buffer.write(header + body[::-1]); sys.stdout.buffer.flush()
"""


@pytest.mark.slow
def test_frames_go_both_ways_and_stop_ends_the_process() -> None:
    child = _child(ECHO)
    assert child.exchange(b"hello", timeout=10) == b"olleh"
    assert child.exchange(b"", timeout=10) == b""
    pid = child.pid
    child.stop()
    assert not child.running and not _alive(pid) and child not in running_children()


@pytest.mark.slow
@pytest.mark.parametrize("code, kind, fragments", [
    ("import sys; sys.stdin.buffer.read(9); print('hello world')", FrameError,
     ["more than the limit", "something other than a frame", "b'hello world"]),
    ("import sys; sys.stdin.buffer.read(9); sys.stderr.write('boom\\n'); sys.exit(3)", ProcessCrashed,
     ["exited with status 3 instead of replying", "boom"]),
    ("import os, signal, sys; sys.stdin.buffer.read(9); os.kill(os.getpid(), signal.SIGSEGV)", ProcessCrashed,
     ["was killed by signal 11 (SIGSEGV)", "wrote nothing to stderr"]),
    ("import sys, time; sys.stdin.buffer.read(9); time.sleep(60)", ProcessTimedOut, ["did not send a reply within 1 s"]),
    ("import sys, time; sys.stdin.buffer.read(9); sys.stdout.buffer.write(b'\\x10\\x00\\x00\\x00ab');"
     "sys.stdout.flush(); time.sleep(60)", FrameError, ["the 16 bytes its frame header announced", "sent 2 of them"]),
    ("import sys; sys.stdin.buffer.read(9); sys.stdout.buffer.write(b'\\x10\\x00\\x00\\x00ab'); sys.exit(0)",
     ProcessCrashed, ["in the middle of a frame, after 6 of its 20 bytes"]),
])
def test_a_misbehaving_process_fails_with_what_it_did(code: str, kind: type, fragments: list) -> None:
    child = _child(code)
    pid = child.pid
    started = time.monotonic()
    with pytest.raises(kind) as failure:
        child.exchange(b"12345", timeout=1)
    assert time.monotonic() - started < 8
    for fragment in fragments:
        assert fragment in str(failure.value), str(failure.value)
    assert str(failure.value).startswith("test program ")
    assert not child.running and not _alive(pid)  # killed and reaped: the next use starts a fresh one


def test_a_program_that_cannot_start_says_so() -> None:
    child = ChildProcess(["/nonexistent/port-program"], name="test program")
    with pytest.raises(ProcessCrashed, match="could not be started .*No such file"):
        child.start()


@pytest.mark.slow
def test_a_process_group_is_killed_whole() -> None:
    """A wrapper's children go with it: the program runs in a session (process group) of its own."""
    child = _child("""
        import subprocess, sys
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print(grandchild.pid, file=sys.stderr, flush=True)
        sys.stdin.buffer.read()
    """)
    deadline = time.monotonic() + 10
    while not child.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(child.stderr_tail()[-1])
    assert _alive(grandchild)
    child.stop(grace=0)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_program_dies_with_the_process_that_started_it() -> None:
    """Killed (SIGKILL: no atexit, no clean-up), the owner takes its program with it."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from conformance.processes import ChildProcess
        child = ChildProcess([sys.executable, "-c", "import time; time.sleep(3600)"])
        child.start()
        print(child.pid, flush=True)
        time.sleep(3600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(owner.stdout.readline())
    assert _alive(pid)
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


# ----------------------------------------------------------------------------- the protocol, with Python ports
@pytest.mark.slow
def test_a_python_port_conforms_forward_and_backward_over_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(process_ports.VALIDATE_ENV, "1")  # every message both ways against the schema
    candidate = resolve(python_port())
    assert candidate.kind == "adapter" and candidate.capabilities.gradients and not candidate.double_backward
    for case in (DENSE, PACKED):
        check_forward(candidate, case)
        check_gradients(candidate, case.replace(requires_grad=True, hx_requires_grad=True))


@pytest.mark.slow
@pytest.mark.parametrize("behaviour, message", [
    ("version-2", "speaks protocol version 2; this suite speaks 1"),
    ("unknown-feature", "unknown features ['packed_sorted']"),
    ("sleep-on-start", "did not send a reply within 1 s"),
])
def test_a_bad_handshake_is_a_one_line_resolution_error(behaviour: str, message: str) -> None:
    port = process_ports.parse_spec(python_port(behaviour))
    port = process_ports.PortSpec(**{**port.__dict__, "startup_timeout": 1.0})
    with pytest.raises(process_ports.SpecError) as error:
        process_ports.adapter_class(port)
    assert message in str(error.value) and "failed its handshake" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("behaviour, kind, message", [
    ("wrong-id", ProtocolError, "a reply to a request that was not made"),
    ("text-on-stdout", FrameError, "b'computing the forward pass"),
    ("exit-on-forward", ProcessCrashed, "exited with status 3 instead of replying; its last stderr line: "
                                        "'fatal: out of cheese'"),
    ("no-c_n", ProtocolError, "sent a result without c_n"),
])
def test_a_port_that_breaks_the_protocol_fails_the_case_and_is_restarted(behaviour: str, kind: type,
                                                                         message: str) -> None:
    candidate = resolve(python_port(behaviour))
    adapter = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())
    session = adapter._session
    pid = session.child.pid
    with pytest.raises(kind) as failure:
        adapter.forward(np.zeros((3, 6, 3), np.float32), None, training=False)
    assert message in str(failure.value), str(failure.value)
    assert not _alive(pid) and not session.child.running
    again = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())  # a fresh program answers
    assert session.child.running and session.child.pid != pid
    del again
    process_ports.stop_sessions()


@pytest.mark.slow
@pytest.mark.parametrize("isolate", [True, False], ids=["worker", "inline"])
def test_a_crash_fails_the_case_with_what_the_process_did(isolate: bool) -> None:
    """In a worker process as a run does (the worker lives on), and inline: the case fails as a crash."""
    from conformance.runner import Runner

    runner = Runner(resolve(python_port("exit-on-forward")), isolate=isolate)
    with pytest.raises(ConformanceFailure) as failure:
        runner.forward(DENSE, diagnose=False)
    problem = failure.value.problems[0]
    assert problem.kind == "crashed" and "exited with status 3" in problem.message
    assert "fatal: out of cheese" in problem.message
    process_ports.stop_sessions()


@pytest.mark.slow
def test_a_crash_reproduces_as_a_difference() -> None:
    result = subprocess.run([sys.executable, "-m", "conformance.reproduce", python_port("exit-on-forward"), repr(DENSE)],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "exited with status 3" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("behaviour, error, message", [
    ("raise-valueerror", ValueError, "no, thank you"),
    ("raise-custom", process_ports.PortError, "no, thank you"),
    ("unsupported", process_ports.PortUnsupported, "does not support this forward request: this port has no forward"),
])
def test_an_error_reply_raises_the_exception_the_port_named(behaviour: str, error: type, message: str) -> None:
    candidate = resolve(python_port(behaviour))
    adapter = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())
    with pytest.raises(error, match=message) as raised:
        adapter.forward(np.zeros((3, 6, 3), np.float32), None, training=False)
    if behaviour == "raise-custom":
        assert type(raised.value).__name__ == "RangeError"
    assert adapter._session.child.running  # an answer, not a failure of the process
    process_ports.stop_sessions()


@pytest.mark.slow
def test_the_validating_mode_rejects_what_the_plain_mode_tolerates(monkeypatch: pytest.MonkeyPatch) -> None:
    check_forward(resolve(python_port("extra-field")), DENSE)
    process_ports.stop_sessions()
    monkeypatch.setenv(process_ports.VALIDATE_ENV, "1")
    candidate = resolve(python_port("extra-field"))
    adapter = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())
    with pytest.raises(ProtocolError, match="the protocol's schema rejects: message: unknown field 'note'"):
        adapter.forward(np.zeros((3, 6, 3), np.float32), None, training=False)
    process_ports.stop_sessions()


@pytest.mark.slow
def test_a_spawned_grandchild_does_not_outlive_the_session() -> None:
    candidate = resolve(python_port("spawn-child"))
    adapter = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())
    group = adapter._session.child.pid
    process_ports.stop_sessions()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_members(group):
        time.sleep(0.05)
    assert _group_members(group) == []


def _group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members


# ----------------------------------------------------------------------------- naming a port
@pytest.mark.slow
def test_a_manifest_names_command_folder_and_environment(tmp_path: Path) -> None:
    manifest = tmp_path / "port.json"
    manifest.write_text(json.dumps({"name": "py", "command": [sys.executable, str(PYTHON_PORT)],
                                    "environment": {"LSTM_TEST_MARK": "1"}, "expected_failures": "known.txt"}))
    port = process_ports.parse_spec(str(manifest))
    assert port.folder == str(tmp_path) and dict(port.environment) == {"LSTM_TEST_MARK": "1"}
    assert port.expected_failures == str(tmp_path / "known.txt")
    candidate = resolve(str(manifest))
    assert candidate.name == "py" and candidate.path == str(manifest)
    assert "manifest" in candidate.origin and "python-correct 1.0" in candidate.origin


@pytest.mark.parametrize("content, message", [
    ("[1]", "must be a JSON object"),
    ('{"command": ["x"], "comand": 1}', "unknown key(s) ['comand']"),
    ('{"command": "node port.js"}', "'command' must be a non-empty list of strings"),
    ('{"command": ["x"], "startup_timeout": 0}', "'startup_timeout' must be a number of seconds above 0"),
    ("{", "is not valid JSON"),
])
def test_a_bad_manifest_is_a_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "port.json"
    manifest.write_text(content)
    with pytest.raises(ResolutionError) as error:
        resolve(str(manifest))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_program_or_package_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "port.json"
    manifest.write_text(json.dumps({"command": ["node", "port.js"], "requires": [
        {"path": "node_modules/@tensorflow/tfjs/package.json", "install": "bash scripts/setup.sh tfjs"}]}))
    if __import__("shutil").which("node"):
        with pytest.raises(ResolutionError, match=r"needs node_modules/@tensorflow/tfjs/package.json in .*: "
                                                  r"run bash scripts/setup.sh tfjs$"):
            resolve(str(manifest))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ResolutionError, match=r"runs `node`, which is not on PATH \(Node.js 20"):
        resolve(str(manifest))
    with pytest.raises(ResolutionError, match="names no command"):
        resolve("exec:")


def test_the_registered_js_ports_are_listed() -> None:
    from conformance.registry import available

    names = available()
    for name in ("tfjs", "onnxruntime-node"):
        assert names[name] == str(process_ports.REGISTERED[name]) and process_ports.REGISTERED[name].is_file()


@pytest.mark.slow
@needs_node
def test_the_header_says_what_was_resolved(tmp_path: Path) -> None:
    result = run_pytest(["--pyargs", "conformance.suite", f"--lstm-impl={js_port('scratch_lstm.js')}", "--co"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("lstm-conformance: checking"))
    assert f"from --lstm-impl, command line: node {JS_PORTS / 'scratch_lstm.js'} in {tmp_path}" in header, header
    assert "scratch-lstm-js 1.0.0 (javascript, node v" in header and "protocol 1" in header


# ----------------------------------------------------------------------------- the JavaScript side
@pytest.mark.slow
@needs_node
def test_the_js_helper_rounds_half_precision_as_numpy_does() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000),
                             [0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.0, 65520.0, 2.0 ** -25, 3 * 2.0 ** -26,
                              6.1e-5, 1e-8, 2.0 ** -24, 1.0009765625, 1.00048828125, 1.00146484375]])
    values = values.astype(np.float32).astype(np.float64)  # bfloat16 rounds a float32
    script = f"""
        const h = require({str(REPO / 'implementations' / 'js' / 'lstm-port.js')!r});
        const {{ values }} = h.decodeMessage(require('fs').readFileSync(0));
        const numbers = h.toNumbers(values);
        const f16 = h.fromNumbers(numbers, 'float16', values.shape);
        const bf16 = h.fromNumbers(numbers, 'bfloat16', values.shape);
        const back = (a) => h.makeArray('float64', a.shape, h.toNumbers(a));
        process.stdout.write(h.encodeMessage({{ f16, bf16, back16: back(f16), backbf: back(bf16) }}));
    """
    out = subprocess.run(["node", "-e", script], input=wire.encode({"values": values}), capture_output=True,
                         check=True, timeout=60).stdout
    got = wire.decode(out[4:])  # after the frame's length
    with np.errstate(over="ignore"):  # 65520 and beyond round to inf in float16: that is the point
        half = values.astype(np.float16)
    assert got["f16"].dtype == np.float16 and got["bf16"].dtype == ml_dtypes.bfloat16
    assert got["f16"].view(np.uint16).tolist() == half.view(np.uint16).tolist()
    assert got["bf16"].view(np.uint16).tolist() == values.astype(ml_dtypes.bfloat16).view(np.uint16).tolist()
    np.testing.assert_array_equal(got["back16"], half.astype(np.float64))
    np.testing.assert_array_equal(got["backbf"], values.astype(ml_dtypes.bfloat16).astype(np.float64))


@needs_node
def test_the_plain_js_port_conforms_and_its_messages_satisfy_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(process_ports.VALIDATE_ENV, "1")
    candidate = resolve(js_port("scratch_lstm.js"))
    for case in (DENSE, PACKED, DENSE.replace(dtype="float64", proj_size=2, batch=None)):
        check_forward(candidate, case)
    process_ports.stop_sessions()


@pytest.mark.slow
@needs_node
def test_nothing_is_left_running_after_a_run(tmp_path: Path) -> None:
    """A run on a port that hangs, and on one that passes: no process of either outlives pytest."""
    for port, extra in (("hang.js", ["--lstm-timeout=1", "-x"]),
                        ("scratch_lstm.js", ["--lstm-max-examples=2", "--lstm-validate-protocol"])):
        result = run_pytest(["--pyargs", "conformance.suite", f"--lstm-impl={js_port(port)}", "-q",
                             "-k", "test_matches_torch and (any or packed)", *extra], cwd=tmp_path)
        assert result.returncode == (1 if port == "hang.js" else 0), result.stdout[-3000:]
        deadline = time.monotonic() + 5
        while _processes_running(JS_PORTS / port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_running(JS_PORTS / port) == [], f"{port} left processes running"


def _processes_running(script: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(script).encode() in argv and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_no_process_of_a_stopped_session_remains() -> None:
    candidate = resolve(python_port())
    adapter = candidate.construct(DENSE.config, DENSE.build()[0].state_dict())
    pid = adapter._session.child.pid
    process_ports.stop_sessions()
    assert not _alive(pid) and running_children() == []


def test_a_process_failure_is_not_an_exception_a_check_would_record_as_raised() -> None:
    """A port's crash must never pass an error test as "raised where torch raises"."""
    assert not issubclass(ProcessFailure, Exception) and issubclass(ProcessFailure, BaseException)


# ----------------------------------------------------------------------------- the real JavaScript ports
#: registry name -> the dtypes it declares, the features it declares absent (as its port.js says) and its
#: npm package, from the real ports' table (implementations/real_ports.py).
JS_REAL = {port.name: dict(dtypes=set(port.dtypes), lacks=set(port.lacks), package=next(iter(port.npm_versions)))
           for port in REAL_PORTS if port.is_process}


def _real_port(name: str):
    """The resolved adapter class of a registered JavaScript port, or a skip naming what to install."""
    if __import__("shutil").which("node") is None:
        pytest.skip("node is not installed")
    folder = process_ports.REGISTERED[name].parent
    if not (folder / "node_modules" / JS_REAL[name]["package"]).is_dir():
        pytest.skip(f"{name}'s npm packages are not installed: bash scripts/setup.sh {name}")
    return resolve(name).target


@pytest.mark.parametrize("name", list(JS_REAL))
def test_a_real_js_port_declares_what_its_source_says(name: str) -> None:
    from conformance.adapters import FEATURES

    cls = _real_port(name)
    caps = cls.lstm_conformance_capabilities
    assert set(caps.dtypes) == JS_REAL[name]["dtypes"] and set(FEATURES) - caps.features == JS_REAL[name]["lacks"]
    assert caps.errors == "raises" and caps.gradients is False
    source = (process_ports.REGISTERED[name].parent / "port.js").read_text()
    for word in ("float64", *JS_REAL[name]["lacks"]):
        assert word in source.split("What it lacks:")[1], f"{name}'s port.js does not say why it lacks {word}"


@pytest.mark.parametrize("name", list(JS_REAL))
def test_a_real_js_port_conforms_and_a_wrong_weight_mapping_is_flagged(name: str) -> None:
    from tests.test_real_ports import _gates_swapped

    cls = _real_port(name)
    for case in (DENSE, PACKED):
        check_forward(resolve(name), case)

    def wrong_init(self, config: LSTMConfig, weights: dict) -> None:
        cls.__init__(self, config, _gates_swapped(weights))

    wrong = type(f"GatesSwapped{cls.__name__}", (cls,), {"__init__": wrong_init})
    from conformance.candidates import make_candidate

    with pytest.raises(ConformanceFailure) as failure:
        check_forward(make_candidate(wrong, name=f"{name} with i and f swapped"), DENSE)
    assert any(p.kind == "values" for p in failure.value.problems), failure.value
    process_ports.stop_sessions()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JS_REAL))
def test_a_real_js_port_expected_failures_parse_and_name_tests_it_runs(name: str, suite_ids: list[str]) -> None:
    from conformance import expected
    from tests.test_real_ports import check_expected_entries

    manifest = json.loads(process_ports.REGISTERED[name].read_text())
    path = (process_ports.REGISTERED[name].parent / manifest["expected_failures"]).resolve()
    assert path == REPO / "implementations" / "expected" / f"{name}.txt"
    check_expected_entries(expected.load(path), JS_REAL[name], suite_ids)


@pytest.fixture(scope="module")
def suite_ids() -> list[str]:
    from conformance import expected

    result = run_pytest(["--collect-only", "-q", "--lstm-impl=numpy", "conformance/suite"], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return [expected.short_id(line.strip()) for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_the_onnx_graphs_written_in_javascript_are_the_python_ports() -> None:
    """onnxruntime-node runs the very graphs the Python onnxruntime port runs: the same ModelProto."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import base64

    import onnx

    from implementations.onnxruntime_lstm import OnnxRuntimeLSTM

    if __import__("shutil").which("node") is None:
        pytest.skip("node is not installed")
    script = textwrap.dedent(f"""
        const {{ lstmModel }} = require({str(REPO / 'implementations/js/onnxruntime-node/onnx-graph.js')!r});
        const {{ decodeMessage }} = require({str(REPO / 'implementations/js/lstm-port.js')!r});
        const message = decodeMessage(require('fs').readFileSync(0));
        process.stdout.write(Buffer.from(lstmModel(message.config, message.weights, message.hx, message.lens))
                                   .toString('base64'));
    """)
    for config in (LSTMConfig(3, 4, num_layers=2, bidirectional=True), LSTMConfig(2, 3, bias=False)):
        weights = {k: v.detach().numpy() for k, v in Case(config, Call(seq_len=1)).build()[0].state_dict().items()}
        for hx in (False, True):
            for lens in (False, True):
                body = wire.encode({"config": config.__dict__, "weights": weights, "hx": hx, "lens": lens})
                out = subprocess.run(["node", "-e", script], input=body, capture_output=True, check=True, timeout=60)
                written = onnx.ModelProto.FromString(base64.b64decode(out.stdout))
                assert written == OnnxRuntimeLSTM(config, weights)._model(hx, lens), (config, hx, lens)
