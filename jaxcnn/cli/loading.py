"""What the commands read: a model with its weights and image size, photos, and data sets.

Every command that runs a model takes ``--model/--weights/--checkpoint/--size`` (``add_model_args``)
and gets a ``LoadedModel`` from ``load_model`` (``choose_model`` makes the choice without reading
weights, for commands that check their other input first):

- ``--checkpoint RUN`` (a ``jaxcnn train`` run directory): the run's model with its options, its
  latest weights, its image size, and its data settings (``load_dataset`` reads the run's data set
  with its data directory and evaluation transform). ``--model`` may be left out; one that is not
  the run's model is an error, as is ``--weights`` beside ``--checkpoint``.
- ``--weights FILE``: a torchvision state dict (.safetensors, .npz or .pth; RobustBench's and the robustness
  library's wrapped ones too) or an .onnx model (BVLC's GoogLeNet for inception_v1) for ``--model``.
- neither: ``--model`` with random weights, with a note on stderr.

The image size is ``image_size``'s: ``--size``, else the run's, else the command's own default
(style transfer's 256 px), else the model's native resolution.

``load_images`` reads photos (or scikit-image's sample photos when none are given) at one size;
``dataset_source`` reads a data set split through the evaluation transform (resize and centre crop) as a
random-access source, which ``dataset_batches`` streams in batches (memory: one batch, whatever the size of
the data set) and ``load_dataset`` holds in memory as float images in [0, 1] and labels; ``check_classes``
refuses a model whose classes are not the data set's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready for ``model.apply(variables, x, train=False)`` on ``size`` x ``size`` images.

    ``name``: its registry name; ``num_classes``: the width of its output; ``origin``: where the
    weights came from, for messages; ``run``: the ``TrainConfig`` of the ``--checkpoint`` run, else None.
    """

    name: str
    model: Any
    variables: Any
    size: int
    num_classes: int
    origin: str
    run: Any = None


def add_model_args(p: argparse.ArgumentParser, default_model: str, *, size_help: str | None = None) -> None:
    """``--model``, ``--weights``, ``--checkpoint`` and ``--size`` on the sub-command parser ``p``."""
    p.add_argument("--model", help=f"registry name (default: {default_model}; with --checkpoint: the run's model)")
    p.add_argument("--weights", help="torchvision state dict for --model: .safetensors, .npz or .pth (RobustBench "
                   "and robustness-library files too); .onnx for inception_v1 (BVLC's GoogLeNet)")
    p.add_argument("--checkpoint", help="a `jaxcnn train` run directory: its latest checkpoint, model, image size "
                                        "and data settings")
    p.add_argument("--ema", action="store_true", help="with --checkpoint: the run's weight average (trained with "
                                                       "ema_decay > 0) instead of its raw weights")
    p.add_argument("--size", type=int, help=size_help or "image size (default: the run's with --checkpoint, "
                                                         "else the model's native resolution)")
    p.set_defaults(default_model=default_model)


def image_size(args: argparse.Namespace, model_name: str, run=None, default: int | None = None) -> int:
    """The size the command works at: ``--size``, else the run's, else ``default``, else the model's resolution."""
    from jaxcnn import model_info

    if args.size is not None:
        if args.size <= 0:
            raise ValueError(f"--size must be > 0, got {args.size}")
        return args.size
    if run is not None:   # the size the run is evaluated at
        from jaxcnn.training.config import eval_size
        return int(eval_size(run))
    return default or model_info(model_name).resolution


def output_classes(model, variables, size: int) -> int:
    """The number of classes ``model`` scores (the last axis of its logits), from shapes only."""
    import jax
    import jax.numpy as jnp

    logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                               jnp.zeros((1, size, size, 3), jnp.float32))
    return int(logits.shape[-1])


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """What ``--model/--checkpoint/--size`` select, before any weights are read: the registry name, the
    image size and the ``--checkpoint`` run's config (or None)."""

    name: str
    size: int
    run: Any = None


def choose_model(args: argparse.Namespace, *, default_size: int | None = None,
                 task: str | None = None) -> ModelChoice:
    """The model and image size the options select (reading only a run's config); the one-line errors:
    an unknown model, a ``--model`` that is not the run's, ``--weights`` beside ``--checkpoint``, a model
    whose task is not ``task``."""
    from jaxcnn import model_info

    run = None
    if args.checkpoint:
        from jaxcnn.training.evaluation import run_config

        if args.weights:
            raise ValueError("give --weights or --checkpoint, not both")
        run = run_config(args.checkpoint)
        if args.model and args.model != run.model:
            raise ValueError(f"--model {args.model} contradicts the checkpoint, a run of {run.model} "
                             f"({args.checkpoint}); leave --model out to use the run's")
    elif getattr(args, "ema", False):
        raise ValueError("--ema selects a run's weight average: it needs --checkpoint")
    name = run.model if run is not None else args.model or args.default_model
    info = model_info(name)
    if task and info.task != task:
        raise ValueError(f"{name} is a {info.task} model; {args.command} needs a {task} model")
    return ModelChoice(name=name, size=image_size(args, name, run, default_size), run=run)


def abstract_classes(model, size: int) -> int:
    """The number of classes ``model`` scores, from its initialisation's shapes (nothing is computed)."""
    import jax
    import jax.numpy as jnp

    logits = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0][0],
                            jnp.zeros((1, size, size, 3), jnp.float32))
    return int(logits.shape[-1])


def load_model(args: argparse.Namespace, *, default_size: int | None = None, task: str | None = None,
               choice: ModelChoice | None = None, classes: tuple[str, int] | None = None) -> LoadedModel:
    """The model of ``--checkpoint``, ``--weights`` or random weights (with a note on stderr), at the size
    ``choose_model`` selects (``choice``, when the command made it already).

    ``classes``: (data set, its number of classes) the model must score (``check_classes``), checked
    before random weights are drawn.
    """
    import jax

    from jaxcnn import create_model, init_variables, load_pretrained

    choice = choice or choose_model(args, default_size=default_size, task=task)
    name, size = choice.name, choice.size
    if choice.run is not None:
        from jaxcnn.training.evaluation import restore_run

        _, model, variables = restore_run(args.checkpoint, ema=getattr(args, "ema", False))
        # host arrays, as --weights gives: committed to one device, they would clash with a batch that
        # the input-optimisation code shards over all devices
        variables = jax.device_get(variables)
        origin = f"checkpoint {args.checkpoint}" + (" (weight average)" if getattr(args, "ema", False) else "")
    elif args.weights:
        model, variables = load_pretrained(name, args.weights)
        origin = f"weights {args.weights}"
    else:
        model = create_model(name)
        if classes:
            _check_classes(name, "random weights", abstract_classes(model, size), *classes)
        print(f"note: {name} has random weights (no --weights or --checkpoint given): what follows is an "
              "untrained network's", file=sys.stderr)
        variables = init_variables(model, size)
        origin = "random weights"
    args.model = name
    loaded = LoadedModel(name=name, model=model, variables=variables, size=size,
                         num_classes=output_classes(model, variables, size), origin=origin, run=choice.run)
    if classes:
        check_classes(loaded, *classes)
    return loaded


def load_images(paths: list[str], size: int, *, resize: int | None = None) -> tuple[list[str], np.ndarray]:
    """(names, (N, size, size, 3) float32 in [0, 1]): shorter side resized to ``resize`` (default ``size``),
    then the central ``size`` x ``size`` crop; a name is the file's name without its extension. No paths:
    scikit-image's sample photos."""
    from jaxcnn.data.image_io import center_crop, load_image, resize_shorter, sample_photos

    photos = [(os.path.splitext(os.path.basename(p))[0], load_image(p)) for p in paths] if paths else \
        list(sample_photos().items())
    return [n for n, _ in photos], np.stack([center_crop(resize_shorter(im, resize or size), size) for _, im in photos])


def dataset_name(args: argparse.Namespace, chosen: ModelChoice | LoadedModel, default: str | None = None) -> str | None:
    """``--dataset``, else the ``--checkpoint`` run's data set (of ``chosen``), else ``default``."""
    if getattr(args, "dataset", None):
        return args.dataset
    return chosen.run.dataset if chosen.run is not None else default


def data_dir_for(name: str, run=None, data_dir: str | None = None) -> str | None:
    """Where data set ``name`` is read from: ``data_dir``, else the ``--checkpoint`` run's data dir when the run
    trained on ``name`` or on another tfds set (one tfds data dir holds them all), else None (tfds's own)."""
    from jaxcnn.data.tfds_sources import TFDS_DATASETS

    if data_dir or run is None or not run.data_dir:
        return data_dir
    tfds_set = lambda n: n.split("/")[0] in TFDS_DATASETS
    return run.data_dir if name == run.dataset or (tfds_set(name) and tfds_set(run.dataset)) else None


class Labelled:
    """The image and label of ``source``'s examples (ReaL's variable-length label sets and other keys left out, so
    that examples batch), at ``indices`` (default: all); ``limited`` spreads ``limit`` of them evenly."""

    def __init__(self, source, indices=None):
        self.source, self.num_classes, self.name = source, source.num_classes, source.name
        self.indices = np.arange(len(source)) if indices is None else indices

    @classmethod
    def limited(cls, source, limit: int) -> "Labelled":
        """``limit`` examples spread evenly (the first, the last, and equal steps between), so that a folder, whose
        examples come class by class, gives every class."""
        return cls(source, np.unique(np.linspace(0, len(source) - 1, limit).round().astype(np.int64)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        ex = self.source[int(self.indices[i])]
        return {"image": ex["image"], "label": ex["label"]}


def dataset_source(name: str, split: str, size: int, *, limit: int | None = None, run=None,
                   data_dir: str | None = None):
    """(source of ``size`` x ``size`` uint8 examples, number of classes) for ``split`` of data set ``name``.

    The ``--checkpoint`` run's data set (``run``) is read through the run's evaluation transform; any other data
    set whose images are not all ``size`` x ``size`` is resized and centre-cropped (``jaxcnn.data.transforms``'
    ``center`` policy: shorter side to ``size / 0.875``). ``limit``: at most that many examples, spread evenly
    over the split (``Labelled.limited``). ``data_dir``: see ``data_dir_for``.
    """
    from jaxcnn.data.sources import TransformedSource, get_source
    from jaxcnn.data.transforms import make_eval_transform

    if limit is not None and limit <= 0:
        raise ValueError(f"--limit must be > 0, got {limit}")
    own = run is not None and name == run.dataset
    where = data_dir_for(name, run, data_dir)
    src = get_source(name, split, size=size, **({"data_dir": where} if where else {}))
    policy = run.eval_transform if own else "none"
    if policy == "none" and tuple(getattr(src, "image_shape", (0, 0))[:2]) != (size, size):
        policy = "center"
    if policy != "none":
        src = TransformedSource(src, make_eval_transform(size, policy, **(run.eval_options if own else {})))
    src = Labelled.limited(src, limit) if limit is not None and limit < len(src) else Labelled(src)
    return src, int(src.num_classes)


def dataset_batches(source, batch_size: int):
    """``(images (B, H, W, 3) float32 in [0, 1], labels (B,), mask (B,))`` batches of ``source`` in order, the last
    padded to the full size (mask 0), read by the loader's threads."""
    import jax

    from jaxcnn.data.loader import eval_batches

    if batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {batch_size}")
    devices = jax.device_count()
    batch_size = -(-batch_size // devices) * devices     # one that divides over the devices
    for b in eval_batches(source, global_batch=min(batch_size, -(-len(source) // devices) * devices)):
        yield b["image"].astype(np.float32) / 255.0, b["label"], b["mask"]


def load_dataset(name: str, split: str, size: int, *, limit: int | None = None, run=None,
                 data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(images (N, size, size, 3) float32 in [0, 1], labels (N,), number of classes) of ``dataset_source``,
    held in memory (for the commands that go over their images many times)."""
    src, classes = dataset_source(name, split, size, limit=limit, run=run, data_dir=data_dir)
    return (*in_memory(src), classes)


def in_memory(source) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, 3) float32 in [0, 1], labels (N,)) of every example of ``source``."""
    ex = [source[i] for i in range(len(source))]
    return np.stack([e["image"] for e in ex]).astype(np.float32) / 255.0, np.array([e["label"] for e in ex])


def check_classes(loaded: LoadedModel, dataset: str, num_classes: int) -> None:
    """Refuses (one line) a model whose number of classes is not the data set's: its scores would be meaningless."""
    _check_classes(loaded.name, loaded.origin, loaded.num_classes, dataset, num_classes)


def _check_classes(name: str, origin: str, got: int, dataset: str, num_classes: int) -> None:
    if got != num_classes:
        raise ValueError(
            f"{name} ({origin}) scores {got} classes but {dataset} has {num_classes}; "
            f"give --checkpoint of a run trained on {dataset}, or --weights of a model with {num_classes} classes")


__all__ = ["Labelled", "LoadedModel", "ModelChoice", "abstract_classes", "add_model_args", "check_classes",
           "choose_model", "data_dir_for", "dataset_batches", "dataset_name", "dataset_source", "image_size",
           "in_memory", "load_dataset", "load_images", "load_model", "output_classes"]
