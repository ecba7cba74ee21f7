"""A process port written in Python: the bundled NumPy port (forward and backward) behind the process
protocol, and variants that break the protocol in one way each, for the suite's own tests.

    python tests/ports/python_port.py [BEHAVIOUR]

BEHAVIOUR is ``correct`` (the default) or one of :data:`BEHAVIOURS`.  It is also a worked example of
the port side in a language other than JavaScript: read a frame (4-byte little-endian length, then
the body), answer it, repeat until end of input.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance import wire
from conformance.adapters import FEATURES
from conformance.arrays import LSTMConfig, PackedArrays
from implementations.numpy_lstm import NumpyLSTM

HEADER = struct.Struct("<I")

#: Each way of breaking the protocol, by name, and what it does.
BEHAVIOURS = {
    "correct": "answers every request as the protocol says",
    "version-2": "states protocol version 2 in its handshake",
    "unknown-feature": "declares a feature the suite does not know ('packed_sorted')",
    "wrong-id": "answers forward with the id of an earlier request",
    "extra-field": "adds an unknown field to its results (only the validating mode rejects it)",
    "text-on-stdout": "prints a line of text to stdout before answering forward",
    "exit-on-forward": "writes to stderr and exits with status 3 on forward",
    "sleep-on-start": "takes an hour to answer the handshake",
    "raise-valueerror": "answers forward with the error ValueError",
    "raise-custom": "answers forward with the error RangeError (not a Python exception)",
    "unsupported": "answers forward with unsupported",
    "no-c_n": "sends a result without c_n",
    "spawn-child": "starts a grandchild process (sleep) at start-up, which must die with it",
}


def send(message: dict) -> None:
    body = wire.encode(message)
    sys.stdout.buffer.write(HEADER.pack(len(body)) + body)
    sys.stdout.buffer.flush()


def receive() -> dict | None:
    header = sys.stdin.buffer.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return wire.decode(sys.stdin.buffer.read(HEADER.unpack(header)[0]))


def packed(value: object) -> object:
    return PackedArrays(**value) if isinstance(value, dict) else value


def main(behaviour: str) -> None:
    models: dict[int, NumpyLSTM] = {}
    last_id = 0
    while (message := receive()) is not None:
        kind, request_id = message["type"], message["id"]
        if kind == "start":
            if behaviour == "sleep-on-start":
                time.sleep(3600)
            if behaviour == "spawn-child":
                import subprocess

                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            features = sorted(FEATURES) + (["packed_sorted"] if behaviour == "unknown-feature" else [])
            send({"type": "started", "id": request_id, "protocol": 2 if behaviour == "version-2" else 1,
                  "port": {"name": f"python-{behaviour}", "version": "1.0", "language": "python"},
                  "capabilities": {"features": features, "dtypes": ["float32", "float64"], "errors": "raises",
                                   "gradients": True}})
        elif kind == "construct":
            for model in message["release"]:
                models.pop(model, None)
            models[message["model"]] = NumpyLSTM(LSTMConfig(**message["config"]), message["weights"])
            send({"type": "constructed", "id": request_id})
        elif kind == "forward":
            hx = message["hx"]
            hx = tuple(hx) if isinstance(hx, list) else hx
            if behaviour == "text-on-stdout":
                sys.stdout.write("computing the forward pass...\n")
            if behaviour == "exit-on-forward":
                sys.stderr.write("fatal: out of cheese\n")
                sys.stderr.flush()
                os._exit(3)
            if behaviour in ("raise-valueerror", "raise-custom"):
                name = "ValueError" if behaviour == "raise-valueerror" else "RangeError"
                send({"type": "error", "id": request_id, "error": {"type": name, "message": "no, thank you"}})
                continue
            if behaviour == "unsupported":
                send({"type": "unsupported", "id": request_id, "reason": "this port has no forward"})
                continue
            try:
                output, (h_n, c_n) = models[message["model"]].forward(packed(message["input"]), hx,
                                                                      training=message["training"])
            except Exception as exc:  # noqa: BLE001 - every error of the port is a reply
                send({"type": "error", "id": request_id, "error": {"type": type(exc).__name__, "message": str(exc)}})
                continue
            reply = {"type": "result", "id": last_id if behaviour == "wrong-id" else request_id,
                     "output": dict(output._asdict()) if isinstance(output, PackedArrays) else output,
                     "h_n": h_n, "c_n": c_n}
            if behaviour == "extra-field":
                reply["note"] = "an extra field"
            if behaviour == "no-c_n":
                del reply["c_n"]
            send(reply)
        elif kind == "backward":
            hx = message["hx"]
            hx = tuple(hx) if isinstance(hx, list) else hx
            try:
                grads = models[message["model"]].backward(packed(message["input"]), hx, message["cotangents"],
                                                          training=message["training"])
            except Exception as exc:  # noqa: BLE001 - every error of the port is a reply
                send({"type": "error", "id": request_id, "error": {"type": type(exc).__name__, "message": str(exc)}})
                continue
            send({"type": "gradients", "id": request_id, "gradients": grads})
        elif kind == "stop":
            return
        last_id = request_id


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "correct")
