"""Input-optimisation loops, jaxcnn against a plain PyTorch loop on the same weights, in one run.

Workloads (same model, weights, image size, steps and update rule on both sides):
  style   Gatys style transfer on VGG-19: content conv4_2, style conv1_1..conv5_1 Gram
          matrices, Adam on the pixels (L-BFGS line searches differ between libraries, so
          the number of function evaluations would not match), clamp to [0, 1].
  dream   DeepDream on GoogLeNet at inception4c: normalised-gradient ascent with jitter,
          one octave (the octave loop is the same Python on both sides).
  pgd     L-inf PGD on ResNet-18 (batch ``--batch``, eps 4/255, random start), cross-entropy
          of the true label, sign steps, projection.
jaxcnn's time is split into compile (first call minus a warm call) and the steady-state
run; PyTorch runs eager after one warm-up run. Each framework runs in a worker process of its
own (``benchmarks/worker.py``: in one process they slow each other down); the cases alternate
jaxcnn / PyTorch, median of ``--repeats``. Weights are random (He-normal), exported from jaxcnn
with ``to_torch_state_dict`` and loaded into torchvision's definitions. Besides float32 on both
sides, jaxcnn runs each workload with the model computing in bfloat16 (``dtype="bfloat16"``;
objectives, Gram matrices and the image stay float32) and PyTorch under bfloat16 autocast, by
default only where the CPU multiplies bfloat16 natively (``--dtypes``).

PyTorch runs in ``--torch-python`` (or this Python if it has torch, or ``$JAXCNN_TORCH_PYTHON``):

    python -m benchmarks.inputopt_vs_torch --size 128 --steps 10 --repeats 3

Writes benchmarks/results/inputopt_vs_torch_SIZE.MACHINE.json and prints a Markdown table.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile

import numpy as np

from benchmarks import harness
from benchmarks.worker import Worker, serve

MODULE = "benchmarks.inputopt_vs_torch"

STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")    # jaxcnn's style layers (torch_loops.STYLE)
_runs: dict = {}     # the worker's runs: label -> a function running the whole loop


def jax_worker() -> None:
    from jaxcnn.cpu import host_memory
    host_memory.keep_freed_memory()     # as the jaxcnn command does; before JAX's first computation
    import jax

    import jaxcnn
    from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos
    from jaxcnn.inputopt import objectives as O
    from jaxcnn.inputopt.attacks import pgd
    from jaxcnn.inputopt.optimize import InputOptimizer
    from jaxcnn.inputopt.style import style_objectives
    from jaxcnn.inputopt.transforms import Jitter
    from jaxcnn.weights.torchvision import to_torch_state_dict

    def save(path, variables, **arrays):
        np.savez(path, **to_torch_state_dict(jax.device_get(variables)), **arrays)

    def setup(size: int, steps: int, batch: int, tmp: str, dtypes: list) -> dict:
        photos = sample_photos()
        content = center_crop(resize_shorter(photos["astronaut"], size), size)
        style_img = center_crop(resize_shorter(photos["coffee"], size), size)
        xb = np.stack([center_crop(resize_shorter(p, size), size) for p in photos.values()] * batch)[:batch]
        yb = np.random.default_rng(0).integers(0, 1000, batch)
        np.savez(os.path.join(tmp, "data.npz"), content=content, xb=xb, yb=yb)
        v_vgg = jaxcnn.init_variables(jaxcnn.create_model("vgg19"), 32)
        v_net = jaxcnn.init_variables(jaxcnn.create_model("googlenet", aux_logits=False), 64)
        v_r18 = jaxcnn.init_variables(jaxcnn.create_model("resnet18"), 64)
        save(os.path.join(tmp, "googlenet.npz"), v_net)
        save(os.path.join(tmp, "resnet18.npz"), v_r18)
        for dtype in dtypes:
            vgg = jaxcnn.create_model("vgg19", dtype=dtype)
            content_obj, style_obj = style_objectives(vgg, v_vgg, content, [style_img])
            if dtype == "float32":   # PyTorch's targets: the float32 ones
                save(os.path.join(tmp, "vgg19.npz"), v_vgg, content_target=np.asarray(content_obj.terms[0].params),
                     **{f"gram_{name}": np.asarray(t.params) for name, t in zip(STYLE, style_obj.terms)})
            objective = content_obj + 1e3 * style_obj
            opt = InputOptimizer(vgg, v_vgg, steps=steps, optimizer="adam", learning_rate=0.02, shard=False)
            _runs[f"style {dtype}"] = lambda opt=opt, o=objective: jax.block_until_ready(
                opt.run(o, content[None]).images)
            net = jaxcnn.create_model("googlenet", aux_logits=False, dtype=dtype)
            dream = InputOptimizer(net, v_net, steps=steps, optimizer="normalized_sgd", learning_rate=0.01,
                                   transforms=(Jitter(16),), shard=False)
            _runs[f"dream {dtype}"] = lambda d=dream: jax.block_until_ready(
                d.run(O.layer_l2("inception4c"), content[None]).images)
            r18 = jaxcnn.create_model("resnet18", dtype=dtype)
            _runs[f"pgd {dtype}"] = lambda m=r18: jax.block_until_ready(
                pgd(m, v_r18, xb, yb, eps=4 / 255, steps=steps).images)
        compile_s = {}
        for label, fn in _runs.items():     # compile: the first call minus a warm one
            first = harness.timed_once(fn)
            compile_s[label] = max(first - harness.timed_once(fn), 0.0)
        return {"compile_s": compile_s, "versions": harness.versions()}

    serve({"setup": setup, "time": lambda label: {"seconds": harness.timed_once(_runs[label])}})


def torch_worker() -> None:
    import torch
    import torchvision

    from benchmarks import torch_loops as T
    assert T.STYLE == STYLE
    torch.set_num_threads(os.cpu_count() or 1)

    def setup(size: int, steps: int, batch: int, tmp: str, dtypes: list) -> dict:
        data = np.load(os.path.join(tmp, "data.npz"))
        content = torch.from_numpy(data["content"].transpose(2, 0, 1)[None].copy())
        xb, yb = torch.from_numpy(data["xb"].transpose(0, 3, 1, 2).copy()), torch.from_numpy(data["yb"])
        vgg_file = os.path.join(tmp, "vgg19.npz")
        vgg = T.load_model("vgg19", vgg_file)
        saved = np.load(vgg_file)
        target = torch.from_numpy(saved["content_target"].transpose(0, 3, 1, 2).copy())
        grams = {name: torch.from_numpy(saved[f"gram_{name}"]) for name in STYLE}
        net = T.load_model("googlenet", os.path.join(tmp, "googlenet.npz"), aux_logits=False, init_weights=False)
        r18 = T.load_model("resnet18", os.path.join(tmp, "resnet18.npz"))
        gen = torch.Generator().manual_seed(0)
        eps = 4 / 255
        for label in dtypes:
            bf16 = label == "bfloat16"
            def autocast(fn, bf16=bf16):
                def run():
                    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                        fn()
                return run
            _runs[f"style {label}"] = autocast(lambda: T.torch_style(vgg, content, grams, target, steps, 0.02, 1e3))
            _runs[f"dream {label}"] = autocast(lambda: T.torch_dream(net, content, steps, 0.01, 16, gen))
            _runs[f"pgd {label}"] = autocast(lambda: T.torch_pgd(r18, xb, yb, eps, 2.5 * eps / steps, steps))
        for fn in _runs.values():    # warm-up
            fn()
        return {"torch": torch.__version__, "torchvision": torchvision.__version__}

    serve({"setup": setup, "time": lambda label: {"seconds": harness.timed_once(_runs[label])}})


NAMES = {"style": "style transfer (VGG-19, Adam)", "dream": "DeepDream (GoogLeNet inception4c)",
         "pgd": "PGD (ResNet-18, batch {batch})"}


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    harness.add_torch_python(ap)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="PGD batch")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                    help="default: both where the CPU multiplies bfloat16 natively (AVX512-BF16, AMX), else "
                         "float32 (PyTorch's emulated bfloat16 autocast runs several times slower than float32)")
    ap.add_argument("--worker", choices=["jax", "torch"], help="(internal) serve one framework's loops")
    args = ap.parse_args(argv)
    if args.worker:
        return jax_worker() if args.worker == "jax" else torch_worker()
    dtypes = args.dtypes or (["float32", "bfloat16"] if harness.bf16_native() else ["float32"])
    torch_python = harness.torch_python(args.torch_python)
    jw, tw = Worker(MODULE, "jax"), Worker(MODULE, "torch", torch_python)
    with tempfile.TemporaryDirectory() as tmp:
        js = jw("setup", size=args.size, steps=args.steps, batch=args.batch, tmp=tmp, dtypes=dtypes)
        ts = tw("setup", size=args.size, steps=args.steps, batch=args.batch, tmp=tmp, dtypes=dtypes)
    labels = list(js["compile_s"])
    times = {(w, label): [] for w in ("jax", "torch") for label in labels}
    for r in range(args.repeats):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            for w, worker in (("jax", jw), ("torch", tw))[:: 1 if r % 2 == 0 else -1]:
                times[w, label].append(worker("time", label=label)["seconds"])
    jw.close()
    tw.close()
    rows = []
    for label in labels:
        workload, dtype = label.split()
        j, t = (statistics.median(times[w, label]) for w in ("jax", "torch"))
        t32 = statistics.median(times.get(("torch", f"{workload} float32"), [float("nan")]))
        rows.append({"workload": NAMES[workload].format(batch=args.batch), "dtype": dtype,
                     "jax_s_per_step": j / args.steps, "torch_s_per_step": t / args.steps, "speed_ratio": t / j,
                     "speed_ratio_vs_torch_f32": t32 / j, "jax_compile_s": js["compile_s"][label],
                     "jax_runs_s": times["jax", label], "torch_runs_s": times["torch", label]})
    versions = {**js["versions"], "torch": ts["torch"], "torchvision": ts["torchvision"]}
    meta = {"size": args.size, "steps": args.steps, "repeats": args.repeats, "batch": args.batch, "dtypes": dtypes}
    path = harness.write_result(f"inputopt_vs_torch_{args.size}", MODULE, argv, rows, out=args.out,
                                settings=harness.settings(args), extra={"meta": meta}, known_versions=versions)
    cpu = harness.machine()["cpu"]
    print(f"\n{cpu}; jax {versions['jax']}, torch {versions['torch']}; {args.size} px, {args.steps} steps\n")
    print("| workload | dtype (jaxcnn model / PyTorch autocast) | jaxcnn s/step | PyTorch s/step | jaxcnn / PyTorch "
          "same dtype | jaxcnn / PyTorch f32 | jaxcnn compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['dtype']} | {r['jax_s_per_step']:.3f} | {r['torch_s_per_step']:.3f} | "
              f"{r['speed_ratio']:.2f}x | {r['speed_ratio_vs_torch_f32']:.2f}x | {r['jax_compile_s']:.1f} |")
    return path


if __name__ == "__main__":
    main()
