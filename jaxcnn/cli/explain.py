"""``jaxcnn explain``: attribution maps, Grad-CAM, deconvnet views, top patches and filter mosaics (PNG + raw .npy)."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jaxcnn.cli.loading import add_model_args, dataset_name, load_dataset, load_images, load_model

GRADIENT_METHODS = ("saliency", "deconvnet", "guided", "ig", "smoothgrad")
CAM_METHODS = ("gradcam", "guidedgradcam")


def _unit_for(args, model, variables, image, label):
    """The unit to explain: a class logit, or the arg-max position of --layer/--channel in this image."""
    from jaxcnn.inputopt import objectives as O
    if args.layer is None:
        return O.class_logit(int(label)), f"class {label}"
    from jaxcnn.inputopt.inspection import channel_maps
    m = channel_maps(model, variables, image[None], args.layer, args.channel)[0]
    y, x = np.unravel_index(m.argmax(), m.shape)
    return O.neuron(args.layer, args.channel, y=int(y), x=int(x)), f"{args.layer}:{args.channel}@({y},{x})"


def _grad_cam(args, model, variables, image, label):
    """Grad-CAM (raw map at the layer's resolution) or guided Grad-CAM (H, W, 3), and the heat map to draw."""
    from jaxcnn.inputopt import gradcam
    from jaxcnn.inputopt import objectives as O
    unit, x = O.class_logit(int(label)), image[None]
    if args.method == "gradcam":
        raw = gradcam.grad_cam(model, variables, x, unit, args.layer)[0]
        return raw, gradcam.upsample(raw[None], image.shape[:2], "bilinear")[0]
    raw = gradcam.guided_grad_cam(model, variables, x, unit, args.layer)[0]
    return raw, np.abs(raw).max(axis=-1)


def _explain_images(args, loaded) -> None:
    import jax

    from jaxcnn.inputopt import attribution as at
    from jaxcnn.inputopt.attacks import clean_logits
    from jaxcnn.viz import heatmap_overlay, image_grid, save_png

    model, variables, size = loaded.model, loaded.variables, loaded.size
    names, x = load_images(args.images, size)
    if args.method in CAM_METHODS and args.layer is None:
        from jaxcnn.inputopt.gradcam import default_layer
        args.layer = default_layer(model, variables, x.shape)
        print(f"{args.method} at {args.layer} (the last spatial layer; --layer picks another)")
    probs = np.asarray(jax.nn.softmax(clean_logits(model, variables, x)))
    tiles, captions = [], []
    for i, name in enumerate(names):
        label = args.label if args.label is not None else int(probs[i].argmax())
        t0 = time.perf_counter()
        if args.method == "occlusion":
            raw = at.occlusion(model, variables, x[i], label, size=args.occluder, stride=args.stride, fill=args.fill)
            what = f"p({label}) occluded"
            heat = 1.0 - raw / max(probs[i, label], 1e-12)      # how much covering each place costs
        elif args.method in CAM_METHODS:
            raw, heat = _grad_cam(args, model, variables, x[i], label)
            what = f"class {label} at {args.layer}"
        else:
            unit, what = _unit_for(args, model, variables, x[i], label)
            if args.method == "ig":
                raw = np.asarray(at.integrated_gradients(model, variables, x[i:i + 1], unit))[0]
            elif args.method == "smoothgrad":
                raw = np.asarray(at.smoothgrad(model, variables, x[i:i + 1], unit))[0]
            else:
                raw = np.asarray(at.input_gradient(model, variables, x[i:i + 1], unit, args.method))[0]
            heat = np.abs(raw).max(axis=-1)
        np.save(os.path.join(args.out, f"{name}_{args.method}.npy"), raw)
        overlay = heatmap_overlay(x[i], heat)
        save_png(os.path.join(args.out, f"{name}_{args.method}.png"), overlay)
        tiles += [x[i], overlay.astype(np.float32) / 255]
        captions += [name, f"{args.method}: {what}"]
        print(f"{name}: {args.method} of {what} in {time.perf_counter() - t0:.2f} s")
    save_png(os.path.join(args.out, f"{args.method}.png"),
             image_grid(np.stack(tiles), cols=2, labels=captions, scale=max(1, 128 // size)))


def _explain_top_patches(args, loaded) -> None:
    from jaxcnn.inputopt import objectives as O
    from jaxcnn.inputopt.attribution import input_gradient
    from jaxcnn.inputopt.inspection import top_patches
    from jaxcnn.viz import image_grid, save_png

    if args.layer is None:
        raise ValueError("top-patches needs --layer and --channel")
    model, variables = loaded.model, loaded.variables
    images, _, _ = load_dataset(dataset_name(args, loaded, "digits"), "test", loaded.size, limit=args.limit,
                                run=loaded.run)
    top = top_patches(model, variables, images, args.layer, args.channel, k=args.k, progress=True)
    h = max(b[1] - b[0] for b in top.box)
    w = max(b[3] - b[2] for b in top.box)
    tiles = []
    for i, pos, (y0, y1, x0, x1) in zip(top.index, top.position, top.box):
        unit = O.neuron(args.layer, args.channel, y=int(pos[0]), x=int(pos[1]))
        g = np.asarray(input_gradient(model, variables, images[i:i + 1], unit, "deconvnet"))[0, y0:y1, x0:x1]
        g = 0.5 + 0.5 * g / max(np.abs(g).max(), 1e-12)
        for im in (images[i, y0:y1, x0:x1], g):
            tile = np.ones((h, w, 3), np.float32)
            tile[: im.shape[0], : im.shape[1]] = im
            tiles.append(tile)
    save_png(os.path.join(args.out, f"top_patches_{args.layer}_{args.channel}.png"),
             image_grid(np.stack(tiles), cols=6, scale=max(1, 48 // max(h, w))))
    np.save(os.path.join(args.out, f"top_patches_{args.layer}_{args.channel}.npy"),
            np.concatenate([top.index[:, None], top.position, top.box], axis=1))
    print(f"top {len(top.index)} patches of {args.layer}:{args.channel} over {len(images)} images "
          f"(activations {top.value.min():.3g}..{top.value.max():.3g}) -> {args.out}")


def _explain_filters(args, loaded) -> None:
    from jaxcnn.data.image_io import sample_photos
    from jaxcnn.inputopt.inspection import as_kernels, first_layer, patch_factorizations, sample_patches
    from jaxcnn.viz import filter_mosaic, save_png

    kernels = first_layer(loaded.variables)
    k, n = kernels.shape[0], min(kernels.shape[-1], args.k_filters)
    photos = list(sample_photos().values()) if not args.images else [im for im in load_images(args.images, 256)[1]]
    patches = sample_patches(photos, k, args.patches)
    fac = patch_factorizations(patches, n)
    panels = {"first_layer": kernels[..., :n], "pca": as_kernels(fac["pca"], k), "ica": as_kernels(fac["ica"], k),
              "dictionary": as_kernels(fac["dictionary"], k)}
    cols = int(np.ceil(np.sqrt(n)))
    mosaics = {name: filter_mosaic(kern, cols=cols, scale=max(1, 48 // k)) for name, kern in panels.items()}
    for name, m in mosaics.items():
        save_png(os.path.join(args.out, f"filters_{name}.png"), m)
    hmax = max(m.shape[0] for m in mosaics.values())
    side = np.concatenate([np.pad(m, ((0, hmax - m.shape[0]), (0, 8), (0, 0)), constant_values=255)
                           for m in mosaics.values()], axis=1)
    save_png(os.path.join(args.out, "filters_vs_factorizations.png"), side)
    print(f"{n} first-layer {k}x{k} kernels of {args.model} beside PCA, ICA and dictionary atoms of {len(patches)} "
          f"{k}x{k} patches -> {args.out}/filters_vs_factorizations.png (left to right)")


def _cmd_explain(args: argparse.Namespace) -> None:
    loaded = load_model(args)
    if args.method == "top-patches":
        _explain_top_patches(args, loaded)
    elif args.method == "filters":
        _explain_filters(args, loaded)
    else:
        _explain_images(args, loaded)


def add_commands(sub) -> None:
    """Registers ``explain`` on the ``jaxcnn`` parser."""
    p = sub.add_parser("explain", help="attribution maps, deconvnet views, top patches, filter mosaics")
    add_model_args(p, "alexnet")
    p.add_argument("images", nargs="*", help="image files (default: scikit-image's sample photos)")
    p.add_argument("--method", default="occlusion",
                   choices=["occlusion", *GRADIENT_METHODS, *CAM_METHODS, "top-patches", "filters"])
    p.add_argument("--label", type=int, help="class to explain (default: the predicted class)")
    p.add_argument("--layer", help="gradient methods: explain a unit of this layer instead of a class (with "
                   "--channel); gradcam, guidedgradcam: the layer of the map (default: the last spatial one)")
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--occluder", type=int, default=32, help="occluder side in pixels")
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--fill", type=float, default=0.5, help="occluder grey level in [0, 1]")
    p.add_argument("--dataset", help="data set searched by top-patches (default: the --checkpoint run's, else digits)")
    p.add_argument("--limit", type=int)
    p.add_argument("--k", type=int, default=9, help="top-patches: how many")
    p.add_argument("--k-filters", type=int, default=64, help="filters: how many kernels and atoms")
    p.add_argument("--patches", type=int, default=20000, help="filters: photo patches to factorise")
    p.add_argument("--out", default="out/explain")
    p.set_defaults(func=_cmd_explain)
