"""Two processes on 127.0.0.1 with 2 devices each compute what one process with 4 devices does."""

import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, ndev: int, out: str) -> None:
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, WORKER, port, str(nproc), str(i), str(ndev), out], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(nproc)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, o in zip(procs, outputs):
        assert p.returncode == 0, o[-3000:]


def test_two_processes_equal_one(tmp_path):
    one, two = str(tmp_path / "one.npz"), str(tmp_path / "two.npz")
    _run(1, 4, one)
    _run(2, 2, two)
    a, b = np.load(one), np.load(two)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-6)
    assert len(a.files) == len(b.files) > 3
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
