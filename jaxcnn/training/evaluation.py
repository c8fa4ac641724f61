"""Evaluating checkpoints and weight files on any data set, streamed: single models, ensembles, several test sets.

A *member* is one model to score: the latest checkpoint of a ``jaxcnn train``
run (``run_member``; its config travels in the checkpoint) or a torchvision
state dict for a registered classifier (``weights_member``). ``evaluate``
streams each test set once through the loader's ``eval_batches`` (this
process's slice of each padded global batch, in order), puts the batches on
every device of every host with the data-parallel placement, and for every
member computes softmax probabilities on the devices and adds up, per batch,
the examples it gets right: top-1, top-5 and, where the source carries ReaL
labels (``REAL_LABELS``), ReaL accuracy (Beyer et al. 2020: the top-1 prediction
is right when it is one of the image's labels; images without labels are left
out). The ensemble's probabilities are the members' average, scored like a
member. Averages (over views, over members) are taken of probabilities but kept
in logs (``log(mean(exp(log_softmax)))``): a saturated softmax rounds most
classes to exactly 0, and a top-5 over such ties would be arbitrary. Nothing grows with the data set: host and device
memory hold one batch and a few counters, and the counters are sums over the
global batch, so every process reports the same totals.

What each member sees (``Views``): a run is scored on its own evaluation
transform (the recipe's ``eval_transform``; a run on fixed-size data, with
``none``, takes images of its size as they are and resizes and centre-crops any
other); a weight file on torchvision's evaluation transform
(``torchvision_center``: shorter side to ``round(size * 256 / 224)``, centre
``size`` crop: 256 -> 224, and 342 -> 299 for Inception v3, with torchvision's
own rounding). ``ten_crop=True`` averages each member's probabilities over the
four corner crops, the centre crop and their horizontal reflections
(Krizhevsky et al. 2012, sec. 4.1), following the run's training augmentation:
crops of the training size from the image padded by the run's translation
range (the ``shift`` policy) or from the central square of the image resized as
the policy resizes it (the cropping policies); mirror images only when the run
trained with flips, otherwise the five crops alone, since a model that never
saw mirrored inputs (digits) is scored on views it was not trained for. Weight
files take the ten crops of the central ``resize`` square, mirrored.

``kendall_tau`` compares the members' ranking on two test sets (Recht et al.
2019: a new test set costs accuracy but keeps the models' order).

Read-only: a workdir without checkpoints is a one-line error and nothing is
created; restoring a run reads the checkpoint alone (its number of classes
from the stored shapes), never the data set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxcnn import cpu
from jaxcnn.data.image_io import Encoded, decode_resized
from jaxcnn.data.sources import get_source, reader
from jaxcnn.data.tfds_sources import REAL_LABELS
from jaxcnn.data.transforms import Transform, center_crop, compose, make_eval_transform, policy_flips, resize_shorter
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.config import TrainConfig, eval_size
from jaxcnn.training.optimizer import OptimizerConfig, make_optimizer
from jaxcnn.training.state import create_train_state, variables_of
from jaxcnn.training.steps import model_input



def ten_crops(images: np.ndarray, size: int, mirror: bool = True) -> np.ndarray:
    """(B, H, W, C) -> (10, B, size, size, C): 4 corners, center, and their mirror images; with
    ``mirror=False`` (5, B, size, size, C), the five crops alone."""
    h, w = images.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"ten_crops: images {h}x{w} are smaller than the crop {size}")
    tops = [0, 0, h - size, h - size, (h - size) // 2]
    lefts = [0, w - size, 0, w - size, (w - size) // 2]
    crops = [images[:, t:t + size, left:left + size] for t, left in zip(tops, lefts)]
    return np.stack(crops + ([c[:, :, ::-1] for c in crops] if mirror else []))


def run_flips(cfg: TrainConfig) -> bool:
    """Whether the run's training transform mirrored images."""
    if cfg.augment == "shift":
        return bool(cfg.augment_flip)
    return policy_flips(cfg.augment, **cfg.augment_options)


# -- torchvision's evaluation transform --------------------------------------------------------------------------

def torchvision_resize_hw(h: int, w: int, shorter: int) -> tuple[int, int]:
    """The (height, width) torchvision's ``Resize(shorter)`` gives an h x w image: the longer side truncated."""
    if w <= h:
        return int(shorter * h / w), shorter
    return shorter, int(shorter * w / h)


def torchvision_center(size: int, resize: int | None = None) -> Transform:
    """torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` on uint8 images (Pillow bilinear, antialiased
    when shrinking; a crop larger than the image pads it with 0 first, as torchvision does). ``resize``
    defaults to ``round(size * 256 / 224)``: 256 for 224, 342 for 299."""
    resize = resize or round(size * 256 / 224)

    def transform(example, rng=None):
        image = example["image"]
        if isinstance(image, Encoded):   # decoded and resized without array copies: the same pixels
            image = decode_resized(image, torchvision_resize_hw(*image.size(), resize), Image.BILINEAR)
        hw = torchvision_resize_hw(*image.shape[:2], resize)
        if hw != image.shape[:2]:
            image = np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.BILINEAR))
        h, w = image.shape[:2]
        if h < size or w < size:
            ph, pw = max(0, size - h), max(0, size - w)
            image = np.pad(image, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
            h, w = image.shape[:2]
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        return {**example, "image": np.ascontiguousarray(image[top:top + size, left:left + size])}

    transform.reads_encoded = True
    return transform


def _as_is_or_center(size: int) -> Transform:
    """Images of ``size`` x ``size`` as they are (a run on fixed-size data); others resized and centre-cropped
    (the ``center`` policy), so such a run can be scored on a data set of other sizes too."""
    center = make_eval_transform(size, "center")

    def transform(example, rng=None):
        return example if example["image"].shape[:2] == (size, size) else center(example, rng)

    return transform


# -- views --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Views:
    """How a member's test images are scored: ``base`` makes each example the array the views are cut from
    (None: the source's images as they are), padded by ``pad`` pixels; ``crops`` = "five" (4 corners and
    center of ``crop`` px) or "one" (the whole array), plus their mirror images when ``mirror``.
    ``key`` names the base transform, so members that share it share the decoded examples."""

    base: Transform | None
    pad: int
    crop: int
    crops: str
    mirror: bool
    description: str
    key: tuple = ()

    @property
    def count(self) -> int:
        return (5 if self.crops == "five" else 1) * (2 if self.mirror else 1)

    def of(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, C) -> (count, B, crop, crop, C)."""
        if self.pad:
            images = np.pad(images, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        if self.crops == "five":
            return ten_crops(images, self.crop, mirror=self.mirror)
        return np.stack([images, images[:, :, ::-1]] if self.mirror else [images])

    def streamed_base(self) -> Transform:
        """The per-example transform of the streamed path: ``base``, or for images taken as they are, those
        of the crop's size as they are and others resized and centre-cropped; views of the padded image
        refuse images smaller than the crop."""
        if self.base is not None:
            return self.base
        if self.crops == "five":
            def checked(example, rng=None):
                h, w = example["image"].shape[:2]
                if h < self.crop or w < self.crop:
                    raise ValueError(f"--ten-crop: images of {h}x{w} px are smaller than the crop {self.crop}; "
                                     "evaluate without --ten-crop")
                return _as_is_or_center(self.crop)(example, rng)
            return checked
        return _as_is_or_center(self.crop)


_EVAL_WORDS = {"none": "whole images", "center": "center crop", "pad": "whole images, padded"}


def eval_views(cfg: TrainConfig, ten_crop: bool = False) -> Views:
    """The views of the run ``cfg``; ``description`` says in words what they are."""
    size = eval_size(cfg)
    if not ten_crop:
        base = None if cfg.eval_transform == "none" else make_eval_transform(size, cfg.eval_transform,
                                                                             **cfg.eval_options)
        words = _EVAL_WORDS.get(cfg.eval_transform, cfg.eval_transform)
        if cfg.eval_transform == "center":
            words = f"shorter side {cfg.eval_options.get('resize') or round(size / 0.875)}, center crop {size}"
        return Views(base, 0, size, "one", False, words,
                     ("run", cfg.eval_transform, size, tuple(sorted(cfg.eval_options.items()))))
    mirror = run_flips(cfg)
    mirrored = (", and their mirror images" if mirror
                else " (no mirror images: the run trained without flips)")
    if cfg.augment == "shift":   # fixed-size images, trained on translations by up to augment_shift
        s = int(cfg.augment_shift)
        if s == 0:
            return Views(None, 0, size, "one", mirror,
                         ("the whole image and its mirror image" if mirror else
                          "the whole image (no mirror image: the run trained without flips)")
                         + "; the run trained without shifts, so there is nothing to crop", ("none", size))
        return Views(None, s, size, "five", mirror,
                     f"{10 if mirror else 5} crops: 4 corners and center of the image padded by {s} px{mirrored}",
                     ("none-checked", size))
    opts = cfg.augment_options
    square = int(opts.get("resize") or opts.get("min_size") or round(size * 256 / 224))
    if square < size:
        raise ValueError(f"--ten-crop: the run resizes images to {square} px, smaller than its crop {size}")
    return Views(compose(resize_shorter(square), center_crop(square)), 0, size, "five", mirror,
                 f"{10 if mirror else 5} crops of {size} px: 4 corners and center of the central {square} px "
                 f"square{mirrored}", ("square", square))


def weight_views(size: int, resize: int | None = None, ten_crop: bool = False) -> Views:
    """The views of a weight file scored at ``size``: torchvision's resize and centre crop, or the ten crops of
    the central ``resize`` square (``resize`` default ``round(size * 256 / 224)``)."""
    resize = resize or round(size * 256 / 224)
    if not ten_crop:
        return Views(torchvision_center(size, resize), 0, size, "one", False,
                     f"resize {resize}, center crop {size}", ("torchvision", resize, size))
    if resize < size:
        raise ValueError(f"--ten-crop: images resized to {resize} px are smaller than the crop {size}; "
                         f"give --resize of at least {size}")
    return Views(torchvision_center(resize, resize), 0, size, "five", True,
                 f"10 crops of {size} px: 4 corners and center of the central {resize} px square, and their "
                 "mirror images", ("torchvision", resize, resize))


# -- restoring runs -----------------------------------------------------------------------------------------------

def _config_from_meta(meta: dict) -> TrainConfig:
    raw = dict(meta["config"])
    raw["optimizer"] = OptimizerConfig(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in raw["optimizer"].items()})
    return TrainConfig(**raw)


def run_config(workdir: str) -> TrainConfig:
    """The config of the run in ``workdir``, as its latest checkpoint stores it (strategy ``jit``: one device
    layout that every command can use)."""
    ckpt = Checkpointer.open_existing(workdir)
    try:
        meta = ckpt.read_meta()
    finally:
        ckpt.close()
    return dataclasses.replace(_config_from_meta(meta), strategy="jit")


def run_source(cfg: TrainConfig, split: str, data_dir: str | None = None):
    """``split`` of the run's data set with the run's data settings (data dir, unless ``data_dir``; image size)."""
    data_dir = data_dir or cfg.data_dir
    return get_source(cfg.dataset, split, size=cfg.image_size, **({"data_dir": data_dir} if data_dir else {}))


def _stored_param_shapes(workdir: str) -> dict[tuple, tuple]:
    """{path: shape} of the parameters in the latest checkpoint of ``workdir``, read from orbax's metadata."""
    import orbax.checkpoint as ocp

    ckpt = Checkpointer.open_existing(workdir)
    step, directory = ckpt.latest_step(), ckpt.directory
    ckpt.close()
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                                    item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                   "meta": ocp.JsonCheckpointHandler()})
    try:
        tree = manager.item_metadata(step)["state"]
    finally:
        manager.close()
    leaves = jax.tree_util.tree_flatten_with_path(tree["params"], is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {tuple(getattr(k, "key", k) for k in path): tuple(v.shape) for path, v in leaves}


def stored_classes(workdir: str, cfg: TrainConfig) -> int:
    """The number of classes the run in ``workdir`` scores, from its checkpoint's parameter shapes: the
    last axis of the parameters whose shape follows ``num_classes`` (compared with the model at 1 class)."""
    from flax import traverse_util

    from jaxcnn.training.loop import build_model
    if cfg.model_options.get("num_classes") is not None:
        return int(cfg.model_options["num_classes"])
    probe = build_model(cfg, 1)
    x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: probe.init(jax.random.key(0), x, train=False), x)["params"]
    expected = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}
    stored = _stored_param_shapes(workdir)
    differ = {stored[k][-1] for k, shape in expected.items() if k in stored and stored[k] != shape and
              len(shape) == len(stored[k]) and shape[-1] == 1}
    if len(differ) > 1:
        raise ValueError(f"{workdir}: the checkpoint's parameters do not fit {cfg.model} with any one number of "
                         f"classes (output widths {sorted(differ)})")
    return differ.pop() if differ else 1


def restore_run(workdir: str, ema: bool = False):
    """(config, model, variables) of the latest checkpoint in ``workdir``: the run's model with its options and
    the checkpoint's number of classes, at the run's image size; reads no data set. ``ema``: the run's weight
    average (``ema_decay`` > 0) instead of its raw weights; a run without one is a one-line error."""
    from jaxcnn.training.loop import build_model
    cfg = run_config(workdir)
    model = build_model(cfg, stored_classes(workdir, cfg))
    image_shape = (cfg.image_size, cfg.image_size, 3)
    target = create_train_state(model, make_optimizer(cfg.optimizer, 1, 1), image_shape, seed=cfg.seed)
    ckpt = Checkpointer.open_existing(workdir)
    try:
        state, _ = ckpt.restore(target)
    finally:
        ckpt.close()
    try:
        return cfg, model, variables_of(state, ema)
    except ValueError as err:
        raise ValueError(f"{workdir}: {err}") from None


# -- members ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Member:
    """One model of an evaluation: ``name`` (the run directory or the weight file), its registry name, the
    model, its host variables, its number of classes, its ``views``; ``run``: the run's config (None for a
    weight file)."""

    name: str
    model_name: str
    model: Any
    variables: Any
    num_classes: int
    views: Views
    run: TrainConfig | None = None


def _output_classes(model, variables, size: int) -> int:
    logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                               jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    return int(logits.shape[-1])


def run_member(workdir: str, ten_crop: bool = False, ema: bool = False) -> Member:
    """The latest checkpoint of the run in ``workdir`` (its weight average with ``ema``), scored on the run's
    views."""
    cfg, model, variables = restore_run(workdir, ema)
    variables = jax.device_get(variables)
    return Member(workdir, cfg.model, model, variables, _output_classes(model, variables, cfg.image_size),
                  eval_views(cfg, ten_crop), cfg)


def weights_member(model_name: str, path: str, *, size: int | None = None, resize: int | None = None,
                   ten_crop: bool = False) -> Member:
    """The torchvision state dict ``path`` for the registered classifier ``model_name``, scored at ``size``
    (default: the model's resolution) on torchvision's evaluation transform. A file of another model is a
    one-line error naming both."""
    from jaxcnn.models import model_info
    from jaxcnn.weights.torchvision import load_pretrained

    info = model_info(model_name)
    if info.task != "classification":
        raise ValueError(f"{model_name} is a {info.task} model; eval scores classifiers")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        model, variables = load_pretrained(model_name, path)
    except ValueError as e:
        raise ValueError(f"--weights {path} is not a {model_name} weight file: {str(e).splitlines()[0]}") from None
    size = size or info.resolution
    return Member(path, model_name, model, variables, _output_classes(model, variables, size),
                  weight_views(size, resize, ten_crop))


# -- the streamed evaluation -------------------------------------------------------------------------------------

class _MemberInputs:
    """A source whose examples hold one base image per distinct ``Views.key`` (``image0``, ``image1``, ...),
    the label and, with ``real``, the ReaL label set as a multi-hot ``real`` vector of ``num_classes``."""

    def __init__(self, source, bases: list[Transform], real: bool):
        self.source, self.bases, self.real = source, bases, real
        self.num_classes, self.name = source.num_classes, source.name
        # one base that decodes the file itself reads it undecoded; several share one full decode
        self._read = reader(source, bases[0]) if len(bases) == 1 else source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        example = self._read[i]
        out = {f"image{g}": base(example, None)["image"] for g, base in enumerate(self.bases)}
        out["label"] = np.int32(example["label"])
        if self.real:
            labels = np.asarray(example[REAL_LABELS], np.int64).reshape(-1)
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{self.name}[{i}]: ReaL labels {labels.tolist()} outside [0, {self.num_classes})")
            hot = np.zeros(self.num_classes, np.uint8)
            hot[labels] = 1
            out["real"] = hot
        return out


def _scores(probs, label, mask, real=None) -> dict[str, jax.Array]:
    """Counts over the global batch: top-1 and top-5 hits, examples, and the ReaL hits and scored examples;
    ``probs``: probabilities or their logs (the same order)."""
    _, top = jax.lax.top_k(probs, min(5, probs.shape[-1]))
    valid = mask > 0
    sums = {"top1": jnp.sum((top[:, 0] == label) & valid, dtype=jnp.int32),
            "top5": jnp.sum(jnp.any(top == label[:, None], axis=-1) & valid, dtype=jnp.int32),
            "count": jnp.sum(valid, dtype=jnp.int32)}
    if real is not None:
        labelled = jnp.any(real > 0, axis=-1) & valid
        hit = jnp.take_along_axis(real, top[:, :1], axis=-1)[:, 0] > 0
        sums["real"] = jnp.sum(hit & labelled, dtype=jnp.int32)
        sums["real_count"] = jnp.sum(labelled, dtype=jnp.int32)
    return sums


@functools.partial(cpu.jit, static_argnums=0)
def _probs(model, variables, images):
    return jax.nn.softmax(model.apply(variables, model_input(images), train=False)[0])


@functools.partial(cpu.jit, static_argnums=0)
def _log_probs(model, variables, images):
    return jax.nn.log_softmax(model.apply(variables, model_input(images), train=False)[0])


def _log_mean(log_probs: list) -> jax.Array:
    """log of the mean of the probabilities ``exp(log_probs)``, computed in logs: an average of saturated
    softmaxes keeps every class's order instead of rounding most of them to a tie at 0."""
    return jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - math.log(len(log_probs))


def _summary(totals: dict[str, int]) -> dict[str, float]:
    n = max(int(totals["count"]), 1)
    out = {"top1": totals["top1"] / n, "top5": totals["top5"] / n, "count": int(totals["count"])}
    if "real" in totals:
        out["real"] = totals["real"] / max(int(totals["real_count"]), 1)
        out["real_count"] = int(totals["real_count"])
    return out


def _open(dataset: str, split: str, size: int, data_dir: str | None):
    return get_source(dataset, split, size=size, **({"data_dir": data_dir} if data_dir else {}))


def evaluate(members: Sequence[Member], dataset: str, *, split: str = "test", data_dir: str | None = None,
             batch_size: int = 128, progress: bool = False, source=None, workers: int = 0) -> dict[str, Any]:
    """Scores every member, and their ensemble when there are several, on ``split`` of ``dataset``.

    ``source`` replaces the named data set by any classification source; ``workers`` loader processes read it
    (0: threads, ``jaxcnn.data.loader``). The global batch is
    ``batch_size`` rounded up to a multiple of the devices. Returns ``{"dataset", "source", "count",
    "members": {name: {"top1", "top5", ["real", "real_count"], "count", "views"}}, "ensemble": {...}}``
    (``ensemble`` only for several members; ``real`` only where the source carries ReaL labels).
    """
    from jaxcnn.parallel.placement import placement_for

    if not members:
        raise ValueError("nothing to evaluate: give run directories or --model with --weights")
    src = source if source is not None else _open(dataset, split, members[0].views.crop, data_dir)
    for m in members:
        if m.num_classes != src.num_classes:
            raise ValueError(f"{m.name} ({m.model_name}) scores {m.num_classes} classes but {dataset} has "
                             f"{src.num_classes}")
    keys = list(dict.fromkeys(m.views.key for m in members))
    group = {m.name: keys.index(m.views.key) for m in members}
    bases = [next(m.views for m in members if m.views.key == k).streamed_base() for k in keys]
    real = len(src) > 0 and REAL_LABELS in src[0]
    inputs = _MemberInputs(src, bases, real)
    dp = placement_for("jit", members[0].model)
    global_batch = math.ceil(batch_size / dp.num_devices) * dp.num_devices
    variables = [jax.device_put(m.variables, dp.replicated) for m in members]
    scores = cpu.jit(_scores, out_shardings=dp.replicated)
    totals: dict[str, dict[str, int]] = {}

    def add(name, sums):
        got = {k: int(v) for k, v in jax.device_get(sums).items()}
        totals[name] = {k: totals.get(name, {}).get(k, 0) + v for k, v in got.items()}

    from jaxcnn.data.loader import eval_batches   # grain: imported when data flows, not with the package

    batches = eval_batches(inputs, global_batch=global_batch, process_index=jax.process_index(),
                           process_count=jax.process_count(), workers=workers)
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm import tqdm
        bar = tqdm(total=-(-len(src) // global_batch), desc=f"{dataset} {split}", unit="batch", dynamic_ncols=True)
    try:
        for batch in batches:
            labels = dp.put_batch({k: batch[k] for k in ("label", "mask", *(["real"] if real else []))})
            ensemble = []
            for m, v in zip(members, variables):
                views = m.views.of(batch[f"image{group[m.name]}"])
                # the mean probability over the views, scored in logs (top-5 of saturated softmaxes stays right)
                scored = _log_mean([_log_probs(m.model, v, dp.put_batch({"image": np.ascontiguousarray(x)})["image"])
                                    for x in views])
                add(m.name, scores(scored, labels["label"], labels["mask"], labels.get("real")))
                ensemble.append(scored)
            if len(members) > 1:
                add("ensemble", scores(_log_mean(ensemble), labels["label"], labels["mask"], labels.get("real")))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    out = {"dataset": dataset, "source": src.name, "count": len(src),
           "members": {m.name: {**_summary(totals[m.name]), "views": m.views.description} for m in members}}
    if len(members) > 1:
        out["ensemble"] = _summary(totals["ensemble"])
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b between two scorings of the same models (scipy.stats.kendalltau) and its p-value."""
    from scipy.stats import kendalltau
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"Kendall's tau needs two equal-length scorings of at least 2 models, got {len(a)}, {len(b)}")
    res = kendalltau(a, b)
    return float(res.statistic), float(res.pvalue)


def compare(results: Sequence[dict], metric: str = "top1") -> list[dict]:
    """For each test set after the first: per member the accuracy drop from the first (``metric``, in [0, 1])
    and Kendall's tau of the members' ranking between the two (None with fewer than 2 members)."""
    first, out = results[0], []
    names = list(first["members"])
    for other in results[1:]:
        a = [first["members"][n][metric] for n in names]
        b = [other["members"][n][metric] for n in names]
        tau = kendall_tau(a, b) if len(names) > 1 else (None, None)
        out.append({"reference": first["dataset"], "dataset": other["dataset"],
                    "drop": {n: x - y for n, x, y in zip(names, a, b)}, "tau": tau[0], "p_value": tau[1]})
    return out


# -- in-memory helpers ---------------------------------------------------------------------------------------------

def predict_probs(model, variables, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images (N, H, W, C) held in memory, in batches of ``batch``.

    One compiled forward per (model, batch shape): the last batch is padded to the full size.
    """
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        n = len(chunk)
        if n < batch and len(images) > batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(_probs(model, variables, chunk))[:n])
    return np.concatenate(out)


def _scored_chunks(src, views: Views, chunk: int = 1024):
    """(base images, labels) of an in-memory test source in chunks of ``chunk``: ``views.streamed_base()``
    applied to each example."""
    base = views.streamed_base()
    for i in range(0, len(src), chunk):
        examples = [base(src[j], None) for j in range(i, min(i + chunk, len(src)))]
        yield np.stack([e["image"] for e in examples]), np.array([int(e["label"]) for e in examples])


def evaluate_runs(workdirs: list[str], *, ten_crop: bool = False, dataset: str | None = None,
                  data_dir: str | None = None, batch_size: int = 128, ema: bool = False) -> dict[str, dict]:
    """Top-1/top-5 of each run (its weight average with ``ema``) and (for several) of their ensemble on the
    runs' test split (or ``dataset``'s, read from ``data_dir``, else the first run's data dir); each run's entry
    also holds ``views``."""
    members = [run_member(wd, ten_crop, ema) for wd in workdirs]
    names = {m.run.dataset for m in members}
    if dataset is None and len(names) > 1:
        raise ValueError(f"the runs were trained on different data sets ({', '.join(sorted(names))}); "
                         "give --dataset to score them on one")
    dataset = dataset or members[0].run.dataset
    if data_dir is None and dataset == members[0].run.dataset:
        data_dir = members[0].run.data_dir
    res = evaluate(members, dataset, data_dir=data_dir, batch_size=batch_size)
    return {**res["members"], **({"ensemble": res["ensemble"]} if "ensemble" in res else {})}
