"""Renders the pictures of docs/inputopt.md (docs/images/*.png). No downloads: no pretrained ImageNet weights
exist offline, so the ImageNet-size models here have random weights (GoogLeNet's batch norms calibrated on
the sample photos, see ``calibrated``) and the digits model is trained on the spot; the captions say which
is which. Each run prints what the optimisations changed (objective, losses, largest pixel change).

    python docs/make_pictures.py                  # all of them: several minutes on 2 CPU cores
    python docs/make_pictures.py dream style      # some of them
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jaxcnn  # noqa: E402
from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos  # noqa: E402
from jaxcnn.imagenet import preprocess  # noqa: E402
from jaxcnn.inputopt.dream import deepdream, dream_change, invert, visualize_classes  # noqa: E402
from jaxcnn.inputopt.style import style_transfer  # noqa: E402
from jaxcnn.viz import image_grid, save_png  # noqa: E402
from tests.trained_digits import SIZE, digits_classifier  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "images")


def calibrated(model, variables, images):
    """``variables`` with every batch norm's running statistics set to those of ``images``.

    A randomly initialised GoogLeNet (torchvision's init: std 0.01 kernels) with the initial running
    statistics (mean 0, variance 1) shrinks its activations by orders of magnitude per layer, so
    inception4c's are near zero; with the statistics of real photos each layer's output is
    normalised again, as in training mode, and the objective responds to the image."""
    _, updates = model.apply(variables, preprocess(jnp.asarray(images)), train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})
    momentum = 0.9   # jaxcnn.layers.batch_norm: running = momentum * running + (1 - momentum) * batch
    batch = jax.tree.map(lambda new, old: (new - momentum * old) / (1 - momentum), updates["batch_stats"],
                         variables["batch_stats"])
    return {**variables, "batch_stats": batch}


def photo(name, size):
    return center_crop(resize_shorter(sample_photos()[name], size), size)


def main(which):
    if "visualize" in which:
        model, variables, *_ = digits_classifier()
        res = visualize_classes(model, variables, list(range(10)), size=SIZE, steps=200, tv_weight=0.05)
        save_png(f"{OUT}/visualize_digits.png", image_grid(res.images, cols=10, scale=6,
                                                           labels=[str(i) for i in range(10)]))
    if "dream" in which:
        net = jaxcnn.create_model("googlenet", aux_logits=False)
        photos = np.stack([photo(n, 224) for n in ("chelsea", "coffee", "astronaut")])
        v = calibrated(net, jaxcnn.init_variables(net, 64), photos)
        x = photos[:1]
        out = deepdream(net, v, x, "inception4c", octaves=4, steps_per_octave=10, learning_rate=0.01)
        print("dream", dream_change(net, v, x, out, "inception4c"))
        save_png(f"{OUT}/dream.png", image_grid(np.concatenate([x, np.asarray(out)]), cols=2))
    if "invert" in which:
        vgg = jaxcnn.create_model("vgg16")
        v = jaxcnn.init_variables(vgg, 32)
        x = photo("astronaut", 96)[None]
        pics = [x[0]]
        for layer in ("conv2_2", "conv3_3", "conv5_1"):
            res, b, a = invert(vgg, v, x, layer, steps=300, tv_weight=1e-2)
            pics.append(np.asarray(res.images[0]))
            print(layer, b, a)
        save_png(f"{OUT}/invert.png", image_grid(np.stack(pics), cols=4, scale=2,
                                                 labels=["photo", "conv2_2", "conv3_3", "conv5_1"]))
    if "style" in which:
        vgg = jaxcnn.create_model("vgg19")
        v = jaxcnn.init_variables(vgg, 32)
        content, style = photo("astronaut", 128), photo("coffee", 128)
        # a random VGG-19's Gram matrices are small (a style loss near 1e-5 here): with the command's default
        # style weight (1e3) the content term holds the photo where it is; 1e7 lets the style move it
        out = style_transfer(vgg, v, content, [style], steps=100, optimizer="lbfgs", style_weight=1e7)
        print("style: content loss", out.content_loss, "style loss", out.style_loss,
              f"largest pixel change {out.max_change:.0f}/255")
        save_png(f"{OUT}/style.png", image_grid(np.stack([content, style, np.asarray(out.images[0])]), cols=3,
                                                scale=2, labels=["content", "style", "result"]))
    if "attack" in which:
        attack_pictures()
    if "explain" in which:
        explain_pictures()


def attack_pictures():
    from jaxcnn.inputopt import attacks as A
    from jaxcnn.inputopt.fooling import fool_evolution, fool_gradient
    from jaxcnn.inputopt.robustness import markdown_table, plot_robustness, robustness_curve
    model, variables, x, y, clean = digits_classifier()
    eps = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
    curves = {name: robustness_curve(model, variables, x, y, attack=name, epsilons=eps, **kw)
              for name, kw in (("fgsm", {}), ("pgd", {"steps": 10}))}
    plot_robustness(curves, f"{OUT}/robustness.png")
    for name, rows in curves.items():
        print(markdown_table(rows, name))
    res = A.pgd(model, variables, x[:6], y[:6], eps=8 / 255, steps=10)
    delta = np.asarray(res.images) - x[:6]
    tiles = np.concatenate([x[:6], 0.5 + 0.5 * delta / np.abs(delta).max(), np.asarray(res.images)])
    labels = [f"{t}" for t in y[:6]] + ["x16"] * 6 + [f"-> {p}" for p in res.predictions]
    save_png(f"{OUT}/attack_digits.png", image_grid(tiles, cols=6, scale=6, labels=labels))
    fg = fool_gradient(model, variables, np.arange(10), size=SIZE, steps=100)
    ev = fool_evolution(model, variables, np.arange(10), size=SIZE, encoding="cppn", population=64, generations=300)
    labels = [f"{c}:{p:.3f}" for c, p in list(enumerate(fg.confidence)) + list(enumerate(ev.confidence))]
    save_png(f"{OUT}/fooling.png", image_grid(np.concatenate([np.asarray(fg.images), np.asarray(ev.images)]), cols=10,
                                              scale=6, labels=labels))


def explain_pictures():
    from jaxcnn.inputopt import objectives as O
    from jaxcnn.inputopt.attribution import input_gradient, integrated_gradients, occlusion
    from jaxcnn.inputopt.inspection import as_kernels, patch_factorizations, sample_patches
    from jaxcnn.viz import filter_mosaic, heatmap_overlay
    model, variables, x, y, _ = digits_classifier()
    tiles, labels = [], []
    for i in range(4):
        occ = occlusion(model, variables, x[i], int(y[i]), size=4, stride=1)
        unit = O.class_logit(int(y[i]))
        guided = np.abs(np.asarray(input_gradient(model, variables, x[i:i + 1], unit, "guided"))[0]).max(-1)
        ig = np.abs(np.asarray(integrated_gradients(model, variables, x[i:i + 1], unit))[0]).max(-1)
        tiles += [x[i]] + [heatmap_overlay(x[i], m) / 255.0 for m in (1 - occ, guided, ig)]
        labels += [str(y[i]), "occlusion", "guided", "IG"]
    save_png(f"{OUT}/explain_digits.png", image_grid(np.stack(tiles), cols=4, scale=6, labels=labels))
    from jaxcnn.inputopt.inspection import top_patches
    top = top_patches(model, variables, x, "block1", 5, k=6)
    tiles = []
    for i, pos, (y0, y1, x0, x1) in zip(top.index, top.position, top.box):
        unit = O.neuron("block1", 5, y=int(pos[0]), x=int(pos[1]))
        g = np.asarray(input_gradient(model, variables, x[i:i + 1], unit, "deconvnet"))[0]
        tiles += [x[i], np.pad(x[i, y0:y1, x0:x1], ((0, SIZE - (y1 - y0)), (0, SIZE - (x1 - x0)), (0, 0)),
                               constant_values=1.0), 0.5 + 0.5 * g / max(np.abs(g).max(), 1e-12)]
    save_png(f"{OUT}/top_patches.png", image_grid(np.stack(tiles), cols=6, scale=5))
    photos = [photo(n, 256) for n in ("astronaut", "coffee", "chelsea")]
    patches = sample_patches(photos, 8, 20000)
    fac = patch_factorizations(patches, 36)
    panels = [filter_mosaic(as_kernels(fac[k], 8), cols=6, scale=4) for k in ("pca", "ica", "dictionary")]
    h = max(p.shape[0] for p in panels)
    save_png(f"{OUT}/patch_factorizations.png", np.concatenate(
        [np.pad(p, ((0, h - p.shape[0]), (0, 10), (0, 0)), constant_values=255) for p in panels], axis=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["visualize", "dream", "invert", "style", "attack", "explain"])
