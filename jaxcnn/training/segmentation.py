"""Dense prediction (semantic segmentation): per-pixel loss, confusion-matrix metrics, step factories.

A segmentation batch is ``{"image": (B, H, W, 3) uint8 or normalized float,
"label": (B, H, W) integer class ids}`` plus, for evaluation, the loader's
padding ``"mask"`` (B,) (0 on padding examples). Pixels whose label is
``ignore_label`` (255, PASCAL VOC's object borders and "void") count
nowhere: not in the loss, not in its gradient, not in any metric. Data
sources yield ``{"image", "mask": (H, W) uint8}``; ``mask_as_label`` renames
the per-pixel mask to ``"label"`` so it cannot collide with the padding mask.

Loss: softmax cross-entropy in float32, averaged over the non-ignored pixels
of the *global* batch (every device and micro-batch together: an image with
many ignored pixels weighs less, as in torchvision's reference recipe).
FCN-ResNet's auxiliary head (``features["aux"]``, upsampled to the input
size) adds ``0.5 x`` its own loss (torchvision's ``references/segmentation``).

Metrics come from the K x K confusion matrix ``C[true, predicted]`` summed
over the data: pixel accuracy ``trace(C) / sum(C)``; the IoU of class k is
``C[k, k] / (row_k + col_k - C[k, k])``; mean IoU averages it over the
classes that occur in the ground truth *or* the prediction (a class absent
from both has no IoU; one predicted but absent has IoU 0) -- the convention
of the FCN paper's and torchvision's evaluation code on VOC.

``make_seg_train_step`` / ``make_seg_eval_step`` have the signatures of
``jaxcnn.training.steps.make_train_step`` / ``make_eval_step`` and share their
update (accumulation, device averaging, NaN guard: ``steps.gradient_update``),
so every placement (``jaxcnn.parallel.placement``) compiles them the same way;
``jaxcnn.training.tasks.Segmentation`` hands them to the training loop.

``load_backbone`` initialises an FCN from a classification checkpoint of its
backbone (``BACKBONES``): FCN-32s/16s/8s from ``vgg16`` (``fcn_from_vgg16``:
conv layers, and fc6/fc7 from the classifier), FCN-ResNet from ``resnet50`` /
``resnet101`` (the ``backbone`` subtree; the classifier ``fc`` is dropped).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxcnn.training.state import RNG_IMPL, TrainState
from jaxcnn.training.steps import gradient_update, model_input

IGNORE_LABEL = 255
# auxiliary per-pixel outputs in ``features`` during training, and their loss weights (torchvision's recipe)
SEG_AUX_LOSS_WEIGHTS = {"aux": 0.5}


# ----------------------------------------------------------------------------
# loss and metrics


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array,
                        ignore_label: int = IGNORE_LABEL) -> tuple[jax.Array, jax.Array]:
    """Per-pixel softmax cross-entropy in float32, and the valid-pixel mask.

    Args:
      logits: (B, H, W, K) scores.
      labels: (B, H, W) integer class ids; ``ignore_label`` marks pixels to skip.

    Returns:
      ``(ce (B, H, W) float32, 0 at ignored pixels; valid (B, H, W) bool)``.
    """
    labels = labels.astype(jnp.int32)
    valid = labels != ignore_label
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    return jnp.where(valid, ce, 0.0), valid


def pixel_loss(logits: jax.Array, labels: jax.Array, ignore_label: int = IGNORE_LABEL) -> jax.Array:
    """Mean cross-entropy over the non-ignored pixels (0 when every pixel is ignored)."""
    ce, valid = pixel_cross_entropy(logits, labels, ignore_label)
    return jnp.sum(ce) / jnp.maximum(jnp.sum(valid), 1)


def confusion_matrix(predictions: jax.Array, labels: jax.Array, num_classes: int,
                     ignore_label: int = IGNORE_LABEL, mask: jax.Array | None = None) -> jax.Array:
    """(K, K) int32 counts ``C[true, predicted]`` over the non-ignored pixels.

    Args:
      predictions: (B, H, W) predicted class ids (``argmax`` of the logits).
      labels: (B, H, W) true class ids or ``ignore_label``.
      num_classes: K.
      mask: optional (B,) per-example weights (the loader's padding mask): 0 drops the example.
    """
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    if mask is not None:
        valid = valid & (mask.reshape(-1, *([1] * (labels.ndim - 1))) > 0)
    k2 = num_classes * num_classes
    idx = jnp.where(valid, labels * num_classes + predictions.astype(jnp.int32), k2)
    counts = jnp.zeros(k2 + 1, jnp.int32).at[idx.ravel()].add(1)
    return counts[:k2].reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: Any) -> dict[str, Any]:
    """``{"miou", "pixel_acc", "iou" (K,), NaN for classes absent from truth and prediction}`` of ``C[true, pred]``."""
    c = np.asarray(confusion, np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = union > 0
    return {"miou": float(np.mean(iou[present])) if present.any() else 0.0,
            "pixel_acc": float(tp.sum() / c.sum()) if c.sum() else 0.0,
            "iou": iou}


def summarize_eval(totals: dict[str, np.ndarray]) -> dict[str, float]:
    """The summed outputs of ``make_seg_eval_step`` over a data set -> loss, mIoU, pixel accuracy."""
    m = metrics_from_confusion(totals["confusion"])
    return {"loss": float(totals["loss"]) / max(float(totals["pixels"]), 1.0), "miou": m["miou"],
            "pixel_acc": m["pixel_acc"]}


def check_seg_batch(batch: dict[str, jax.Array]) -> None:
    """Shapes are static under jit, so a wrong batch fails at trace time with one line."""
    if "image" not in batch or "label" not in batch:
        raise ValueError(f"a segmentation batch needs 'image' and 'label' (per-pixel); got keys {sorted(batch)}")
    images, labels = batch["image"], batch["label"]
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = " (looks like NCHW; the loader yields NHWC)" if images.ndim == 4 and images.shape[1] == 3 else ""
        raise ValueError(f"batch images must be (B, H, W, 3); got {tuple(images.shape)}{hint}")
    if labels.shape != images.shape[:3] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"segmentation labels must be integers of shape {tuple(images.shape[:3])}; "
                         f"got {labels.dtype} {tuple(labels.shape)}")


def _check_logits(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim != 4 or logits.shape[:3] != labels.shape:
        raise ValueError(f"a segmentation model must return logits (B, H, W, K) of the label's size "
                         f"{tuple(labels.shape)}; got {tuple(logits.shape)} (is this a classification model?)")


# ----------------------------------------------------------------------------
# steps


def make_seg_train_step(model: nn.Module, tx: optax.GradientTransformation, *, accum_steps: int = 1,
                        axis_name: str | None = None, aux_weights: dict[str, float] | None = None,
                        ignore_label: int = IGNORE_LABEL) -> Callable:
    """Builds ``train_step(state, batch) -> (state, metrics)`` for per-pixel classification.

    Args are those of ``steps.make_train_step``; ``aux_weights`` defaults to
    ``SEG_AUX_LOSS_WEIGHTS`` (per-pixel auxiliary logits in ``features``).

    Returns:
      A pure function. ``metrics``: ``loss`` (mean over the batch's non-ignored
      pixels), ``pixel_acc`` and ``finite`` (0: the state was left unchanged).
    """
    aux_weights = SEG_AUX_LOSS_WEIGHTS if aux_weights is None else aux_weights

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        check_seg_batch(batch)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=RNG_IMPL), state.step)
        images, labels = model_input(batch["image"]), batch["label"].astype(jnp.int32)
        # every micro-batch and device divides its pixel sums by the same number, chosen so that the
        # average over micro-batches (gradient_update) and devices (pmean) is the global pixel mean
        count = jnp.sum(labels != ignore_label).astype(jnp.float32)
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name) / jax.lax.psum(1, axis_name)
        denom = jnp.maximum(count, 1.0) / accum_steps

        def loss_fn(params, batch_stats, images, labels, key):
            variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
            (logits, feats), updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                                   rngs={"dropout": key})
            _check_logits(logits, labels)
            ce, valid = pixel_cross_entropy(logits, labels, ignore_label)
            loss = jnp.sum(ce) / denom
            for name, weight in aux_weights.items():
                if name in feats:
                    loss = loss + weight * jnp.sum(pixel_cross_entropy(feats[name], labels, ignore_label)[0]) / denom
            correct = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
            metrics = {"loss": loss, "pixel_acc": correct / denom}
            return loss, (updates.get("batch_stats", {}), metrics)

        return gradient_update(state, tx, jax.value_and_grad(loss_fn, has_aux=True), images, labels, key,
                               accum_steps=accum_steps, axis_name=axis_name)

    return train_step


def make_seg_eval_step(model: nn.Module, *, axis_name: str | None = None,
                       ignore_label: int = IGNORE_LABEL) -> Callable:
    """Builds ``eval_step(variables, batch) -> sums``: ``loss`` (summed over valid pixels), ``pixels``
    (their count) and ``confusion`` (K, K) int32, padding examples (``batch["mask"]`` 0) excluded.
    ``summarize_eval`` turns sums over a data set into loss, mIoU and pixel accuracy."""

    def eval_step(variables, batch):
        check_seg_batch(batch)
        logits, _ = model.apply(variables, model_input(batch["image"]), train=False)
        labels = batch["label"].astype(jnp.int32)
        _check_logits(logits, labels)
        pad = batch.get("mask", jnp.ones(labels.shape[:1], jnp.float32)).astype(jnp.float32)
        ce, valid = pixel_cross_entropy(logits, labels, ignore_label)
        valid = valid & (pad[:, None, None] > 0)
        sums = {"loss": jnp.sum(jnp.where(valid, ce, 0.0)), "pixels": jnp.sum(valid).astype(jnp.float32),
                "confusion": confusion_matrix(jnp.argmax(logits, -1), labels, logits.shape[-1], ignore_label,
                                              mask=pad)}
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return eval_step


# ----------------------------------------------------------------------------
# data: per-pixel targets and paired augmentation


class MaskAsLabel:
    """A segmentation source whose examples ``{"image", "mask": (H, W)}`` become ``{"image", "label": (H, W)}``.

    The loader's evaluation batches carry a padding ``"mask"`` (B,); the
    per-pixel target travels as ``"label"``, like the class of a classification batch.
    """

    def __init__(self, source):
        self.source = source
        self.num_classes = source.num_classes
        self.ignore_label = getattr(source, "ignore_label", IGNORE_LABEL)
        self.name = getattr(source, "name", "segmentation")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ex = dict(self.source[i])
        if "mask" not in ex:
            raise ValueError(f"{self.name}: a segmentation example needs a per-pixel 'mask'; got keys {sorted(ex)}")
        ex["label"] = ex.pop("mask")
        return ex

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.source.image_shape)


def mask_as_label(source) -> MaskAsLabel:
    return source if isinstance(source, MaskAsLabel) else MaskAsLabel(source)


def make_seg_augment(*, flip: bool, max_shift: int = 0, ignore_label: int = IGNORE_LABEL) -> Callable:
    """Paired training-time transform ``(example, rng) -> example`` on ``{"image", "label": (H, W)}``.

    The same random translation (image zero-filled, label filled with
    ``ignore_label``) and horizontal flip are applied to image and label: the
    ``shift`` policy. The other policies (scale, crop, for variable-size images)
    are ``jaxcnn.data.transforms``'s.
    """

    def augment(example: dict, rng: np.random.Generator) -> dict:
        image, label = example["image"], example["label"]
        if max_shift > 0:
            h, w = label.shape
            s = max_shift
            dy, dx = rng.integers(0, 2 * s + 1, size=2)
            image = np.pad(image, ((s, s), (s, s), (0, 0)))[dy:dy + h, dx:dx + w]
            label = np.pad(label, s, constant_values=ignore_label)[dy:dy + h, dx:dx + w]
        if flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return {**example, "image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}

    return augment


# ----------------------------------------------------------------------------
# initialising an FCN from a classification checkpoint of its backbone


def _from_vgg16(backbone_variables: dict, fcn_variables: dict) -> dict:
    from jaxcnn.models.fcn import fcn_from_vgg16
    return fcn_from_vgg16(backbone_variables, fcn_variables)


def _from_resnet(backbone_variables: dict, fcn_variables: dict) -> dict:
    """FCN-ResNet variables whose ``backbone`` subtree is a ResNet classifier's (minus ``fc``)."""
    out = dict(fcn_variables)
    problems = []
    for collection in ("params", "batch_stats"):
        target = fcn_variables.get(collection, {}).get("backbone")
        if target is None:
            continue
        source = {k: v for k, v in backbone_variables.get(collection, {}).items() if k != "fc"}
        want, have = traverse_util.flatten_dict(target), traverse_util.flatten_dict(source)
        names = lambda keys: [f"{collection}/{'/'.join(k)}" for k in sorted(keys)]  # noqa: E731
        problems += [f"missing {n}" for n in names(set(want) - set(have))]
        problems += [f"unexpected {n}" for n in names(set(have) - set(want))]
        problems += [f"{collection}/{'/'.join(k)} {tuple(have[k].shape)} (expected {tuple(want[k].shape)})"
                     for k in sorted(set(want) & set(have)) if tuple(have[k].shape) != tuple(want[k].shape)]
        if not problems:
            new = traverse_util.unflatten_dict({k: jnp.asarray(have[k], want[k].dtype) for k in want})
            out[collection] = {**fcn_variables[collection], "backbone": new}
    if problems:
        raise ValueError(f"backbone weights do not fit the FCN's backbone: {', '.join(problems[:6])}"
                         f"{' ...' if len(problems) > 6 else ''}")
    return out


# FCN model -> (backbone classification model, variables mapping); tests add tiny pairs
BACKBONES: dict[str, tuple[str, Callable[[dict, dict], dict]]] = {
    "fcn32s": ("vgg16", _from_vgg16), "fcn16s": ("vgg16", _from_vgg16), "fcn8s": ("vgg16", _from_vgg16),
    "fcn_resnet50": ("resnet50", _from_resnet), "fcn_resnet101": ("resnet101", _from_resnet),
}


def init_from_backbone(model_name: str, backbone_variables: dict, fcn_variables: dict) -> dict:
    """``fcn_variables`` with the backbone part replaced by ``backbone_variables`` (of ``BACKBONES[model_name][0]``)."""
    if model_name not in BACKBONES:
        raise ValueError(f"no known backbone for {model_name!r}; models with one: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[model_name][1](backbone_variables, fcn_variables)


def load_backbone(model_name: str, path: str | os.PathLike, fcn_variables: dict) -> dict:
    """Reads a classification checkpoint of the backbone (torchvision ``.pth``/``.safetensors``/``.npz``,
    or jaxcnn's ``to_torch_state_dict`` export) and puts it into ``fcn_variables``.

    ``vgg16`` for FCN-32s/16s/8s, ``resnet50``/``resnet101`` for FCN-ResNet50/101.
    Mismatched keys or shapes are named in a one-line ``ValueError``.
    """
    from jaxcnn.weights.torchvision import load_pretrained
    if model_name not in BACKBONES:
        raise ValueError(f"no known backbone for {model_name!r}; models with one: {', '.join(sorted(BACKBONES))}")
    backbone, _ = BACKBONES[model_name]
    _, variables = load_pretrained(backbone, path)
    return init_from_backbone(model_name, variables, fcn_variables)
