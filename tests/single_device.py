"""The environment of a child process on the path a user gets by default: one CPU device, fast paths on.

The suite simulates 8 devices (``conftest.py``), which keeps XLA's own ops; tests of the default path
run their work in a child process with this environment.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_env() -> dict:
    """The suite's environment without its simulated devices or fast-path switches."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    if not env["XLA_FLAGS"]:
        del env["XLA_FLAGS"]
    for switch in ("JAXCNN_WINOGRAD", "JAXCNN_ONEDNN"):
        env.pop(switch, None)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_child(module: str, timeout: float) -> dict:
    """Runs ``python -m module OUT_DIR`` with ``default_env()`` and returns the ``results.json`` it wrote
    there; a failing child fails the calling test with the end of its stderr."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jaxcnn-single-device-") as out:
        run = subprocess.run([sys.executable, "-m", module, out], cwd=ROOT, env=default_env(),
                             capture_output=True, text=True, timeout=timeout)
        assert run.returncode == 0, run.stderr[-4000:]
        with open(os.path.join(out, "results.json")) as f:
            return json.load(f)
