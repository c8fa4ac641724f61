"""jaxcnn's Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions (``jaxcnn.cpu.winograd``) against oneDNN's
direct ones, float32.

``--layers``: per 3x3 or 5x5 convolution of VGG-16, AlexNet, GoogLeNet, ResNet-50 and Inception-v3 (and the
batch-1 layers of style transfer at 128 px; ``--only TEXT`` keeps the layers whose name contains TEXT),
the forward and the input gradient, the lowerings timed alternating (median of ``--repeats``):
direct, Winograd, and Winograd from the kernel's transforms made beforehand ("transformed", as
``winograd.with_transforms`` gives them to fixed weights); "not taken" marks the layers that
``winograd.eligible`` (``eligible_transformed``) leaves to the direct convolution, timed here all the
same. ``--models``: each model's inference and SGD-momentum train step (224 px)
compiled three ways in this process (direct; Winograd for 3x3 kernels only; for 3x3 and 5x5), then
timed alternating. ``--style``: the same for
the float32 style-transfer loop of ``inputopt_vs_torch.py``. ``--fixed``: its float32 style, DeepDream
and PGD loops with the kernels' transforms made once (``winograd.with_transforms``) and without.

    python benchmarks/winograd.py --layers --models vgg16:8 alexnet:32 googlenet:16 resnet50:16 --style --repeats 5
    python benchmarks/winograd.py --fixed --repeats 7
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cpu import host_memory, policy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved import interleaved_ms, train_steps_ab  # noqa: E402

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


def layers(repeats: int, only: str = "") -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.cpu import onednn, policy, winograd

    print("| layer (batch) | GFLOP | forward ms direct / Winograd / transformed | "
          "input gradient ms direct / Winograd / transformed |")
    print("|---|---|---|---|")
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
        ms = interleaved_ms({(k, p): (lambda f=f: f(x, w)) for p, fs in (("fwd", fwd), ("bwd", bwd))
                             for k, f in fs.items()}, repeats)
        use = "" if winograd.eligible(x, w, (1, 1), pads, (1, 1), 1) else " (not taken)"
        if not winograd.eligible_transformed(x, w, (1, 1), pads, (1, 1), 1):
            use += " (transformed: not taken)"
        print(f"| {name}{use} ({n}) | {2 * n * hw * hw * c * o * r * r / 1e9:.2f} | "
              + " | ".join(" / ".join(f"{ms[k, p]:.1f}" for k in convs) for p in ("fwd", "bwd")) + " |", flush=True)


def models(specs: list[str], repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcnn
    from jaxcnn.cpu import policy, winograd
    from jaxcnn.model_stats import init_variables

    never = float("inf")     # a kernel size whose MIN_TILES is never reached stays direct
    rule = dict(winograd.MIN_TILES)
    variants = {"direct": {3: never, 5: never}, "3x3": {**rule, 5: never}, "3x3+5x5": rule}
    cols = " / ".join(variants)
    print(f"| model (batch) | inference img/s {cols} | train img/s {cols} | train compile s {cols} |")
    print("|---|---|---|---|")
    for spec in specs:
        name, batch = spec.split(":")
        batch = int(batch)
        extra = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
        model = jaxcnn.create_model(name, **extra)
        variables = init_variables(model, 224, seed=0, batch=1)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 224, 224, 3)), jnp.float32)
        infer = {}
        try:
            for label, tiles in variants.items():
                winograd.MIN_TILES = tiles
                infer[label] = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
        finally:
            winograd.MIN_TILES = rule
        ms = interleaved_ms({k: (lambda f=f: f(variables, x)) for k, f in infer.items()}, repeats)
        train = train_steps_ab(name, batch, "float32", "MIN_TILES", variants, repeats, module=winograd)
        row = [" / ".join(f"{batch / ms[k] * 1e3:.2f}" for k in variants),
               " / ".join(f"{train[k][1]:.2f}" for k in variants), " / ".join(f"{train[k][0]:.1f}" for k in variants)]
        print(f"| {name} ({batch}) | " + " | ".join(row) + " |", flush=True)


def style(repeats: int, size: int = 128, steps: int = 10) -> None:
    """The float32 style-transfer loop of ``inputopt_vs_torch.py`` (VGG-19, Adam), with and without."""
    from inputopt_loops import style_run

    from jaxcnn.cpu import policy, winograd

    runs = {}
    for label, on in (("direct", False), ("winograd", True)):
        policy._winograd = on      # read when the loop's step is traced, i.e. on the first run
        runs[label] = style_run(size, steps)
        runs[label]()
    policy._winograd = True
    ms = interleaved_ms(runs, repeats)
    print(f"style transfer, VGG-19, {size} px, s/step direct / Winograd: "
          f"{ms['direct'] / steps / 1e3:.3f} / {ms['winograd'] / steps / 1e3:.3f}", flush=True)


def fixed(repeats: int, size: int = 128, steps: int = 10, batch: int = 8) -> None:
    """The float32 input-optimisation loops of ``inputopt_vs_torch.py`` with the kernels' transforms made
    once (``winograd.with_transforms``, as ``InputOptimizer`` and the attacks do) and without."""
    from inputopt_loops import dream_run, pgd_run, style_run

    from jaxcnn.cpu import policy, winograd

    real = winograd.with_transforms
    without = lambda variables, **_: variables  # noqa: E731

    def switched(run, on):          # with_transforms is read on each attack call, and on a loop's first run
        def call():
            winograd.with_transforms = real if on else without
            try:
                return run()
            finally:
                winograd.with_transforms = real
        return call

    loops = {"style transfer (VGG-19)": lambda: style_run(size, steps),
             "DeepDream (GoogLeNet)": lambda: dream_run(size, steps),
             f"PGD (ResNet-18, batch {batch})": lambda: pgd_run(size, steps, batch=batch)}
    print(f"| float32 loop, {size} px | ms/step without / with the transforms | speed-up |")
    print("|---|---|---|")
    for name, make in loops.items():
        runs = {on: switched(make(), on) for on in (False, True)}
        for run in runs.values():
            run()
        ms = interleaved_ms(runs, repeats)
        print(f"| {name} | {ms[False] / steps:.1f} / {ms[True] / steps:.1f} | {ms[False] / ms[True]:.2f}x |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--models", nargs="*", default=[], metavar="MODEL:BATCH")
    ap.add_argument("--style", action="store_true", help="the float32 style-transfer loop at 128 px")
    ap.add_argument("--fixed", action="store_true",
                    help="the float32 style, DeepDream and PGD loops with and without the kernels' transforms")
    ap.add_argument("--only", default="", metavar="TEXT", help="--layers: those whose name contains TEXT")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    if args.layers:
        layers(args.repeats, args.only)
    if args.models:
        models(args.models, args.repeats)
    if args.style:
        style(args.repeats)
    if args.fixed:
        fixed(args.repeats)


if __name__ == "__main__":
    main()
