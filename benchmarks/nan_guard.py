"""The train step's non-finite guard: one ``lax.cond`` around the update (``steps._update_if``, what the
step does now) against ``where(finite, new, old)`` on every leaf of the state (what it did before) and
against a ``lax.cond`` that only picks between an update computed outside it and the old state. Each
variant's train step (SGD-momentum, 224 px, float32) compiled in this process, in this order, then the
steps timed alternating (median of ``--repeats``).

    python benchmarks/nan_guard.py --models resnet50:16 alexnet:32 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cpu import host_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved import train_steps_ab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50:16", "alexnet:32"], metavar="MODEL:BATCH")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp

    from jaxcnn.training import steps

    def select_per_leaf(finite, update, state):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), update(), state)

    def cond_picks(finite, update, state):
        new = update()
        return jax.lax.cond(finite, lambda: new, lambda: state)

    variants = {"cond around the update": steps._update_if, "where per leaf (before)": select_per_leaf,
                "cond picking": cond_picks}
    print("| model (batch) | " + " | ".join(f"{v}: compile s / img/s" for v in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for spec in args.models:
        name, batch = spec.split(":")
        res = train_steps_ab(name, int(batch), "float32", "_update_if", variants, args.repeats, module=steps)
        print(f"| {name} ({batch}) | " + " | ".join(f"{res[v][0]:.1f} / {res[v][1]:.2f}" for v in variants) + " |",
              flush=True)


if __name__ == "__main__":
    main()
