"""One model's inference and train-step speed in this process alone (no PyTorch), for before/after checks.

    python -m benchmarks.train_step --model resnet50 --batch 16 --dtype float32 [--mode reference]
    JAXCNN_ONEDNN=0 python -m benchmarks.train_step ...     # XLA's convolutions instead of oneDNN
    python -m benchmarks.train_step ... --no-keep-heap      # without jaxcnn.cpu.host_memory
    python -m benchmarks.train_step ... --compile-cache DIR # JAX's persistent cache there (run twice:
                                                            # the second run's compile is a cache read)

Prints and writes images/s (best of the timed steps after one warm step), compile time of the train
step (lowering + XLA) and minor page faults per step. The steps are ``jaxcnn bench``'s
(``jaxcnn.bench.measure.prepare``: the training path on one device, uint8 batches), compiled under
the CPU mode ``--mode``; ``jaxcnn bench MODEL`` is the way to measure a model, this script the
before/after check of one CPU change.
"""

from __future__ import annotations

import resource
import sys
import time

from benchmarks import harness

MODULE = "benchmarks.train_step"


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--mode", default="auto", choices=["auto", "reference", "fast"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--compile-cache", metavar="DIR", help="JAX's persistent compilation cache in DIR")
    args = ap.parse_args(argv)
    if args.compile_cache:
        import os

        from jaxcnn.cli import compile_cache
        os.environ["JAXCNN_COMPILE_CACHE"] = args.compile_cache
        compile_cache.enable()
    harness.keep_heap(args)
    import jax

    from jaxcnn import cpu
    from jaxcnn.bench import measure
    from jaxcnn.cpu import host_memory

    with cpu.mode(args.mode):    # the lowering is chosen at trace time: compile inside the mode
        infer_case, train_case = (measure.prepare(measure.Setup(args.model, mode=m, batch=args.batch, size=args.size,
                                                                dtype=args.dtype, devices=1)) for m in measure.MODES)
    compile_s = train_case.compile_s
    infer = lambda: jax.block_until_ready(infer_case.step())
    step = lambda: jax.block_until_ready(train_case.step())
    infer()
    step()
    ti, tt, faults = [], [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        infer()
        ti.append(time.perf_counter() - t)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        step()
        tt.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(f"{args.model} {args.dtype} mode={args.mode} batch {args.batch}: inference {args.batch / min(ti):.1f} "
          f"img/s, train {args.batch / min(tt):.2f} img/s, train compile {compile_s:.1f} s, "
          f"page faults/step {min(faults)}, heap kept {host_memory.applied}")
    row = {"model": args.model, "dtype": args.dtype, "mode": args.mode, "batch": args.batch, "size": args.size,
           "infer_img_s": args.batch / min(ti), "train_img_s": args.batch / min(tt), "train_compile_s": compile_s,
           "page_faults_per_step": min(faults), "heap_kept": host_memory.applied, "infer_s": ti, "train_s": tt}
    return harness.write_result("train_step", MODULE, argv, [row], out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
