"""The input pipeline alone: JPEG decode + Inception random-resized crop to 224 + flip, images/s per CPU core.

Writes ``--images`` JPEGs (ImageNet-like 500x375, cut from scikit-image's photos) into a temporary class
folder, then measures (a) one core: a plain loop over ``ImageFolder`` + the transform, and (b) the
loader end to end as a training run reads it (``jaxcnn.bench.pipeline``, what ``jaxcnn bench --data``
times: the loop's stream with its workers, batches of 32).

    python -m benchmarks.pipeline --images 256
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from benchmarks import harness

MODULE = "benchmarks.pipeline"


def write_folder(root: str, n: int) -> None:
    import numpy as np
    from PIL import Image

    from jaxcnn.data.image_io import sample_photos

    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.fromarray((p * 255).astype(np.uint8)).resize((750, 560))) for p in
              sample_photos().values()]
    for i in range(n):
        d = os.path.join(root, "train", f"class{i % 4}")
        os.makedirs(d, exist_ok=True)
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - 375), rng.integers(0, p.shape[1] - 500)
        Image.fromarray(p[y:y + 375, x:x + 500]).save(os.path.join(d, f"{i}.jpg"), quality=90)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    import numpy as np

    from jaxcnn.bench.pipeline import time_pipeline
    from jaxcnn.data.sources import get_source
    from jaxcnn.data.transforms import make_train_transform

    with tempfile.TemporaryDirectory() as root:
        write_folder(root, args.images)
        src = get_source(f"folder:{root}", "train")
        tf = make_train_transform("inception", args.size)
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for i in range(len(src)):
            out = tf(src[i], rng)
        one_core = len(src) / (time.perf_counter() - t)
        assert out["image"].shape == (args.size, args.size, 3)
        loader = time_pipeline(f"folder:{root}", model="resnet50", batch=32, size=args.size,
                               augment="inception")["images_per_s"]
    cores = os.cpu_count() or 1
    print(f"decode + random-resized crop {args.size} + flip, 500x375 JPEGs, {cores} cores")
    print(f"| path | images/s | per core |\n|---|---|---|\n| one core, plain loop | {one_core:.0f} | {one_core:.0f} |\n"
          f"| loader ({cores} cores) | {loader:.0f} | {loader / cores:.0f} |")
    rows = [{"path": "one core, plain loop", "images_per_s": one_core, "per_core": one_core},
            {"path": f"loader ({cores} cores)", "images_per_s": loader, "per_core": loader / cores}]
    return harness.write_result("pipeline", MODULE, argv, rows, out=args.out, settings=harness.settings(args),
                                jax_versions=False)


if __name__ == "__main__":
    main()
