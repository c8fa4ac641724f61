"""Test set-up: 8 simulated CPU devices (set before JAX is imported).

The suite uses the ``rbg`` PRNG: initialising a zoo model compiles a random
number generator per parameter, and rbg's compile in about half the time of
the default threefry on CPU. Subprocess tests (multi-host, kill/resume) run
with JAX's defaults.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_prng_impl", "rbg")
