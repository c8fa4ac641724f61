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
