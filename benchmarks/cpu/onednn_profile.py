"""Where a workload spends its oneDNN time, by primitive and by shape, from ``ONEDNN_VERBOSE``.

The style-transfer, DeepDream or PGD loop of ``benchmarks.inputopt_loops``, or a model's train step or
inference (``--model``), runs warm in a child process with ``ONEDNN_VERBOSE=1``, and the primitives of
one timed run are summed by kind (convolution forward / backward data / weights, weight reorders,
matmuls, the Winograd products as sgemm) and by shape; what is left of the step is XLA's own code and
the calls between. ``--model`` with ``--framework torch`` times torchvision's model the same way
(channels-last, SGD-momentum, bf16 as autocast; in the PyTorch Python, ``--torch-python``), so that the
same primitives compare shape by shape.

    python -m benchmarks.cpu.onednn_profile [--loop dream|pgd] --size 128 --steps 10 [--dtype bfloat16] [--top 12]
    python -m benchmarks.cpu.onednn_profile --model googlenet --step train --batch 16 [--framework torch]
"""

from __future__ import annotations

import collections
import os
import sys
import time

from benchmarks import harness

MODULE = "benchmarks.cpu.onednn_profile"
MARK, END = "=====TIMED", "=====END"


def child(loop: str, size: int, steps: int, dtype: str) -> None:
    from benchmarks.inputopt_loops import LOOPS
    from jaxcnn.cpu import host_memory

    host_memory.keep_freed_memory()
    run = LOOPS[loop](size, steps, dtype)
    run()
    run()
    print(MARK, flush=True)
    t = time.perf_counter()
    run()
    print(f"{END} {(time.perf_counter() - t) / steps * 1e3:.1f}", flush=True)


def model_child(name: str, step: str, batch: int, dtype: str, framework: str) -> None:
    """Runs one warm model step (``step``: train or infer, 224 px) between the markers, built as
    ``benchmarks.models_vs_torch`` builds it (PyTorch: channels-last, its own init)."""
    if framework == "torch":
        import torch

        from benchmarks.models_vs_torch import torch_case
        torch.set_num_threads(os.cpu_count() or 1)
        run_infer, run_train = torch_case(name, batch, 224, bf16=dtype == "bfloat16")
    else:
        from jaxcnn.cpu import host_memory
        host_memory.keep_freed_memory()
        from benchmarks.models_vs_torch import jax_case
        run_infer, run_train, _, _ = jax_case(name, batch, 224, dtype)
    run = run_train if step == "train" else run_infer
    for _ in range(3):
        run()
    print(MARK, flush=True)
    t = time.perf_counter()
    run()
    print(f"{END} {(time.perf_counter() - t) * 1e3:.1f}", flush=True)


def summarise(out: str, steps: int) -> tuple[float, collections.Counter, collections.Counter]:
    """(ms per step, ms per primitive kind, ms per (kind, shape)) of the verbose lines between the markers."""
    timed, end = out.split(MARK, 1)[1].split(END, 1)
    kinds, shapes = collections.Counter(), collections.Counter()
    for line in timed.splitlines():
        # "onednn_verbose,exec,cpu,KIND,IMPL,PROP,...,SHAPE,MS"; newer oneDNN adds "v1,primitive," after the prefix
        f = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in f[:4]:
            continue
        i = f.index("exec")
        kind = {"reorder": "weights reorder", "gemm_api": "sgemm (the Winograd products)"}.get(
            f[i + 2], f"{f[i + 2]} {f[i + 4]}")
        kinds[kind] += float(f[-1]) / steps
        shapes[(kind, f[-2])] += float(f[-1]) / steps
    return float(end.split()[0]), kinds, shapes


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--loop", default="style", choices=["style", "dream", "pgd"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--model", help="a model's step instead of a loop (torchvision's name, e.g. googlenet)")
    ap.add_argument("--step", default="train", choices=["train", "infer"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--framework", default="jax", choices=["jax", "torch"])
    harness.add_torch_python(ap)
    ap.add_argument("--child", action="store_true", help="(internal) run the workload")
    args = ap.parse_args(argv)
    if args.child:
        if args.model:
            return model_child(args.model, args.step, args.batch, args.dtype, args.framework)
        return child(args.loop, args.size, args.steps, args.dtype)
    steps = 1 if args.model else args.steps     # a model's timed run is one step
    python = harness.torch_python(args.torch_python) if args.model and args.framework == "torch" else None
    child_argv = harness.recorded(argv)
    out = harness.run_module(MODULE, ["--child", *child_argv], python=python, ONEDNN_VERBOSE="1")
    step_ms, kinds, shapes = summarise(out, steps)
    if args.model:
        name, size = f"{args.framework} {args.model} {args.step} step, batch {args.batch},", 224
    else:
        name, size = {"style": "style transfer, VGG-19", "dream": "DeepDream, GoogLeNet",
                      "pgd": "PGD, ResNet-18 batch 8"}[args.loop], args.size
    print(f"{name} {args.dtype}, {size} px: {step_ms:.1f} ms/step, oneDNN {sum(kinds.values()):.1f} ms/step of it\n")
    print(harness.markdown(["oneDNN primitive", "ms/step", "share of the step"],
                           [[k, f"{ms:.1f}", f"{ms / step_ms:.0%}"] for k, ms in kinds.most_common()]))
    print()
    print(harness.markdown(["primitive", "shape", "ms/step"],
                           [[k, shape, f"{ms:.1f}"] for (k, shape), ms in shapes.most_common(args.top)]))
    rows = [{"primitive": k, "ms_per_step": ms, "share": ms / step_ms} for k, ms in kinds.most_common()]
    rows += [{"primitive": k, "shape": shape, "ms_per_step": ms} for (k, shape), ms in shapes.most_common(args.top)]
    tag = f"{args.framework}_{args.model}_{args.step}" if args.model else args.loop
    return harness.write_result(f"onednn_profile_{tag}_{args.dtype}", MODULE, argv, rows, out=args.out,
                                settings=harness.settings(args), extra={"ms_per_step": step_ms}, jax_versions=False)


if __name__ == "__main__":
    main()
