"""The one harness of the benchmarks: timing, machine and version info, result files, worker processes.

* Timing: ``time_call`` (warm-up calls, then ``repeats`` timed ones) and ``interleaved`` (several
  calls timed round by round, so that the machine's drift hits all of them alike) block on each
  result (``jax.block_until_ready``) and give a ``Timing``: the median and the spread of the runs.
  ``first_and_steady`` splits a compiled function's first call (tracing and compiling) from its
  steady calls.
* ``machine()`` and ``versions()``: CPU model, cores, the instruction-set flags that decide the fast
  paths (AVX2, AVX-512, native bfloat16, AMX), the jax/jaxlib/flax/optax versions and the device.
* ``write_result``: one JSON file per benchmark and machine under ``benchmarks/results/``
  (``result_path`` names it), holding the command that reproduces it, the machine, the versions,
  the settings and the rows.
* ``torch_python``: the Python that runs a benchmark's PyTorch worker (``benchmarks/worker.py``), found as
  ``jaxcnn bench --vs torch`` finds it (``jaxcnn.bench.torch_side.find_python``).
* ``model_case`` and ``train_steps``: a zoo model's train step on random images, and that step
  compiled under each of several CPU-policy switches and timed alternating (the CPU probes).

Nothing here imports JAX or jaxcnn at import time: a PyTorch worker imports this module too. The
timing, machine-info and PyTorch-side code is ``jaxcnn.bench``'s, whose files ``timing.py``,
``machine.py`` and ``torch_side.py`` need only the standard library: they are loaded from their files
here (``torch_side.standalone``), since importing the jaxcnn package imports JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Hashable, Mapping

Variant = Callable[[], contextlib.AbstractContextManager]   # a CPU-policy switch, entered when a step is traced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _load_torch_side():
    spec = importlib.util.spec_from_file_location("_jaxcnn_bench_torch_side",
                                                  os.path.join(ROOT, "jaxcnn", "bench", "torch_side.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


torch_side = _load_torch_side()
_machine = torch_side.standalone("machine")
Timing = torch_side.standalone("timing").Timing
TORCH_PYTHON_ENV = torch_side.TORCH_PYTHON_ENV
machine, versions, cpu_flags, bf16_native, machine_tag = (_machine.machine, _machine.versions, _machine.cpu_flags,
                                                          _machine.bf16_native, _machine.machine_tag)


# ------------------------------------------------------------------------------- timing
def block(value):
    """Waits for ``value``'s arrays (a no-op for anything that is not a JAX value)."""
    if value is not None and "jax" in sys.modules:
        sys.modules["jax"].block_until_ready(value)
    return value


def timed_once(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn``, blocking on its result."""
    t = time.perf_counter()
    block(fn())
    return time.perf_counter() - t


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """``warmup`` untimed calls of ``fn``, then ``repeats`` timed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        block(fn())
    return Timing(tuple(timed_once(fn) for _ in range(repeats)))


def interleaved(calls: Mapping[Hashable, Callable[[], object]], repeats: int, warmup: int = 1,
                settle: float = 0.0) -> dict[Hashable, Timing]:
    """Each no-argument call's ``Timing``: ``warmup`` rounds, then ``repeats`` rounds in which every call
    runs once, the order rotating each round; ``settle`` seconds of quiet before each timed call."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    keys = list(calls)
    for _ in range(warmup):
        for k in keys:
            block(calls[k]())
    runs: dict[Hashable, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            if settle:
                time.sleep(settle)
            runs[k].append(timed_once(calls[k]))
    return {k: Timing(tuple(runs[k])) for k in keys}


def first_and_steady(fn: Callable[[], object], repeats: int) -> tuple[float, Timing]:
    """(the first call's seconds minus the steady median, i.e. tracing and compiling; the steady ``Timing``)."""
    first = timed_once(fn)
    steady = time_call(fn, repeats, warmup=0)
    return max(first - steady.median, 0.0), steady


# ------------------------------------------------------------------------------- results
def command(module: str, argv: list[str]) -> str:
    """The command line that reruns ``python -m module`` with these arguments, from the repository root."""
    return " ".join(["python", "-m", module, *map(shlex.quote, argv)])


def result_path(benchmark: str, device: str | None = None) -> str:
    """``benchmarks/results/<benchmark>.<machine tag>.json``."""
    return os.path.join(RESULTS, f"{benchmark}.{machine_tag(device)}.json")


def write_result(benchmark: str, module: str, argv: list[str], rows: list[dict], *, out: str | None = None,
                 settings: dict | None = None, extra: dict | None = None, jax_versions: bool = True,
                 known_versions: dict | None = None) -> str:
    """Writes the benchmark's rows with its command, machine, versions and settings as JSON to ``out``
    (default ``result_path(benchmark)``, named for this machine and its JAX device) and returns the path.
    ``known_versions``: the versions as the benchmark's workers reported them (then this process's are not
    asked); ``jax_versions=False`` where this process runs no JAX at all."""
    ver = dict(known_versions) if known_versions is not None else versions() if jax_versions else {}
    path = out or result_path(benchmark, ver.get("device"))
    data = {"benchmark": benchmark, "command": command(module, recorded(argv)), "machine": machine(), "versions": ver,
            "settings": settings or {}, **(extra or {}), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=_jsonable)
        f.write("\n")
    print(f"wrote {path}", flush=True)
    return path


def recorded(argv: list[str]) -> list[str]:
    """The arguments a result records: without ``--out FILE`` and ``--torch-python PATH`` (this machine's paths)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--torch-python"):
            skip = True
        elif not a.startswith(("--out=", "--torch-python=")):
            out.append(a)
    return out


def _jsonable(value):
    if isinstance(value, Timing):
        return value.as_dict()
    if hasattr(value, "item"):      # NumPy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown(header: list[str], rows: list[list]) -> str:
    """A Markdown table (floats as given: format them before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


# ------------------------------------------------------------------------------- processes
def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH`` (so that ``python -m
    benchmarks.NAME`` runs from any directory and any venv) and ``extra`` set."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": ROOT + (os.pathsep + path if path else ""), **extra}


def run_module(module: str, argv: list[str], python: str | None = None, **env: str) -> str:
    """Runs ``python -m module argv`` in a child process and returns its stdout (its stderr passes through);
    a failure raises ``RuntimeError`` naming the command."""
    cmd = [python or sys.executable, "-m", module, *argv]
    proc = subprocess.run(cmd, env=subprocess_env(**env), stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with code {proc.returncode}")
    return proc.stdout


def torch_python(option: str | None = None) -> str:
    """The Python executable of the PyTorch worker: ``option`` (``--torch-python``), else this Python if it imports
    torch and torchvision, else ``$JAXCNN_TORCH_PYTHON``. A one-line ``SystemExit`` when none can."""
    python, why = torch_side.find_python(option)
    if python is None:
        raise SystemExit(why)
    return python


# ------------------------------------------------------------------------------- zoo models
def model_case(name: str, batch: int, size: int = 224, dtype: str = "float32", seed: int = 0):
    """``(model, tx, state, data)``: zoo model ``name`` (GoogLeNet and Inception-v3 without their auxiliary
    heads) computing in ``dtype``, SGD-momentum, its train state and a batch of random uint8 images
    with labels, as the ``jaxcnn`` command trains it."""
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxcnn
    from jaxcnn.training.state import create_train_state

    extra = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    model = jaxcnn.create_model(name, dtype=dtype, **extra)
    tx = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(model, tx, (size, size, 3), seed=seed)
    rng = np.random.default_rng(seed)
    data = {"image": jnp.asarray(rng.integers(0, 256, (batch, size, size, 3)), jnp.uint8),
            "label": jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)}
    return model, tx, state, data


def train_steps(name: str, batch: int, dtype: str, variants: Mapping[str, Variant], repeats: int,
                size: int = 224) -> dict[str, dict]:
    """MODEL ``name``'s train step compiled once inside each variant's context (a CPU-policy switch such as
    ``lambda: policy.disabled("batch_norm")``; read when the step is traced), the steps then timed
    alternating: ``{label: {"compile_s", "images_per_s", "timing"}}``."""
    import functools

    import jax

    from jaxcnn.training.steps import make_train_step

    model, tx, state, data = model_case(name, batch, size, dtype)
    steps, compile_s = {}, {}
    for label, context in variants.items():
        with context():
            t = time.perf_counter()
            steps[label] = jax.jit(make_train_step(model, tx)).lower(state, data).compile()
            compile_s[label] = time.perf_counter() - t
    timing = interleaved({k: functools.partial(f, state, data) for k, f in steps.items()}, repeats)
    return {k: {"compile_s": compile_s[k], "images_per_s": batch / timing[k].median, "timing": timing[k]}
            for k in variants}


# ------------------------------------------------------------------------------- command lines
def parser(module: str, doc: str, keep_heap_option: bool = True) -> argparse.ArgumentParser:
    """A benchmark's argument parser, with ``--out`` (the JSON result) and ``--no-keep-heap``."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    ap.add_argument("--out", metavar="FILE", help="the JSON result (default: benchmarks/results/NAME.MACHINE.json)")
    if keep_heap_option:
        ap.add_argument("--no-keep-heap", action="store_true",
                        help="leave glibc's malloc as it is (jaxcnn.cpu.host_memory, which the jaxcnn command applies)")
    return ap


def add_torch_python(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--torch-python", metavar="PATH",
                    help=f"the Python that has torch and torchvision (default: ${TORCH_PYTHON_ENV}, else this "
                         "Python if it imports them)")


def keep_heap(args: argparse.Namespace) -> bool:
    """Applies ``jaxcnn.cpu.host_memory`` as the ``jaxcnn`` command does (before JAX's first computation)
    unless ``--no-keep-heap``; returns whether it is applied."""
    from jaxcnn.cpu import host_memory

    return False if args.no_keep_heap else host_memory.keep_freed_memory()


def settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("out", "worker")}


def within(context: Variant, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` called inside a fresh ``context()`` each time: for loops compiled through ``jaxcnn.cpu.jit``,
    which picks its program by the policy at each call."""
    def call():
        with context():
            return fn()
    return call
