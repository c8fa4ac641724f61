"""Several compiled calls timed against each other: one warm call each, then ``repeats`` rounds in
which every call runs once, so that the machine's drift (this VM's +-20%) hits all of them alike.
``train_steps_ab`` does it for a model's train step compiled with each choice of one ops."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable


def interleaved_ms(calls: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, float]:
    """The median milliseconds of each no-argument call, blocking on its result."""
    import jax

    for f in calls.values():
        jax.block_until_ready(f())
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def train_steps_ab(name: str, batch: int, dtype: str, attr: str, values: dict[str, object],
                   repeats: int, module: object = None) -> dict[str, tuple[float, float]]:
    """MODEL ``name``'s train step (SGD-momentum, 224 px) compiled once per value of
    ``<module>.<attr>`` (``module`` defaults to ``jaxcnn.cpu.ops``; read when the step is traced),
    the steps then timed alternating: ``{label: (compile seconds, median images/s)}``."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxcnn
    from jaxcnn.cpu import ops
    from jaxcnn.training.state import create_train_state
    from jaxcnn.training.steps import make_train_step

    extra = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    model = jaxcnn.create_model(name, dtype=dtype, **extra)
    tx = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(model, tx, (224, 224, 3), seed=0)
    rng = np.random.default_rng(0)
    data = {"image": jnp.asarray(rng.integers(0, 256, (batch, 224, 224, 3)), jnp.uint8),
            "label": jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)}
    module = ops if module is None else module
    original, steps, compile_s = getattr(module, attr), {}, {}
    try:
        for label, value in values.items():
            setattr(module, attr, value)
            t = time.perf_counter()
            steps[label] = jax.jit(make_train_step(model, tx)).lower(state, data).compile()
            compile_s[label] = time.perf_counter() - t
    finally:
        setattr(module, attr, original)
    ms = interleaved_ms({k: functools.partial(f, state, data) for k, f in steps.items()}, repeats)
    return {k: (compile_s[k], batch / ms[k] * 1e3) for k in values}
