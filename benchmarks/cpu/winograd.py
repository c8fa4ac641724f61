"""jaxcnn's Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions (``jaxcnn.cpu.winograd``) against oneDNN's
direct ones, float32.

``--layers``: per 3x3 or 5x5 convolution of VGG-16, AlexNet, GoogLeNet, ResNet-50 and Inception-v3 (and the
batch-1 layers of style transfer at 128 px; ``--only TEXT`` keeps the layers whose name contains TEXT),
the forward and the input gradient, the lowerings timed alternating (median of ``--repeats``):
direct, Winograd, and Winograd from the kernel's transforms made beforehand ("transformed", as
``winograd.with_transforms`` gives them to fixed weights); "not taken" marks the layers that
``winograd.eligible`` (``eligible_transformed``) leaves to the direct convolution, timed all the same:
the layers behind ``winograd.MIN_TILES`` and ``MIN_CHANNELS``. ``--models``: each model's inference and
SGD-momentum train step (224 px) compiled three ways in this process (direct, ``cpu.winograd_disabled()``;
Winograd for 3x3 kernels only, ``policy.disabled("winograd_5x5")``; for 3x3 and 5x5), then timed
alternating. ``--style``: the float32 style-transfer loop of ``benchmarks.inputopt_loops`` with and
without Winograd. ``--fixed``: its float32 style, DeepDream and PGD loops with the kernels' transforms
made once (``cpu.fixed_weights``) and without (``policy.disabled("fixed_weights")``).

    python -m benchmarks.cpu.winograd --layers --models vgg16:8 alexnet:32 googlenet:16 resnet50:16 --style --repeats 5
    python -m benchmarks.cpu.winograd --fixed --repeats 7
"""

from __future__ import annotations

import contextlib
import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.winograd"
LAYERS = [  # (name, batch, H = W, C in, C out[, kernel size, 3 if not given])
    ("VGG-16 conv1_2", 8, 224, 64, 64), ("VGG-16 conv2_2", 8, 112, 128, 128),
    ("VGG-16 conv3_2", 8, 56, 256, 256), ("VGG-16 conv4_2", 8, 28, 512, 512),
    ("VGG-16 conv5_2", 8, 14, 512, 512), ("AlexNet conv3", 32, 13, 192, 384),
    ("AlexNet conv4", 32, 13, 384, 256), ("GoogLeNet 3a 3x3", 16, 28, 96, 128),
    ("GoogLeNet 4a 3x3", 16, 14, 96, 208), ("GoogLeNet 5b 3x3", 16, 7, 192, 384),
    ("ResNet-50 layer1 3x3", 16, 56, 64, 64), ("ResNet-50 layer3 3x3", 16, 14, 256, 256),
    ("ResNet-50 layer4 3x3", 16, 7, 512, 512), ("style VGG-19 conv2_1", 1, 64, 128, 128),
    ("style VGG-19 conv1_2", 1, 128, 64, 64), ("style VGG-19 conv3_2", 1, 32, 256, 256),
    ("style VGG-19 conv4_2", 1, 16, 512, 512),
    ("style VGG-19 conv5_1", 1, 8, 512, 512), ("PGD ResNet-18 layer1", 8, 32, 64, 64),
    ("PGD ResNet-18 layer2", 8, 16, 128, 128), ("PGD ResNet-18 layer3", 8, 8, 256, 256),
    ("PGD ResNet-18 layer4", 8, 4, 512, 512), ("DeepDream GoogLeNet 3a 3x3", 1, 16, 96, 128),
    ("DeepDream GoogLeNet 4a 3x3", 1, 8, 96, 208), ("DeepDream GoogLeNet 4a 3x3 '5x5'", 1, 8, 16, 48),
    ("DeepDream GoogLeNet 5b 3x3", 1, 4, 192, 384), ("style 512 channels at 4x4", 1, 4, 512, 512),
    ("AlexNet conv2 5x5", 32, 27, 64, 192, 5),
    ("AlexNet conv2 5x5", 8, 27, 64, 192, 5), ("AlexNet conv2 5x5", 1, 27, 64, 192, 5),
    ("Inception-v3 Mixed_5b 5x5", 16, 35, 48, 64, 5), ("Inception-v3 Mixed_5b 5x5", 1, 35, 48, 64, 5),
    ("5x5 512 channels", 8, 14, 512, 512, 5), ("5x5 512 channels", 1, 14, 512, 512, 5)]


def layers(repeats: int, only: str = "") -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.cpu import onednn, winograd

    rows = []
    for name, n, hw, c, o, *k in LAYERS:
        if only not in name:
            continue
        r = k[0] if k else 3
        pads = ((r // 2, r // 2),) * 2
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((n, hw, hw, c), np.float32))
        w = jnp.asarray(rng.standard_normal((r, r, c, o), np.float32) / np.sqrt(r * r * c))
        g = jnp.asarray(rng.standard_normal((n, hw, hw, o), np.float32))
        u, ut = winograd.transform(w), winograd.transform(w, flip=True)
        convs = {"direct": lambda x, w: onednn.conv(x, w, (1, 1), pads),
                 "winograd": lambda x, w: winograd.conv(x, w, pads),
                 "transformed": lambda x, w: winograd.conv_transformed(x, w, u, ut, pads)}
        fwd = {k: jax.jit(f) for k, f in convs.items()}
        bwd = {k: jax.jit(lambda x, w, f=f: jax.vjp(lambda x: f(x, w), x)[1](g)[0]) for k, f in convs.items()}
        t = harness.interleaved({(k, p): (lambda f=f: f(x, w)) for p, fs in (("fwd", fwd), ("bwd", bwd))
                                 for k, f in fs.items()}, repeats)
        rows.append({"layer": name, "batch": n, "size": hw, "in": c, "out": o, "kernel": r,
                     "gflop": 2 * n * hw * hw * c * o * r * r / 1e9,
                     "taken": winograd.eligible(x, w, (1, 1), pads, (1, 1), 1),
                     "transformed_taken": winograd.eligible_transformed(x, w, (1, 1), pads, (1, 1), 1),
                     **{f"{k} {p} ms": v.ms for (k, p), v in t.items()},
                     "timing": {f"{k} {p}": v for (k, p), v in t.items()}})
    print(harness.markdown(
        ["layer (batch)", "GFLOP", "forward ms direct / Winograd / transformed",
         "input gradient ms direct / Winograd / transformed"],
        [[f"{r['layer']}{'' if r['taken'] else ' (not taken)'}"
          f"{'' if r['transformed_taken'] else ' (transformed: not taken)'} ({r['batch']})", f"{r['gflop']:.2f}",
          *(" / ".join(f"{r[f'{k} {p} ms']:.1f}" for k in ("direct", "winograd", "transformed"))
            for p in ("fwd", "bwd"))]
         for r in rows]))
    return rows


def _variants():
    from jaxcnn import cpu
    from jaxcnn.cpu import policy

    return {"direct": cpu.winograd_disabled, "3x3": lambda: policy.disabled("winograd_5x5"),
            "3x3+5x5": contextlib.nullcontext}


def models(specs: list[str], repeats: int, size: int = 224) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcnn
    from jaxcnn.model_stats import init_variables

    variants = _variants()
    rows = []
    for spec in specs:
        name, batch = spec.split(":")
        batch = int(batch)
        extra = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
        model = jaxcnn.create_model(name, **extra)
        variables = init_variables(model, size, seed=0, batch=1)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)), jnp.float32)
        infer = {}
        for label, context in variants.items():
            with context():       # a new function per variant: jax caches traces by function
                infer[label] = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
        t = harness.interleaved({k: (lambda f=f: f(variables, x)) for k, f in infer.items()}, repeats)
        train = harness.train_steps(name, batch, "float32", variants, repeats, size=size)
        rows.append({"model": name, "batch": batch, "size": size,
                     **{f"{k} inference img/s": batch / t[k].median for k in variants},
                     **{f"{k} train img/s": train[k]["images_per_s"] for k in variants},
                     **{f"{k} train compile s": train[k]["compile_s"] for k in variants},
                     "timing": {**{f"{k} inference": t[k] for k in variants},
                                **{f"{k} train": train[k]["timing"] for k in variants}}})
    cols = " / ".join(variants)
    print(harness.markdown(
        ["model (batch)", f"inference img/s {cols}", f"train img/s {cols}", f"train compile s {cols}"],
        [[f"{r['model']} ({r['batch']})", *(" / ".join(f"{r[f'{k} {part}']:.2f}" for k in variants)
                                            for part in ("inference img/s", "train img/s", "train compile s"))]
         for r in rows]))
    return rows


def style(repeats: int, size: int = 128, steps: int = 10) -> list[dict]:
    """The float32 style-transfer loop (VGG-19, Adam), with and without Winograd."""
    from benchmarks.inputopt_loops import style_run
    from jaxcnn import cpu

    runs = {"direct": harness.within(cpu.winograd_disabled, style_run(size, steps)),
            "winograd": harness.within(contextlib.nullcontext, style_run(size, steps))}
    t = harness.interleaved(runs, repeats)
    print(f"style transfer, VGG-19, {size} px, s/step direct / Winograd: "
          f"{t['direct'].median / steps:.3f} / {t['winograd'].median / steps:.3f}", flush=True)
    return [{"loop": "style transfer (VGG-19)", "size": size, "convolutions": k, "s_per_step": v.median / steps,
             "timing": v} for k, v in t.items()]


def fixed(repeats: int, size: int = 128, steps: int = 10, batch: int = 8) -> list[dict]:
    """The float32 input-optimisation loops with the kernels' transforms made once (``cpu.fixed_weights``,
    as ``InputOptimizer`` and the attacks do) and without."""
    from benchmarks.inputopt_loops import dream_run, pgd_run, style_run
    from jaxcnn.cpu import policy

    loops = {"style transfer (VGG-19)": lambda: style_run(size, steps),
             "DeepDream (GoogLeNet)": lambda: dream_run(size, steps),
             f"PGD (ResNet-18, batch {batch})": lambda: pgd_run(size, steps, batch=batch)}
    rows = []
    for name, make in loops.items():
        runs = {"without": harness.within(lambda: policy.disabled("fixed_weights"), make()),
                "with": harness.within(contextlib.nullcontext, make())}
        t = harness.interleaved(runs, repeats)
        rows.append({"loop": name, "size": size, "without ms/step": t["without"].ms / steps,
                     "with ms/step": t["with"].ms / steps, "speed_up": t["without"].median / t["with"].median,
                     "timing": t})
    print(harness.markdown([f"float32 loop, {size} px", "ms/step without / with the transforms", "speed-up"],
                           [[r["loop"], f"{r['without ms/step']:.1f} / {r['with ms/step']:.1f}",
                             f"{r['speed_up']:.2f}x"]
                            for r in rows]))
    return rows


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--models", nargs="*", default=[], metavar="MODEL:BATCH")
    ap.add_argument("--style", action="store_true", help="the float32 style-transfer loop at 128 px")
    ap.add_argument("--fixed", action="store_true",
                    help="the float32 style, DeepDream and PGD loops with and without the kernels' transforms")
    ap.add_argument("--only", default="", metavar="TEXT", help="--layers: those whose name contains TEXT")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if not (args.layers or args.models or args.style or args.fixed):
        ap.error("choose at least one of --layers, --models, --style, --fixed")
    harness.keep_heap(args)
    from jaxcnn.cpu import build

    if not build.available():
        raise SystemExit(f"oneDNN is unavailable: {build.why_unavailable()}")
    rows = []
    for part, run in (("layers", lambda: layers(args.repeats, args.only)),
                      ("models", lambda: models(args.models, args.repeats)),
                      ("style", lambda: style(args.repeats)), ("fixed", lambda: fixed(args.repeats))):
        if getattr(args, part):
            rows += [{"part": part, **r} for r in run()]
    return harness.write_result("winograd", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
