"""Model throughput, jaxcnn against PyTorch + torchvision on the same weights, in one run, cases alternating.

``jaxcnn bench --vs torch`` is the way to measure a model; this is its developer's CPU variant. Both
sides' steps are built as ``jaxcnn bench`` builds them (``jaxcnn.bench.measure.prepare``: the training
path on one device; ``jaxcnn.bench.torch_side.build``: torchvision's twin; both read uint8 batches,
train with SGD-momentum and weight decay and, for GoogLeNet, its auxiliary heads); what this script
adds is the CPU reference-mode variant, the same weights on both sides, interleaved timing, page
faults and RSS. For each model: inference images/s and training-step images/s (forward, backward, SGD-momentum
update), compile time apart, achieved GFLOP/s from the analytic FLOP count (``jaxcnn.count_flops``;
a training step counted as 3x the forward), MFU against the matmul peak measured in the same run,
and the worker's peak RSS. Variants:

  jaxcnn f32            the default (``cpu.mode("auto")``: CPU fast paths, oneDNN convolutions)
  jaxcnn f32 reference  XLA's own lowerings everywhere (``cpu.mode("reference")``: the "before" of every fast path)
  jaxcnn bf16           compute in bfloat16, parameters float32
  torch eager / channels-last (NCHW, and channels_last memory format), float32
  torch channels-last bf16  the same under ``torch.autocast(..., torch.bfloat16)``; by default only
                        where bfloat16 is native (``--torch-bf16 on`` forces it: on a CPU without it,
                        oneDNN emulates bfloat16 many times slower than float32)
  torch.compile         channels-last float32 through ``torch.compile`` (its compile time apart);
                        ``--no-torch-compile`` leaves it out (its first calls take the longest)

MFU is against the matmul peak of the row's compute dtype, both measured here (float32: the
better of JAX's and PyTorch's 2048x2048 matmul, as either library's GEMM may be the faster one on
a given CPU; bfloat16 with PyTorch, whose oneDNN reaches AMX where XLA's own dot does not); on a CPU
without native bfloat16 (no AVX512-BF16 or AMX) bfloat16 rows are against the float32 peak. Each
framework runs in a worker process of its own (``benchmarks/worker.py``), a fresh pair per model;
the jaxcnn worker keeps its heap (``jaxcnn.cpu.host_memory``, as the ``jaxcnn`` command does), the
PyTorch one runs in ``--torch-python`` (or this Python if it has torch, or ``$JAXCNN_TORCH_PYTHON``).
Cases are interleaved (one variant after the other, the order rotating each round), median of
``--repeats``, with ``--settle`` seconds of quiet before each timed call (the other worker's OpenMP
threads spin a while after its calls). A plot of images/s per model and variant goes next to the JSON.

    python -m benchmarks.models_vs_torch --models resnet50 vgg16 alexnet googlenet --repeats 3

Writes benchmarks/results/models_vs_torch.MACHINE.json and prints a Markdown table. The same command
runs on a GPU (PyTorch then runs on CUDA, and MFU is against the GPU's measured matmul peak).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness
from benchmarks.worker import Worker, serve

MODULE = "benchmarks.models_vs_torch"

BATCH = {"resnet50": 16, "vgg16": 8, "alexnet": 32, "googlenet": 16}
JAX_VARIANTS = (("jaxcnn f32", "auto", "float32"), ("jaxcnn f32 reference", "reference", "float32"),
                ("jaxcnn bf16", "auto", "bfloat16"))
_cases: dict = {}     # the worker's cases: label -> (infer, train)


def _best_time(fn, n: int = 10) -> float:
    """The best of ``n`` calls: a peak, not an average disturbed by anything else."""
    return harness.time_call(fn, n).best


def _timed(label: str, kind: str) -> dict:
    fn = _cases[label][0 if kind == "infer" else 1]
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = harness.timed_once(fn)
    return {"seconds": seconds, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


# ------------------------------------------------------------------------------- jaxcnn worker
def jax_case(name: str, batch: int, size: int, dtype: str = "float32", mode: str = "auto"):
    """jaxcnn's compiled inference and train step of ``name`` on uint8 images, as ``jaxcnn bench`` builds them
    (``jaxcnn.bench.measure.prepare``: the placement on one device, the task's step, ``make_optimizer``'s
    SGD-momentum, the donated state), compiled under CPU mode ``mode``: ``(run_infer, run_train, train-step
    compile seconds, the train case)``. Call ``host_memory.keep_freed_memory()`` before JAX starts, as the
    ``jaxcnn`` command does."""
    import jax

    from jaxcnn import cpu
    from jaxcnn.bench import measure

    with cpu.mode(mode):     # the lowering is chosen at trace time: compile inside the mode
        infer, train = (measure.prepare(measure.Setup(name, mode=m, batch=batch, size=size, dtype=dtype, devices=1))
                        for m in ("infer", "train"))
    return (lambda: jax.block_until_ready(infer.step()), lambda: jax.block_until_ready(train.step()),
            train.compile_s, train)


def jax_worker() -> None:
    from jaxcnn.cpu import host_memory
    host_memory.keep_freed_memory()     # before JAX's first computation starts XLA's threads
    import jax

    import jaxcnn
    from jaxcnn.bench import peak as peaks
    from jaxcnn.weights.torchvision import to_torch_state_dict

    def peak() -> dict:
        return {"gflop_s": peaks.measure("float32", size=2048, repeats=10) / 1e9,
                "device": jax.devices()[0].device_kind, "versions": harness.versions(),
                "keep_heap": host_memory.applied}

    def setup(name: str, batch: int, size: int, weights: str) -> dict:
        compile_s = {}
        for label, mode, dtype in JAX_VARIANTS:
            run_infer, run_train, compile_s[label], case = jax_case(name, batch, size, dtype, mode)
            _cases[label] = (run_infer, run_train)
        np.savez(weights, **to_torch_state_dict(jax.device_get(case.variables)))
        return {"compile_s": compile_s, "gflop": jaxcnn.count_flops(jaxcnn.create_model(name), size) / 1e9}

    serve({"peak": peak, "setup": setup, "time": _timed, "rss": lambda: {"gb": _rss_gb()}})


# ------------------------------------------------------------------------------- PyTorch worker
def torch_case(name: str, batch: int, size: int, *, channels_last: bool = True, bf16: bool = False,
               compiled: bool = False, state_dict=None, device: str = "cpu"):
    """torchvision's ``name`` as ``jaxcnn bench --vs torch`` builds it (``jaxcnn.bench.torch_side.build``:
    ``state_dict`` loaded if given, else its own init; uint8 input normalized in the step; SGD-momentum;
    bf16 as autocast; ``compiled`` through ``torch.compile``): ``(run_infer, run_train)``, each waiting for
    the device."""
    infer, train, sync = harness.torch_side.build(name, batch, size, device=device, channels_last=channels_last,
                                                  bf16=bf16, compiled=compiled, state_dict=state_dict)
    return (lambda: (infer(), sync())), (lambda: (train(), sync()))


def torch_worker() -> None:
    import torch
    import torchvision

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def matmul_gflop_s(dtype) -> float:
        a = torch.ones(2048, 2048, dtype=dtype, device=device)
        return 2 * 2048 ** 3 / _best_time(lambda: (a @ a, sync())) / 1e9

    def peak() -> dict:     # bfloat16 only where native: emulated, one 2048^3 matmul takes a minute
        native = device == "cuda" or harness.bf16_native()
        return {"gflop_s": matmul_gflop_s(torch.bfloat16) if native else None,
                "f32_gflop_s": matmul_gflop_s(torch.float32), "device": device,
                "torch": torch.__version__, "torchvision": torchvision.__version__, "bf16_native": native}

    def setup(name: str, batch: int, size: int, weights: str, compile: bool, bf16: bool) -> dict:
        state = {k: torch.from_numpy(v) for k, v in np.load(weights).items()}
        variants = [("torch eager", False, False, False), ("torch channels-last", True, False, False)]
        if bf16:
            variants.append(("torch channels-last bf16", True, True, False))
        if compile:
            variants.append(("torch.compile", True, False, True))
        compile_s = {}
        for label, channels_last, bf16, compiled in variants:
            run_infer, run_train = torch_case(name, batch, size, channels_last=channels_last, bf16=bf16,
                                              compiled=compiled, state_dict=state, device=device)
            if compiled:   # compile time: the first train call (its own graph) minus a warm one
                run_infer()
                t = time.perf_counter()
                run_train()
                first = time.perf_counter() - t
                t = time.perf_counter()
                run_train()
                compile_s[label] = max(first - (time.perf_counter() - t), 0.0)
            else:
                compile_s[label] = 0.0
            _cases[label] = (run_infer, run_train)
        return {"compile_s": compile_s}

    serve({"peak": peak, "setup": setup, "time": _timed, "rss": lambda: {"gb": _rss_gb()}})


# ------------------------------------------------------------------------------- main process
def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    harness.add_torch_python(ap)
    ap.add_argument("--models", nargs="+", default=list(BATCH))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds over all cases first")
    ap.add_argument("--batch-scale", type=float, default=1.0, help="multiply the default batches")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds of quiet before each timed call, for the other worker's spinning threads to sleep")
    ap.add_argument("--torch-bf16", choices=["auto", "on", "off"], default="auto",
                    help="PyTorch's bf16 autocast rows: auto = only where bfloat16 is native (GPU, AVX512-BF16, AMX)")
    ap.add_argument("--worker", choices=["jax", "torch"], help="(internal) serve one framework's cases")
    args = ap.parse_args(argv)
    if args.worker:
        return jax_worker() if args.worker == "jax" else torch_worker()
    torch_python = harness.torch_python(args.torch_python)
    rows, meta, versions = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mi, name in enumerate(args.models):
            batch = max(1, int(BATCH.get(name, 8) * args.batch_scale))
            workers = {"jax": Worker(MODULE, "jax"), "torch": Worker(MODULE, "torch", torch_python)}
            if mi == 0:
                jp, tp = workers["jax"]("peak"), workers["torch"]("peak")
                versions = {**jp.pop("versions"), "torch": tp["torch"], "torchvision": tp["torchvision"]}
                machine = harness.machine()
                meta = {"cpu": machine["cpu"], "cores": machine["cores"], "jax": versions["jax"], **jp, **tp,
                        "matmul_peak_gflop_s": max(jp["gflop_s"], tp["f32_gflop_s"]),
                        "jax_matmul_gflop_s": jp["gflop_s"], "torch_matmul_gflop_s": tp["f32_gflop_s"],
                        "bf16_matmul_peak_gflop_s": tp["gflop_s"]}
                for k in ("gflop_s", "f32_gflop_s", "device"):
                    meta.pop(k)
                meta.update(jax_device=jp["device"], torch_device=tp["device"])
            weights = os.path.join(tmp, f"{name}.npz")
            js = workers["jax"]("setup", name=name, batch=batch, size=args.size, weights=weights)
            ts = workers["torch"]("setup", name=name, batch=batch, size=args.size, weights=weights,
                                  compile=not args.no_torch_compile,
                                  bf16=args.torch_bf16 == "on" or (args.torch_bf16 == "auto" and meta["bf16_native"]))
            owner = {**{label: "jax" for label in js["compile_s"]}, **{label: "torch" for label in ts["compile_s"]}}
            compile_s = {**js["compile_s"], **ts["compile_s"]}
            labels = list(owner)
            times = {label: {"infer": [], "train": [], "faults": []} for label in labels}
            for r in range(args.warmup + args.repeats):
                order = labels[r % len(labels):] + labels[:r % len(labels)]
                for label in order:
                    for kind in ("infer", "train"):
                        time.sleep(args.settle)
                        t = workers[owner[label]]("time", label=label, kind=kind)
                        if r >= args.warmup:
                            times[label][kind].append(t["seconds"])
                            if kind == "train":
                                times[label]["faults"].append(t["faults"])
            rss = {w: workers[w]("rss")["gb"] for w in workers}
            for w in workers.values():
                w.close()
            for label in labels:
                ti, tt = statistics.median(times[label]["infer"]), statistics.median(times[label]["train"])
                gfs = 3 * js["gflop"] * batch / tt
                native = "bf16" in label and meta["bf16_native"]     # else bf16 runs on the f32 units
                row_peak = meta["bf16_matmul_peak_gflop_s"] if native else meta["matmul_peak_gflop_s"]
                rows.append({"model": name, "variant": label, "batch": batch, "infer_img_s": batch / ti,
                             "train_img_s": batch / tt, "train_gflop_s": gfs, "train_mfu": gfs / row_peak,
                             "compile_s": compile_s[label],
                             "train_page_faults": int(statistics.median(times[label]["faults"])),
                             "peak_rss_gb": rss[owner[label]], "infer_s": times[label]["infer"],
                             "train_s": times[label]["train"]})
            print(f"{name} done", flush=True)
    meta.update(size=args.size, repeats=args.repeats, warmup=args.warmup)
    path = harness.write_result("models_vs_torch", MODULE, argv, rows, out=args.out, settings=harness.settings(args),
                                extra={"meta": meta}, known_versions=versions)
    print(f"\n{meta['cpu']}, {meta['cores']} cores; jax {meta['jax']} ({meta['jax_device']}), "
          f"torch {meta['torch']} ({meta['torch_device']}); matmul peak f32 {meta['matmul_peak_gflop_s']:.0f} GFLOP/s, "
          + (f"bf16 {meta['bf16_matmul_peak_gflop_s']:.0f} GFLOP/s" if meta['bf16_native']
             else "no native bf16: bf16 MFU against the f32 peak") + f"; {args.size} px\n")
    print(table(rows))
    plot(rows, meta, os.path.splitext(path)[0] + ".png")
    return path


def table(rows) -> str:
    """The Markdown table, with each row's speed against PyTorch channels-last f32 of the same model."""
    base = {r["model"]: r for r in rows if r["variant"] == "torch channels-last"}
    out = ["| model | variant | batch | inference img/s | train img/s | vs torch CL f32 (inf / train) "
           "| train GFLOP/s | MFU | compile s | page faults / step | peak RSS GB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get(r["model"])
        ratio = (f"{r['infer_img_s'] / b['infer_img_s']:.2f}x / {r['train_img_s'] / b['train_img_s']:.2f}x"
                 if b else "-")
        out.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['infer_img_s']:.2f} | "
                   f"{r['train_img_s']:.2f} | {ratio} | {r['train_gflop_s']:.0f} | {100 * r['train_mfu']:.0f}% | "
                   f"{r['compile_s']:.1f} | {r['train_page_faults']} | {r['peak_rss_gb']:.1f} |")
    return "\n".join(out)


def plot(rows, meta, path: str) -> None:
    """Grouped bars: train and inference images/s per model, one bar per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["model"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(variants)
    for ax, key, title in zip(axes, ("train_img_s", "infer_img_s"), ("training step", "inference")):
        for i, v in enumerate(variants):
            vals = [next((r[key] for r in rows if r["model"] == m and r["variant"] == v), 0) for m in models]
            ax.bar(np.arange(len(models)) + (i - (len(variants) - 1) / 2) * width, vals, width, label=v)
        ax.set_xticks(range(len(models)), models)
        ax.set_yscale("log")
        ax.set_ylabel("images / s")
        ax.set_title(f"{title}, {meta['size']} px")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{meta['cpu']} ({meta['cores']} cores), jax {meta['jax']}, torch {meta['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
