"""Test set-up: 8 simulated CPU devices (set before JAX is imported).

The suite uses the ``rbg`` PRNG: initialising a zoo model compiles a random
number generator per parameter, and rbg's compile in about half the time of
the default threefry on CPU. Subprocess tests (multi-host, kill/resume) run
with JAX's defaults.

pytest-xdist runs the files in ``-n auto`` worker processes (``pyproject.toml``): one per core, at
most 4. Most of the suite's time is XLA compiling small programs, which two processes overlap on
two cores (1020 -> 550 s); a third worker on two cores was slower (660 s), and each worker holds
its own 8 simulated devices and compiled functions.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_prng_impl", "rbg")


def pytest_xdist_auto_num_workers(config):
    return max(1, min(len(os.sched_getaffinity(0)), 4))
