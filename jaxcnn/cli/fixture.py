"""``jaxcnn fixture DIR``: writes the ImageNet-format fixture (``jaxcnn.data.fixture``) to try every command on.

It cuts scikit-image's photos into a few hundred JPEGs of ImageNet's sizes over six ImageNet classes and writes
them as a tfds data dir (``imagenet2012``, ``imagenet2012_real``, ``imagenet_v2``), as ILSVRC class folders and
as a VOC segmentation folder, then prints the names and options that read each.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def describe(root: str | os.PathLike, manifest: dict) -> str:
    """What ``build`` wrote, and the commands that use it, as the command prints it."""
    root = Path(root)
    n = manifest["images"]
    classes = ", ".join(f"{c['name']} ({c['synset']}, {c['label']})" for c in manifest["classes"])
    return "\n".join([
        f"{n['train']} train, {n['val']} val and {n['v2']} ImageNetV2-like JPEGs of {len(manifest['classes'])} "
        f"classes: {classes}",
        f"  tfds:    --data-dir {root / 'tfds'}  imagenet2012, imagenet2012_real, imagenet_v2",
        f"  folders: folder:{root / 'ILSVRC'}  folder:{root / 'ILSVRC-v2'}",
        f"  VOC:     voc2012 with data_dir={root / 'VOCdevkit' / 'VOC2012'} ({n['voc']['train']} train, "
        f"{n['voc']['val']} val)",
        f"try: jaxcnn train dataset=imagenet2012 data_dir={root / 'tfds'} augment=inception eval_transform=center "
        "image_size=64 batch_size=32 max_steps=20 workdir=runs/fixture",
    ])


def _cmd_fixture(args: argparse.Namespace) -> dict:
    from jaxcnn.data.fixture import build

    manifest = build(args.root, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                     v2_per_class=args.v2_per_class, seed=args.seed)
    print(describe(args.root, manifest))
    return manifest


def add_commands(sub) -> None:
    """Registers ``fixture`` on the ``jaxcnn`` parser."""
    p = sub.add_parser("fixture", help="write a small ImageNet-format data set (tfds, ILSVRC folders, VOC) made "
                                       "from scikit-image's photos")
    p.add_argument("root", help="the folder to write (created if missing)")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=12)
    p.add_argument("--v2-per-class", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_fixture)
