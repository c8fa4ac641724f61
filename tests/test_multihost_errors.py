"""Multi-host starts that cannot work end in one line: bad arguments at once, a missing peer after a timeout."""

import os
import socket
import subprocess
import sys

import pytest

from jaxcnn import cli
from jaxcnn.parallel.multihost import check_arguments, parse_coordinator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv,message", [
    (["--num-processes", "2", "--process-id", "1"], "2 processes need --coordinator host:port"),
    (["--coordinator", "nonsense", "--num-processes", "2"], "coordinator 'nonsense' is not host:port"),
    (["--coordinator", "127.0.0.1:99999", "--num-processes", "2"], "is not host:port"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "process id 2 is not in [0, 2)"),
])
def test_bad_multihost_arguments_are_one_line(tmp_path, capsys, argv, message):
    code = cli.main(["train", "--config", RECIPE, "--no-progress", f"workdir={tmp_path}", "max_steps=1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints"))   # nothing was trained


def test_argument_checks():
    assert parse_coordinator("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert parse_coordinator("[::1]:80") == ("::1", 80)
    assert check_arguments(None, 1, 0) is False
    assert check_arguments("h:1", 1, 0) is True
    with pytest.raises(ValueError, match="not host:port"):
        parse_coordinator(":1234")


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_process_alone_gives_up_after_the_timeout(tmp_path, process_id):
    """Process 0 with nobody joining, or process 1 with no process 0: a line saying what it waits for, then
    after ``--join-timeout`` one error line and exit status 2 (not JAX's abort with a stack trace)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    coordinator = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "jaxcnn.cli", "train", "--config", RECIPE, "--no-progress", f"workdir={tmp_path}",
           "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(process_id),
           "--join-timeout", "3"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"process {process_id} of 2: waiting up to 3 s" in done.stderr
    assert "not all processes joined within 3 s" in done.stderr
    assert "Check failure" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
