"""What the input-optimisation commands read: a model with its weights, and images.

``add_model_args`` / ``load_model`` give every command the same
``--model/--weights/--checkpoint`` options; ``load_images`` reads photos (or
scikit-image's sample photos when none are given) at one size.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("--model", default=default_model, help=f"registry name (default: {default_model})")
    p.add_argument("--weights", help="torchvision state dict for --model: .safetensors, .npz or .pth")
    p.add_argument("--checkpoint", help="a `jaxcnn train` run directory: its latest checkpoint and model")


def load_model(args: argparse.Namespace, size: int):
    """(model, variables) from --checkpoint, --weights, or random weights (with a note on stderr)."""
    from jaxcnn import create_model, init_variables, load_pretrained

    if args.checkpoint:
        from jaxcnn.training.evaluation import restore_run
        cfg, model, variables = restore_run(args.checkpoint)
        args.model = cfg.model
        return model, variables
    if args.weights:
        return load_pretrained(args.model, args.weights)
    model = create_model(args.model)
    print(f"note: {args.model} has random weights (no --weights or --checkpoint given); "
          "the pictures show what an untrained network responds to", file=sys.stderr)
    return model, init_variables(model, size)


def load_images(paths: list[str], size: int) -> tuple[list[str], np.ndarray]:
    """(names, (N, size, size, 3) float32 in [0, 1]): shorter side resized to ``size``, centre-cropped."""
    from jaxcnn.data.image_io import center_crop, load_image, resize_shorter, sample_photos

    photos = {os.path.splitext(os.path.basename(p))[0]: load_image(p) for p in paths} if paths else sample_photos()
    return list(photos), np.stack([center_crop(resize_shorter(im, size), size) for im in photos.values()])
