"""Test set-up: 8 simulated CPU devices (set before JAX is imported).

The suite's own ``jax.random.key`` calls (dropout keys, a test model's direct
``model.init``) use the ``rbg`` PRNG, which XLA:CPU compiles faster than the
default threefry. ``jaxcnn.init_variables`` and the train state ignore this
setting: they use a fixed ``threefry2x32`` key. Subprocess tests (multi-host,
kill/resume) run with JAX's defaults.

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
