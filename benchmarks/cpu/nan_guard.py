"""The train step's non-finite guard (``cpu.cond_tree``): one ``lax.cond`` around the update, as the CPU
fast path takes it, against ``where(finite, new, old)`` on every leaf of the state (what runs off the
fast path, and with ``policy.disabled("cond_tree")``).

Each variant's train step (SGD-momentum, 224 px, float32) is compiled in this process, then the steps
timed alternating (compile seconds, median images/s of ``--repeats``).

    python -m benchmarks.cpu.nan_guard --models resnet50:16 alexnet:32 --repeats 5
"""

from __future__ import annotations

import contextlib
import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.nan_guard"


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--models", nargs="+", default=["resnet50:16", "alexnet:32"], metavar="MODEL:BATCH")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    from jaxcnn.cpu import policy

    variants = {"cond around the update": contextlib.nullcontext,
                "where per leaf": lambda: policy.disabled("cond_tree")}
    rows = []
    for spec in args.models:
        name, batch = spec.split(":")
        res = harness.train_steps(name, int(batch), "float32", variants, args.repeats, size=args.size)
        rows += [{"model": name, "batch": int(batch), "guard": v, **res[v]} for v in variants]
    print(harness.markdown(["model (batch)", *(f"{v}: compile s / img/s" for v in variants)],
                           [[f"{r['model']} ({r['batch']})", *(f"{s['compile_s']:.1f} / {s['images_per_s']:.2f}"
                                                               for s in rows if s["model"] == r["model"])]
                            for r in rows if r["guard"] == next(iter(variants))]))
    return harness.write_result("nan_guard", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
