"""The input pipeline alone: images/s of the training batches ``jaxcnn train`` would read, and which side bounds a run.

The stream is the training loop's own (``jaxcnn.training.loop.train_stream``: the loader's
``train_batches`` with the run's augmentation, workers and batch), built from the same config fields
as ``jaxcnn train`` (``dataset``, ``image_size``, ``batch_size``, ``augment``), so what is timed is what a
run would wait for. Timed on the host: decoding, augmentation and batching, not the copy to the
devices, which the loop overlaps with the running step (``prefetch_batches``).

A run is loader-bound when the loader delivers fewer images per second than the train step consumes.
"""

from __future__ import annotations

import time

from jaxcnn.models import model_info
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.loop import train_stream
from jaxcnn.training.tasks import task_for

TARGET_S = 2.0          # time batches for about this long
MIN_BATCHES, MAX_BATCHES = 3, 500


def time_pipeline(source: str, *, model: str, batch: int, size: int, augment: str = "auto",
                  data_dir: str | None = None, target_s: float | None = None, **fields) -> dict:
    """Images/s of the training stream of ``model`` on data set ``source`` (``get_source``'s names) at ``batch``
    and ``size``: the first batch apart (workers starting, files opening), then batches for about
    ``target_s`` seconds (default ``TARGET_S``; ``MIN_BATCHES`` to ``MAX_BATCHES``). ``augment="auto"``: the
    shift policy for fixed-size data (digits, shapes), Inception's random-resized crop for variable-size
    images (folders, tfds); ``fields``: other ``TrainConfig`` fields of the stream."""
    from jaxcnn.data.loader import resolve_workers, usable_cores
    from jaxcnn.data.sources import get_source

    src = get_source(source, "train", size=size, **({"data_dir": data_dir} if data_dir else {}))
    if augment == "auto":
        augment = "shift" if hasattr(src, "image_shape") else "inception"
    cfg = TrainConfig(model=model, dataset=source, image_size=size, batch_size=batch, augment=augment,
                      data_dir=data_dir, **fields)
    task = task_for(model_info(model).task)
    src, _ = task.prepare(cfg, src, src)
    stream = train_stream(cfg, src, task.augment(cfg, src), 0, MAX_BATCHES + 1)
    t = time.perf_counter()
    first = next(stream)
    first_s = time.perf_counter() - t
    target_s = TARGET_S if target_s is None else target_s
    n, t = 0, time.perf_counter()
    while n < MIN_BATCHES or (n < MAX_BATCHES and time.perf_counter() - t < target_s):
        next(stream)
        n += 1
    seconds = time.perf_counter() - t
    return {"source": source, "augment": augment, "batch": batch, "size": size,
            "image_shape": list(first["image"].shape[1:]), "images_per_s": n * len(first["image"]) / seconds,
            "batches": n, "seconds": seconds, "first_batch_s": first_s,
            "data_workers": resolve_workers(cfg.data_workers), "cores": usable_cores()}


def bound(step_images_per_s: float, loader_images_per_s: float) -> dict:
    """Which side bounds a run whose train step runs at ``step_images_per_s``: ``{"bound": "loader" | "model
    step", "headroom": loader / step}`` (below 1: the devices wait for data)."""
    headroom = loader_images_per_s / step_images_per_s
    return {"bound": "loader" if headroom < 1 else "model step", "headroom": headroom}
