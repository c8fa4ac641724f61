"""The training loop's augmentation: the ``shift`` policy of ``jaxcnn.data.transforms``.

Kept as its own name for ``jaxcnn.training.loop``; new code should call
``jaxcnn.data.transforms.make_train_transform`` directly.
"""

from __future__ import annotations

from jaxcnn.data.transforms import Transform, make_train_transform


def make_augment(*, flip: bool, max_shift: int, **options) -> Transform:
    """Random translation by up to ``max_shift`` pixels, then (``flip``) a random horizontal reflection, then
    the policy's ``options`` (``auto_augment``, ``random_erase``, ...)."""
    return make_train_transform("shift", None, max_shift=max_shift, flip=flip, **options)
