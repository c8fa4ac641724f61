"""``jaxcnn fixture DIR``: writes the ImageNet-format fixture (``jaxcnn.data.fixture``) to try every command on.

It cuts scikit-image's photos into a few hundred JPEGs of ImageNet's sizes over six ImageNet classes and writes
them as a tfds data dir (``imagenet2012``, ``imagenet2012_real``, ``imagenet_v2``), as ILSVRC class folders and
as a VOC segmentation folder, then prints the names and options that read each.
"""

from __future__ import annotations

import argparse


def _cmd_fixture(args: argparse.Namespace) -> None:
    from jaxcnn.data import fixture

    fixture.run(args)


def add_commands(sub) -> None:
    """Registers ``fixture`` on the ``jaxcnn`` parser."""
    from jaxcnn.data.fixture import add_arguments

    p = sub.add_parser("fixture", help="write a small ImageNet-format data set (tfds, ILSVRC folders, VOC) made "
                                       "from scikit-image's photos")
    add_arguments(p)
    p.set_defaults(func=_cmd_fixture)
