"""Where jaxcnn's style-transfer or DeepDream loop (the workloads of ``inputopt_vs_torch.py``) spends its
oneDNN time: the loop runs warm in a child process with ``ONEDNN_VERBOSE=1``, and the primitives of
one timed run are summed by kind (convolution forward / backward data, weight reorders, matmuls)
and by shape; what is left of the step is XLA's own code and the calls between.

    python benchmarks/onednn_profile.py [--loop dream] --size 128 --steps 10 [--dtype bfloat16] [--top 12]
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
    from jaxcnn import host_memory
    host_memory.keep_freed_memory()
    from inputopt_loops import LOOPS

    run = LOOPS[loop](size, steps, dtype)
    run()
    run()
    print(MARK, flush=True)
    t = time.perf_counter()
    run()
    print(f"{END} {(time.perf_counter() - t) / steps * 1e3:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", default="style", choices=["style", "dream"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.loop, args.size, args.steps, args.dtype)
    out = subprocess.run([sys.executable, __file__, "--child", "--loop", args.loop, "--size", str(args.size),
                          "--steps", str(args.steps), "--dtype", args.dtype], env={**os.environ, "ONEDNN_VERBOSE": "1"},
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
        kind = {"reorder": "weights reorder", "gemm_api": "XLA's matmuls (sgemm API)"}.get(
            f[i + 2], f"{f[i + 2]} {f[i + 4]}")
        kinds[kind] += float(f[-1]) / args.steps
        shapes[(kind, f[-2])] += float(f[-1]) / args.steps
    name = {"style": "style transfer, VGG-19", "dream": "DeepDream, GoogLeNet"}[args.loop]
    print(f"{name} {args.dtype}, {args.size} px: {step_ms:.1f} ms/step, "
          f"oneDNN {sum(kinds.values()):.1f} ms/step of it\n")
    print("| oneDNN primitive | ms/step | share of the step |\n|---|---|---|")
    for k, ms in kinds.most_common():
        print(f"| {k} | {ms:.1f} | {ms / step_ms:.0%} |")
    print("\n| primitive | shape | ms/step |\n|---|---|---|")
    for (k, shape), ms in shapes.most_common(args.top):
        print(f"| {k} | {shape} | {ms:.1f} |")


if __name__ == "__main__":
    main()
