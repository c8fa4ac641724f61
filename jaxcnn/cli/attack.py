"""The adversarial commands: ``jaxcnn attack``, ``fool``, ``patch`` (PNGs, pictures and a JSON report)."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from jaxcnn.cli.loading import (add_model_args, choose_model, dataset_batches, dataset_name, dataset_source,
                                in_memory, load_dataset, load_images, load_model)


def _caption(probs, names) -> str:
    k = int(np.argmax(probs))
    return f"{names[k] if names else k} {probs[k]:.2f}"


def _cmd_attack(args: argparse.Namespace) -> None:
    import jax

    from jaxcnn import class_names
    from jaxcnn.inputopt.attacks import ATTACKS, clean_logits
    from jaxcnn.inputopt.robustness import markdown_table, plot_robustness, robustness_rows
    from jaxcnn.viz import image_grid, save_png

    if args.method == "autoattack" and not args.dataset:
        raise ValueError("--method autoattack evaluates a data set: give --dataset (e.g. digits)")
    choice = choose_model(args, task="classification")
    options = {"steps": args.steps} if args.method in ("bim", "pgd") else {}
    if args.method == "pgd":
        options.update(norm=args.norm, restarts=args.restarts)
    if args.dataset:   # streamed through the evaluation transform, one batch at a time
        src, classes = dataset_source(args.dataset, args.split, choice.size, limit=args.limit, run=choice.run,
                                      data_dir=args.data_dir)
        loaded = load_model(args, choice=choice, classes=(args.dataset, classes))
        model, variables, size = loaded.model, loaded.variables, loaded.size
        if args.method == "autoattack":    # its passes go over the images many times: held in memory
            return _autoattack(args, loaded, *in_memory(src))
        t0 = time.perf_counter()
        rows = robustness_rows(model, variables, dataset_batches(src, args.batch_size), attack=args.method,
                               epsilons=[0.0, *args.eps], **options)
        plot_robustness({args.method: rows}, os.path.join(args.out, "robustness.png"))
        with open(os.path.join(args.out, "robustness.json"), "w") as f:
            json.dump(rows, f, indent=1)
        print(markdown_table(rows, args.method))
        print(f"{len(src)} images of {args.dataset} at {size} px in {time.perf_counter() - t0:.1f} s "
              f"-> {args.out}/robustness.png")
        return
    names_, x = load_images(args.images, choice.size)
    loaded = load_model(args, choice=choice)
    model, variables, size = loaded.model, loaded.variables, loaded.size
    probs = np.asarray(jax.nn.softmax(clean_logits(model, variables, x)))
    labels = probs.argmax(1) if args.labels is None else np.asarray(args.labels)
    kwargs = {} if args.method == "deepfool" else {"target": args.target}
    if args.method in ("fgsm", "bim", "pgd"):
        kwargs["eps"] = args.eps[0]
    res = ATTACKS[args.method](model, variables, x, labels, **kwargs, **options)
    adv_probs = np.asarray(jax.nn.softmax(clean_logits(model, variables, res.images)))
    classes = class_names() if probs.shape[1] == 1000 else None
    tiles, captions, report = [], [], {}
    for i, name in enumerate(names_):
        adv = np.asarray(res.images[i])
        delta = adv - x[i]
        span = max(np.abs(delta).max(), 1e-12)
        save_png(os.path.join(args.out, f"{name}_{args.method}.png"), adv)
        tiles += [x[i], 0.5 + 0.5 * delta / span, adv]
        captions += [_caption(probs[i], classes), f"x{0.5 / span:.0f}", _caption(adv_probs[i], classes)]
        report[name] = {"label": int(labels[i]), "prediction": int(res.predictions[i]),
                        "confidence": float(adv_probs[i].max()), "success": bool(res.success[i]),
                        "linf": float(res.linf[i]), "l2": float(res.l2[i])}
    save_png(os.path.join(args.out, "side_by_side.png"),
             image_grid(np.stack(tiles), cols=3, labels=captions, scale=max(1, 96 // size)))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump({"method": args.method, "options": {**options, **{k: v for k, v in kwargs.items()
                                                                    if k != "target"}},
                   "target": args.target, "images": report}, f, indent=1)
    print(f"{args.method}: {int(res.success.sum())}/{len(names_)} succeeded -> {args.out}/side_by_side.png")


def _autoattack(args: argparse.Namespace, loaded, x, y) -> None:
    """AutoAttack's standard evaluation of the data set: the table, its flags, a JSON report and the images."""
    import sys

    from jaxcnn.inputopt.autoattack import autoattack

    t0 = time.perf_counter()
    report = autoattack(loaded.model, loaded.variables, x, y, args.eps, norm=args.norm, seed=args.seed,
                        batch_size=args.batch_size, log=lambda line: print(line, file=sys.stderr))
    report.save_json(os.path.join(args.out, "autoattack.json"))
    np.savez_compressed(os.path.join(args.out, "autoattack_images.npz"),
                        **{f"eps_{r.eps:.4g}": r.images for r in report.rows})
    print(report.markdown())
    for flag in report.flags:
        print(f"warning ({flag['flag']}): {flag['message']}")
    print(f"AutoAttack ({report.version}, {args.norm}, seed {args.seed}) on {len(x)} images of {args.dataset} at "
          f"{loaded.size} px in {time.perf_counter() - t0:.1f} s -> {args.out}/autoattack.json")


def _cmd_fool(args: argparse.Namespace) -> None:
    from jaxcnn.inputopt.fooling import fool_evolution, fool_gradient, noise_probe
    from jaxcnn.viz import image_grid, save_png

    loaded = load_model(args, task="classification")
    model, variables, size = loaded.model, loaded.variables, loaded.size
    classes = [int(c) for c in args.classes.split(",")]
    t0 = time.perf_counter()
    if args.method == "gradient":
        res = fool_gradient(model, variables, classes, size=size, steps=args.steps)
    else:
        res = fool_evolution(model, variables, classes, size=size, encoding=args.method, population=args.population,
                             generations=args.steps)
    for c, im in zip(classes, np.asarray(res.images)):
        save_png(os.path.join(args.out, f"fool_{args.method}_{c}.png"), im)
    save_png(os.path.join(args.out, f"fool_{args.method}.png"),
             image_grid(res.images, labels=[f"{c}: {p:.3f}" for c, p in zip(classes, res.confidence)],
                        scale=max(1, 96 // size)))
    report = {"method": args.method, "confidence": dict(zip(map(str, classes), map(float, res.confidence)))}
    if args.dataset:
        x, _, _ = load_dataset(args.dataset, "test", size, limit=512, run=loaded.run)
        probe = noise_probe(model, variables, x)
        report["noise_probe"] = {k: v for k, v in probe.items() if k != "confidences"}
    with open(os.path.join(args.out, f"fool_{args.method}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"fooling images ({args.method}) in {time.perf_counter() - t0:.1f} s: confidences "
          + ", ".join(f"{c}={p:.4f}" for c, p in zip(classes, res.confidence)))


def _cmd_patch(args: argparse.Namespace) -> None:
    import jax

    from jaxcnn.inputopt.patch import apply_patch, patch_success, train_patch
    from jaxcnn.viz import image_grid, save_png

    choice = choose_model(args, task="classification")
    dataset = dataset_name(args, choice, "digits")
    x_train, _, classes = load_dataset(dataset, "train", choice.size, limit=args.limit, run=choice.run)
    x_test, y_test, _ = load_dataset(dataset, "test", choice.size, limit=args.limit, run=choice.run)
    loaded = load_model(args, choice=choice, classes=(dataset, classes))
    model, variables, size = loaded.model, loaded.variables, loaded.size
    scale = (args.scale_min, args.scale_max)
    t0 = time.perf_counter()
    patch, losses = train_patch(model, variables, x_train, args.target, steps=args.steps, scale=scale)
    rates = patch_success(model, variables, x_test, y_test, patch, args.target, scale=scale)
    save_png(os.path.join(args.out, "patch.png"), np.asarray(patch))
    shown = apply_patch(x_test[:8], patch, jax.random.key(1), scale=scale)
    save_png(os.path.join(args.out, "patched_examples.png"), image_grid(shown, cols=8, scale=max(1, 64 // size)))
    with open(os.path.join(args.out, "patch.json"), "w") as f:
        json.dump({"target": args.target, "loss_start": float(losses[0]), "loss_end": float(losses[-1]), **rates},
                  f, indent=1)
    print(f"patch for class {args.target} in {time.perf_counter() - t0:.1f} s: held-out target rate "
          f"{100 * rates['target_rate_clean']:.1f}% -> {100 * rates['target_rate_patched']:.1f}% -> {args.out}")


def add_commands(sub) -> None:
    """Registers the adversarial sub-commands on the ``jaxcnn`` parser."""
    p = sub.add_parser("attack", help="adversarial examples for photos, or accuracy under attack on a data set")
    add_model_args(p, "resnet50")
    p.add_argument("images", nargs="*", help="image files (default: scikit-image's sample photos)")
    p.add_argument("--method", default="pgd", choices=["fgsm", "bim", "pgd", "cw", "deepfool", "autoattack"],
                   help="autoattack: AutoAttack's standard evaluation of --dataset (APGD-CE, APGD-T, FAB-T, Square)")
    p.add_argument("--eps", type=float, nargs="+", default=[4 / 255], help="budget(s), pixels in [0, 1]")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="autoattack: the attacks' random numbers")
    p.add_argument("--target", type=int, help="targeted attack: the class to reach")
    p.add_argument("--labels", type=int, nargs="+", help="true labels (default: the clean predictions)")
    p.add_argument("--dataset", help="evaluate robustness on this data set's test split instead (digits, "
                                     "imagenet2012, folder:DIR, ...), read through the evaluation crop in batches")
    p.add_argument("--data-dir", help="--dataset: where it is prepared (default: the --checkpoint run's, else tfds's)")
    p.add_argument("--split", default="test", help="--dataset: the split (default: test; ImageNet's validation)")
    p.add_argument("--batch-size", type=int, default=256, help="--dataset: images attacked at once")
    p.add_argument("--limit", type=int, help="at most this many data set images, spread evenly over the split")
    p.add_argument("--out", default="out/attack")
    p.set_defaults(func=_cmd_attack)

    p = sub.add_parser("fool", help="fooling images: unrecognisable images classified with high confidence")
    add_model_args(p, "resnet50")
    p.add_argument("--classes", default="0,1,2,3")
    p.add_argument("--method", default="gradient", choices=["gradient", "direct", "cppn"])
    p.add_argument("--steps", type=int, default=200, help="ascent steps or generations")
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--dataset", help="also probe N(0.5, 0.25^2) noise against this data set's confidences")
    p.add_argument("--out", default="out/fool")
    p.set_defaults(func=_cmd_fool)

    p = sub.add_parser("patch", help="train a universal adversarial patch on a data set")
    add_model_args(p, "resnet50")
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--dataset", help="data set (default: the --checkpoint run's, else digits)")
    p.add_argument("--limit", type=int, default=1024)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--scale-min", type=float, default=0.3)
    p.add_argument("--scale-max", type=float, default=0.45)
    p.add_argument("--out", default="out/patch")
    p.set_defaults(func=_cmd_patch)
