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

JAX's persistent compilation cache (``jaxcnn.cli.compile_cache``) points at a directory made for this
session and removed after it, shared by the workers and the subprocess tests (``JAXCNN_COMPILE_CACHE``
is inherited): a program compiled twice (a resumed run, the same tiny model in two files) is read
back the second time, and nothing is read from or written to the user's ``~/.cache/jaxcnn``.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_prng_impl", "rbg")

if "JAXCNN_COMPILE_CACHE" not in os.environ:     # the first process (controller); workers inherit it
    os.environ["JAXCNN_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="jaxcnn-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAXCNN_COMPILE_CACHE"], True)

from jaxcnn.cli import compile_cache  # noqa: E402

compile_cache.enable()


def pytest_xdist_auto_num_workers(config):
    return max(1, min(len(os.sched_getaffinity(0)), 4))


import pytest  # noqa: E402

# the ImageNet-format fixture (jaxcnn.data.fixture) at the tests' size: 6 classes x (8 train, 4 val, 4 v2) JPEGs
FIXTURE_SIZE = {"train_per_class": 8, "val_per_class": 4, "v2_per_class": 4, "voc": (4, 2)}


@pytest.fixture(scope="session")
def imagenet_fixture(tmp_path_factory):
    """The fixture's root folder and manifest, built once per test process."""
    from jaxcnn.data.fixture import build

    root = tmp_path_factory.mktemp("imagenet_fixture")
    return root, build(root, **FIXTURE_SIZE)
