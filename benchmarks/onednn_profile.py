"""Where jaxcnn's style-transfer, DeepDream or PGD loop (the workloads of ``inputopt_vs_torch.py``), or a model's
train step or inference, spends its oneDNN time: the workload runs warm in a child process with
``ONEDNN_VERBOSE=1``, and the primitives of one timed run are summed by kind (convolution forward /
backward data / weights, weight reorders, matmuls, the Winograd products as sgemm) and by shape;
what is left of the step is XLA's own code and the calls between. ``--model`` with
``--framework torch`` times torchvision's model the same way (channels-last, SGD-momentum, bf16 as
autocast; needs PyTorch), so that the same primitives compare shape by shape.

    python benchmarks/onednn_profile.py [--loop dream|pgd] --size 128 --steps 10 [--dtype bfloat16] [--top 12]
    python benchmarks/onednn_profile.py --model googlenet --step train --batch 16 [--framework torch]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MARK, END = "=====TIMED", "=====END"


def child(loop: str, size: int, steps: int, dtype: str) -> None:
    from jaxcnn.cpu import host_memory
    host_memory.keep_freed_memory()
    from inputopt_loops import LOOPS

    run = LOOPS[loop](size, steps, dtype)
    run()
    run()
    print(MARK, flush=True)
    t = time.perf_counter()
    run()
    print(f"{END} {(time.perf_counter() - t) / steps * 1e3:.1f}", flush=True)


def model_child(name: str, step: str, batch: int, dtype: str, framework: str) -> None:
    """Runs one warm model step (``step``: train or infer, 224 px) between the markers, built as
    ``models_vs_torch.py`` builds it (PyTorch: channels-last, its own init)."""
    if framework == "torch":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        from models_vs_torch import torch_case
        run_infer, run_train = torch_case(name, batch, 224, bf16=dtype == "bfloat16")
    else:
        from jaxcnn.cpu import host_memory
        host_memory.keep_freed_memory()
        from models_vs_torch import jax_case
        run_infer, run_train, _, _ = jax_case(name, batch, 224, dtype)
    run = run_train if step == "train" else run_infer
    for _ in range(3):
        run()
    print(MARK, flush=True)
    t = time.perf_counter()
    run()
    print(f"{END} {(time.perf_counter() - t) * 1e3:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", default="style", choices=["style", "dream", "pgd"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--model", help="a model's step instead of a loop (torchvision's name, e.g. googlenet)")
    ap.add_argument("--step", default="train", choices=["train", "infer"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--framework", default="jax", choices=["jax", "torch"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child and args.model:
        return model_child(args.model, args.step, args.batch, args.dtype, args.framework)
    if args.child:
        return child(args.loop, args.size, args.steps, args.dtype)
    if args.model:
        args.steps = 1     # the timed run is one step
    out = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=True).stdout
    timed, end = out.split(MARK, 1)[1].split(END, 1)
    step_ms = float(end.split()[0])
    kinds, shapes = collections.Counter(), collections.Counter()
    for line in timed.splitlines():
        # jaxcnn's oneDNN (3.2): "onednn_verbose,exec,cpu,KIND,IMPL,PROP,...,SHAPE,MS"; XLA's own,
        # newer one adds "v1,primitive," after the prefix
        f = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in f[:4]:
            continue
        i = f.index("exec")
        kind = {"reorder": "weights reorder", "gemm_api": "sgemm (the Winograd products)"}.get(
            f[i + 2], f"{f[i + 2]} {f[i + 4]}")
        kinds[kind] += float(f[-1]) / args.steps
        shapes[(kind, f[-2])] += float(f[-1]) / args.steps
    if args.model:
        name, size = f"{args.framework} {args.model} {args.step} step, batch {args.batch},", 224
    else:
        name, size = {"style": "style transfer, VGG-19", "dream": "DeepDream, GoogLeNet",
                      "pgd": "PGD, ResNet-18 batch 8"}[args.loop], args.size
    print(f"{name} {args.dtype}, {size} px: {step_ms:.1f} ms/step, "
          f"oneDNN {sum(kinds.values()):.1f} ms/step of it\n")
    print("| oneDNN primitive | ms/step | share of the step |\n|---|---|---|")
    for k, ms in kinds.most_common():
        print(f"| {k} | {ms:.1f} | {ms / step_ms:.0%} |")
    print("\n| primitive | shape | ms/step |\n|---|---|---|")
    for (k, shape), ms in shapes.most_common(args.top):
        print(f"| {k} | {shape} | {ms:.1f} |")


if __name__ == "__main__":
    main()
