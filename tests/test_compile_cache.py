"""The persistent compilation cache of the ``jaxcnn`` command: written once, read back by the next process."""

import os
import subprocess
import sys

from jaxcnn.cli import compile_cache

PROGRAM = """
import jax, jax.numpy as jnp
from jaxcnn.cli import compile_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = compile_cache.enable()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)   # cache even this small program
value = float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64)))[0, 0])
print(path, value, "/jax/compilation_cache/cache_hits" in events)
"""


def _run(env):
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_second_process_reads_what_the_first_wrote(tmp_path):
    env = {**os.environ, "JAXCNN_COMPILE_CACHE": str(tmp_path / "xla"), "JAX_PLATFORMS": "cpu"}
    path, value, hit = _run(env)
    assert path == str(tmp_path / "xla") and hit == "False"
    written = sorted(os.listdir(path))
    assert written, "nothing was cached"
    _, value2, hit2 = _run(env)
    assert hit2 == "True" and value2 == value and sorted(os.listdir(path)) == written


def test_off_and_placement(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCNN_COMPILE_CACHE", "0")
    assert compile_cache.cache_dir() is None
    monkeypatch.setenv("JAXCNN_COMPILE_CACHE", "1")
    monkeypatch.setenv("JAXCNN_CACHE", str(tmp_path))
    assert compile_cache.cache_dir() == tmp_path / "xla"
