"""How fast a worker is ready: the suite's worker server (conformance.forkserver) against the standard
library's engine for the same job, multiprocessing's "forkserver" start method with
set_forkserver_preload, side by side in one process.

For each engine: the time from starting the server to the first worker answering a request (the
server imports torch and the suite's modules once), then, repeated, the time from killing a worker to
its replacement answering (what a crash costs), and whether a worker stuck in a call (a hanging port)
outlives the process that asked for it when that process is killed (SIGKILL: no atexit, no cleanup).

    python scripts/forkserver_vs_multiprocessing.py --replacements 20     # from the checkout, with the .venv
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRELOAD = ["torch", "conformance.service", "conformance.worker"]


def _serve(connection: Any) -> None:  # a multiprocessing worker: answer requests until the pipe closes
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request == "hang":  # a port stuck in a call
            while True:
                time.sleep(0.01)
        connection.send(("pong", os.getpid()) if request == "ping" else ("?", request))


def multiprocessing_engine(replacements: int) -> dict:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)

    def worker() -> tuple:
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child,), daemon=True)
        process.start()
        child.close()
        parent.send("ping")
        assert parent.recv()[0] == "pong"
        return process, parent

    start = time.perf_counter()
    process, pipe = worker()
    first = time.perf_counter() - start
    times = []
    for _ in range(replacements):
        start = time.perf_counter()
        process.kill()
        process.join()
        process, pipe = worker()
        times.append(time.perf_counter() - start)
    process.kill()
    process.join()
    return {"first": first, "replacement": times}


def suite_engine(replacements: int) -> dict:
    from conformance import forkserver
    from conformance.isolation import Worker
    from conformance.process_messages import Answered, Ping
    from conformance.service import SERVICE

    start = time.perf_counter()
    forkserver.start(SERVICE)
    worker = Worker(SERVICE)
    worker.prestart()
    assert worker.call(Ping()) == Answered("pong")
    first = time.perf_counter() - start
    times = []
    for _ in range(replacements):
        start = time.perf_counter()
        worker.process.kill()
        worker.process.wait()
        worker.process = None
        worker.spare = None  # no spare: the same work as a fresh replacement
        worker.prestart()
        assert worker.call(Ping()) == Answered("pong")
        times.append(time.perf_counter() - start)
    worker.stop()
    return {"first": first, "replacement": times}


ORPHAN = textwrap.dedent('''
    import os, sys, threading, time
    sys.path.insert(0, {root!r})
    engine = sys.argv[1]
    if engine == "multiprocessing":
        import multiprocessing
        from forkserver_vs_multiprocessing import _serve
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch"])
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child,), daemon=True)
        process.start()
        parent.send("ping")
        print(parent.recv()[1], flush=True)
        parent.send("hang")
    else:
        from conformance import forkserver
        from conformance.arrays import LSTMConfig
        from conformance.case import Call, Case
        from conformance.isolation import Worker
        from conformance.process_messages import Ping
        from conformance.service import SERVICE, CheckForward
        forkserver.start(SERVICE)
        worker = Worker(SERVICE)
        worker.prestart()
        worker.call(Ping())
        print(worker.process.pid, flush=True)
        case = Case(LSTMConfig(3, 4), Call(2))
        request = CheckForward("tests.ports.misbehaving:AlwaysHangs", case)
        threading.Thread(target=worker.call, args=(request,), kwargs={{"timeout": 600}}, daemon=True).start()
    time.sleep(60)
''')


def outlives_its_parent(engine: str) -> bool:
    """Whether a worker stuck in a call is still alive 2 s after the process that asked for it was SIGKILLed."""
    here = Path(__file__).resolve().parent
    code = ORPHAN.format(root=str(here.parent))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]))
    process = subprocess.Popen([sys.executable, "-c", code, engine], stdout=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    assert process.stdout is not None
    pid = int(process.stdout.readline())
    time.sleep(2.0)  # the worker is in its hanging call
    process.kill()
    process.wait()
    time.sleep(2.0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replacements", type=int, default=20)
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}")
    for name, run in (("suite's worker server", suite_engine), ("multiprocessing forkserver", multiprocessing_engine)):
        figures = run(args.replacements)
        times = figures["replacement"]
        print(f"{name}: first worker ready {figures['first']:.2f} s; a replacement after a kill: median "
              f"{1000 * statistics.median(times):.1f} ms (min {1000 * min(times):.1f}, max {1000 * max(times):.1f})")
    for engine in ("suite", "multiprocessing"):
        print(f"{engine}: a worker stuck in a call outlives the killed process that asked for it: "
              f"{outlives_its_parent(engine)}")
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
