"""Each framework in a long-lived process of its own, driven from the benchmark's main process.

In one process, jaxcnn and PyTorch disturb each other: PyTorch's allocations fragment the heap
that ``jaxcnn.cpu.host_memory`` keeps for XLA's per-call buffers (page faults on every train
step), and once jaxcnn's oneDNN calls have run, PyTorch's own OpenMP work slows down. So the
main process starts one worker per framework (``python -m MODULE --worker NAME``, the PyTorch one
in the Python of ``harness.torch_python``), sends it one JSON request per line and reads one JSON
reply per line; the workers run one at a time, so the cases still interleave on a quiet machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback

from benchmarks import harness

MARK = "@@reply "   # reply lines; anything else a worker prints on stdout is passed through


class Worker:
    """``w = Worker("benchmarks.models_vs_torch", "torch", python); w("setup", model="resnet50")`` -> the reply
    dict. ``python``: the interpreter (default: this one)."""

    def __init__(self, module: str, name: str, python: str | None = None):
        self.name = name
        self.proc = subprocess.Popen([python or sys.executable, "-m", module, "--worker", name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, env=harness.subprocess_env())

    def __call__(self, op: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                reply = json.loads(line[len(MARK):])
                if "error" in reply:
                    raise RuntimeError(f"{self.name} worker, {op}: {reply['error']}")
                return reply
            sys.stdout.write(line)
        raise RuntimeError(f"{self.name} worker exited with code {self.proc.wait()} during {op}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve(handlers: dict) -> None:
    """The worker's loop: ``handlers[op](**request)`` for each request line, until stdin closes."""
    replies, sys.stdout = sys.stdout, sys.stderr      # the handlers' own prints must not look like replies
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = handlers[op](**request)
        except Exception as err:   # reported to the main process, which stops the run with it
            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        replies.write(MARK + json.dumps(reply) + "\n")
        replies.flush()
