"""The dreaming commands: ``jaxcnn visualize``, ``dream``, ``invert``, ``style`` (writing PNGs)."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from jaxcnn.cli.loading import add_model_args, load_images, load_model


def _cmd_visualize(args: argparse.Namespace) -> None:
    from jaxcnn import class_names
    from jaxcnn.inputopt.dream import visualize_classes
    from jaxcnn.viz import image_grid, save_png

    loaded = load_model(args)
    model, variables, size = loaded.model, loaded.variables, loaded.size
    labels = [int(c) for c in args.classes.split(",")]
    t0 = time.perf_counter()
    res = visualize_classes(model, variables, labels, size=size, steps=args.steps, learning_rate=args.lr,
                            param=args.param, tv_weight=args.tv, l2_weight=args.l2, progress=True)
    names = class_names() if loaded.num_classes == 1000 else None
    captions = [names[c] if names and 0 <= c < 1000 else str(c) for c in labels]
    for c, im in zip(labels, np.asarray(res.images)):
        save_png(os.path.join(args.out, f"class_{c}.png"), im)
    save_png(os.path.join(args.out, "grid.png"), image_grid(res.images, labels=captions,
                                                            scale=max(1, 128 // size)))
    print(f"{len(labels)} class visualizations ({size} px, {args.steps} steps) in {time.perf_counter() - t0:.1f} s "
          f"-> {args.out}/grid.png; mean objective {res.history[0].mean():.3g} -> {res.history[-1].mean():.3g}")


def _cmd_dream(args: argparse.Namespace) -> None:
    import sys

    from jaxcnn.inputopt.dream import deepdream, dream_change
    from jaxcnn.viz import save_png

    loaded = load_model(args)
    model, variables, size = loaded.model, loaded.variables, loaded.size
    names, images = load_images(args.images, size)
    t0 = time.perf_counter()
    out = deepdream(model, variables, images, args.layer, octaves=args.octaves, steps_per_octave=args.steps,
                    learning_rate=args.lr, jitter=args.jitter, progress=True)
    for name, im in zip(names, np.asarray(out)):
        save_png(os.path.join(args.out, f"{name}_dream_{args.layer}.png"), im)
    print(f"dreamed {len(names)} image(s) at {args.layer} in {time.perf_counter() - t0:.1f} s -> {args.out}")
    change = dream_change(model, variables, images, out, args.layer)
    for name, b, a, d in zip(names, change.before, change.after, change.max_change):
        print(f"{name}: objective {b:.4g} -> {a:.4g}, largest pixel change {d:.1f}/255")
    if not change.moved:
        print(f"jaxcnn: warning: the images did not change (every pixel moved by less than 1/255): the objective at "
              f"{args.layer} is flat at these weights (random weights?); the PNGs equal the inputs", file=sys.stderr)


def _cmd_invert(args: argparse.Namespace) -> None:
    from jaxcnn.inputopt.dream import invert
    from jaxcnn.viz import image_grid, save_png

    loaded = load_model(args)
    model, variables, size = loaded.model, loaded.variables, loaded.size
    names, images = load_images(args.images, size)
    report = {}
    for layer in args.layer:
        res, before, after = invert(model, variables, images, layer, steps=args.steps, learning_rate=args.lr,
                                    tv_weight=args.tv, progress=True)
        for name, im, b, a in zip(names, np.asarray(res.images), before, after):
            save_png(os.path.join(args.out, f"{name}_invert_{layer}.png"), im)
            report[f"{name}/{layer}"] = {"distance_start": float(b), "distance_end": float(a)}
            print(f"{name} from {layer}: feature distance {b:.3g} -> {a:.3g}")
    save_png(os.path.join(args.out, "grid.png"), image_grid(images))
    with open(os.path.join(args.out, "invert.json"), "w") as f:
        json.dump(report, f, indent=1)


def _cmd_style(args: argparse.Namespace) -> None:
    import sys

    from jaxcnn.inputopt.style import style_transfer
    from jaxcnn.viz import save_png

    loaded = load_model(args, default_size=256)
    model, variables, size = loaded.model, loaded.variables, loaded.size
    _, content = load_images([args.content], size)
    styles = [load_images([p], args.style_size or size)[1][0] for p in args.styles]
    t0 = time.perf_counter()
    out = style_transfer(model, variables, content[0], styles, style_blend=args.style_blend,
                         content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv,
                         content_layer=args.content_layer, style_layers=tuple(args.style_layers),
                         init=args.init, optimizer=args.optimizer, learning_rate=args.lr, steps=args.steps,
                         preserve_color=args.preserve_color, progress=True)
    path = save_png(os.path.join(args.out, "stylized.png"), np.asarray(out.images[0]))
    print(f"style transfer {size} px, {args.steps} {args.optimizer} steps in {time.perf_counter() - t0:.1f} s "
          f"-> {path}; "
          f"content loss {out.content_loss[0]:.4g} -> {out.content_loss[1]:.4g}, "
          f"style loss {out.style_loss[0]:.4g} -> {out.style_loss[1]:.4g}, "
          f"largest pixel change from the start {out.max_change:.1f}/255")
    if out.max_change < 1:
        print("jaxcnn: warning: the image did not change (every pixel moved by less than 1/255 from where it "
              "started): the losses are flat at these weights (random weights?)", file=sys.stderr)


def add_commands(sub) -> None:
    """Registers the dreaming sub-commands on the ``jaxcnn`` parser."""
    from jaxcnn.inputopt.style import CONTENT_LAYER, STYLE_LAYERS

    p = sub.add_parser("visualize", help="class visualization: images that a model rates as given classes")
    add_model_args(p, "googlenet")
    p.add_argument("--classes", default="1,9,130,309", help="comma-separated class indices")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--param", default="fourier", choices=["fourier", "pixels"])
    p.add_argument("--tv", type=float, default=0.0, help="total-variation weight")
    p.add_argument("--l2", type=float, default=0.0, help="L2 weight")
    p.add_argument("--out", default="out/visualize")
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("dream", help="DeepDream: amplify a layer's activations on photos")
    add_model_args(p, "googlenet")
    p.add_argument("images", nargs="*", help="image files (default: scikit-image's sample photos)")
    p.add_argument("--layer", default="inception4c")
    p.add_argument("--octaves", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="steps per octave")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--jitter", type=int, default=16)
    p.add_argument("--out", default="out/dream")
    p.set_defaults(func=_cmd_dream)

    p = sub.add_parser("invert", help="feature inversion: reconstruct photos from one layer's activations")
    add_model_args(p, "vgg16")
    p.add_argument("images", nargs="*", help="image files (default: scikit-image's sample photos)")
    p.add_argument("--layer", nargs="+", default=["conv2_2", "conv5_1"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--tv", type=float, default=1e-2)
    p.add_argument("--out", default="out/invert")
    p.set_defaults(func=_cmd_invert)

    p = sub.add_parser("style", help="Gatys style transfer: CONTENT in the style of STYLE [STYLE ...]")
    add_model_args(p, "vgg19", size_help="content size (default: the run's with --checkpoint, else 256)")
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", help="style image(s); several are blended")
    p.add_argument("--style-blend", type=float, nargs="+", help="one weight per style image (default equal)")
    p.add_argument("--style-size", type=int, help="style image size (default: the content size)")
    p.add_argument("--content-layer", default=CONTENT_LAYER)
    p.add_argument("--style-layers", nargs="+", default=list(STYLE_LAYERS))
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=1e3)
    p.add_argument("--tv", type=float, default=0.0)
    p.add_argument("--init", default="content", choices=["content", "noise"])
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    p.add_argument("--lr", type=float, default=0.02, help="Adam's learning rate")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--preserve-color", action="store_true", help="keep the content image's colours")
    p.add_argument("--out", default="out/style")
    p.set_defaults(func=_cmd_style)
