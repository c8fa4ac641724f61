"""Model throughput, jaxcnn against PyTorch + torchvision on the same weights, in one run.

For each model: inference images/s and training-step images/s (forward, backward, SGD-momentum
update), compile time apart, achieved GFLOP/s from the analytic FLOP count (``jaxcnn.count_flops``;
a training step counted as 3x the forward), MFU against the f32 matmul peak measured in the same run,
and the process's peak RSS after the case. Variants:

  jaxcnn f32            the default (``lowering`` mode "auto": CPU fast paths, oneDNN convolutions)
  jaxcnn f32 reference  XLA's own lowerings everywhere (the "before" of every CPU fast path)
  jaxcnn bf16           compute in bfloat16, parameters float32
  torch eager / channels-last (NCHW, and channels_last memory format), float32
  torch channels-last bf16  the same under ``torch.autocast("cpu", torch.bfloat16)``

MFU is against the matmul peak of the row's compute dtype, both measured here (float32 with
JAX, bfloat16 with PyTorch, whose oneDNN reaches AMX where XLA's own dot does not). The process
keeps its heap (``jaxcnn.host_memory``, as the ``jaxcnn`` command does). A plot of images/s per
model and variant goes next to the JSON.

Cases are interleaved (one variant after the other, repeated), median of ``--repeats``.

    python benchmarks/models_vs_torch.py --models resnet50 vgg16 alexnet googlenet --repeats 2
Writes benchmarks/results/models_vs_torch.json and prints a Markdown table. The same command runs
on a GPU (MFU is then against the GPU's measured matmul peak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torchvision

import jaxcnn
from jaxcnn import host_memory, lowering
from jaxcnn.training.state import create_train_state
from jaxcnn.training.steps import make_train_step
from jaxcnn.weights.torchvision import to_torch_state_dict

BATCH = {"resnet50": 16, "vgg16": 8, "alexnet": 32, "googlenet": 16}


def matmul_peak() -> float:
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(10):     # the best of ten: a peak, not an average disturbed by anything else
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def bf16_matmul_peak() -> float:
    n = 2048
    a = torch.ones(n, n, dtype=torch.bfloat16)
    a @ a
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def jax_cases(name: str, batch: int, size: int):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
    cases = {}
    for label, mode, dtype in (("jaxcnn f32", "auto", "float32"), ("jaxcnn f32 reference", "reference", "float32"),
                               ("jaxcnn bf16", "auto", "bfloat16")):
        model = jaxcnn.create_model(name, dtype=dtype, **({"aux_logits": False} if name == "googlenet" else {}))
        tx = optax.sgd(0.01, momentum=0.9)
        with lowering.mode(mode):
            state = create_train_state(model, tx, (size, size, 3), seed=0)
            infer = jax.jit(lambda v, x, model=model: model.apply(v, x.astype(jnp.float32) / 255.0, train=False)[0])
            step = jax.jit(make_train_step(model, tx), donate_argnums=0)
            # compile inside the mode: the lowering is chosen at trace time
            infer_c = infer.lower(state.variables, images).compile()
            box = {"state": state}
            t = time.perf_counter()
            step_c = step.lower(state, {"image": images, "label": labels}).compile()
            compile_s = time.perf_counter() - t

        def run_infer(infer_c=infer_c, box=box):
            jax.block_until_ready(infer_c(box["state"].variables, images))

        def run_train(step_c=step_c, box=box):
            box["state"], m = step_c(box["state"], {"image": images, "label": labels})
            jax.block_until_ready(m)

        cases[label] = (run_infer, run_train, compile_s)
    return cases, state.variables


def torch_cases(name: str, variables, batch: int, size: int):
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    cases = {}
    for label, fmt, bf16 in (("torch eager", torch.contiguous_format, False),
                             ("torch channels-last", torch.channels_last, False),
                             ("torch channels-last bf16", torch.channels_last, True)):
        net = getattr(torchvision.models, name)(weights=None, **kwargs)
        state = {k: torch.from_numpy(np.array(v)) for k, v in to_torch_state_dict(variables).items()}
        net.load_state_dict(state, strict=False)
        net = net.to(memory_format=fmt)
        xin = x.to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def run_infer(net=net, xin=xin, bf16=bf16):
            net.eval()
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                net(xin)

        def run_train(net=net, xin=xin, opt=opt, bf16=bf16):
            net.train()
            opt.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(net(xin), y)
            loss.backward()
            opt.step()

        cases[label] = (run_infer, run_train, 0.0)
    return cases


def _time(fn, faults: list | None = None) -> float:
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    if faults is not None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(BATCH))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds over all cases first")
    ap.add_argument("--batch-scale", type=float, default=1.0, help="multiply the default batches")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "models_vs_torch.json"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    host_memory.keep_freed_memory()     # before JAX's first computation starts XLA's threads
    peak = matmul_peak()
    peak_bf16 = bf16_matmul_peak() if jax.default_backend() == "cpu" else peak
    rows = []
    for name in args.models:
        batch = max(1, int(BATCH.get(name, 8) * args.batch_scale))
        gflop = jaxcnn.count_flops(jaxcnn.create_model(name), args.size) / 1e9   # per image, forward
        jcases, variables = jax_cases(name, batch, args.size)
        cases = {**jcases, **torch_cases(name, variables, batch, args.size)}
        times = {label: ([], [], []) for label in cases}
        for _ in range(args.warmup):   # the first executions, and the heap's steady state (see host_memory)
            for label, (inf, tr, _) in cases.items():
                inf()
                tr()
        for _ in range(args.repeats):
            for label, (inf, tr, _) in cases.items():
                times[label][0].append(_time(inf))
                times[label][1].append(_time(tr, times[label][2]))
        for label, (inf_t, tr_t, faults) in times.items():
            ti, tt = statistics.median(inf_t), statistics.median(tr_t)
            gfs = 3 * gflop * batch / tt
            row_peak = peak_bf16 if "bf16" in label else peak
            rows.append({"model": name, "variant": label, "batch": batch, "infer_img_s": batch / ti,
                         "train_img_s": batch / tt, "train_gflop_s": gfs, "train_mfu": gfs / row_peak,
                         "compile_s": cases[label][2], "train_page_faults": int(statistics.median(faults)),
                         "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20})
        print(f"{name} done", flush=True)
    meta = {"cpu": _cpu_name(), "cores": os.cpu_count(), "device": jax.devices()[0].device_kind,
            "jax": jax.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "matmul_peak_gflop_s": peak, "bf16_matmul_peak_gflop_s": peak_bf16,
            "keep_heap": host_memory.applied, "size": args.size, "repeats": args.repeats,
            "command": "python benchmarks/models_vs_torch.py --models " + " ".join(args.models)
                       + f" --size {args.size} --repeats {args.repeats} --warmup {args.warmup}"
                       + f" --batch-scale {args.batch_scale}"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"\n{meta['cpu']}, {meta['cores']} cores; jax {meta['jax']}, torch {meta['torch']}; "
          f"matmul peak f32 {peak:.0f}, bf16 {peak_bf16:.0f} GFLOP/s; {args.size} px\n")
    print("| model | variant | batch | inference img/s | train img/s | train GFLOP/s | MFU | train compile s "
          "| page faults / step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['infer_img_s']:.2f} | {r['train_img_s']:.2f} | "
              f"{r['train_gflop_s']:.0f} | {100 * r['train_mfu']:.0f}% | {r['compile_s']:.1f} | "
              f"{r['train_page_faults']} |")
    plot(rows, meta, os.path.splitext(args.out)[0] + ".png")


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


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
