"""The input pipeline alone: JPEG decode + Inception random-resized crop + flip, images/s per CPU core.

On the ImageNet-format fixture's training JPEGs (``jaxcnn.data.fixture``: scikit-image's photos at ImageNet's
sizes, 300-500 px on the longer side, RGB and greyscale) written to a temporary folder, it measures

* one core, a plain loop over the folder, for each ``--sizes``: the file decoded in full to an array (a
  source's ``src[i]``) by Pillow, then cropped and resized, the same with simplejpeg's decode, the
  undecoded file cropped and resized without the JPEG draft, and with it (the
  default: crops at least twice the output decoded at 1/2-1/8 scale);
* the loader (``jaxcnn.data.loader.train_batches``, batches of ``--batch``) in one thread, in ``--workers``
  worker processes and in as many threads as cores: images/s once every worker has sent a batch (process
  start-up apart), per core, images per CPU second of the process and its workers (the work a core does,
  which the machine's other load changes little), and the cores a ``--gpu-rate`` needs at that rate.

Each figure is the best of ``--rounds`` rounds (the paths of a round run one after the other, the rounds
rotate their order), with the spread (slowest - fastest) / median: other processes on the machine show up
as spread.

    python -m benchmarks.pipeline --rounds 3
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from benchmarks import harness

MODULE = "benchmarks.pipeline"


def _best(runs: list[float]) -> dict:
    med = statistics.median(runs)
    return {"images_per_s": max(runs), "spread": (max(runs) - min(runs)) / med if med else 0.0,
            "runs": [round(r, 1) for r in runs]}


def one_core(src, size: int, rounds: int) -> dict[str, dict]:
    """images/s of the four decode paths on one core, over every file of ``src``."""
    import numpy as np

    from jaxcnn.data.transforms import compose, hflip, random_resized_crop

    from jaxcnn.data import image_io

    full = compose(random_resized_crop(size, draft=False), hflip())
    paths = {   # (read, transform, JPEGs decoded by simplejpeg)
        "Pillow decode to an array, crop": (src.__getitem__, full, False),
        "simplejpeg decode to an array, crop": (src.__getitem__, full, True),
        "undecoded file, full-scale decode": (src.encoded, full, True),
        "undecoded file + JPEG draft": (src.encoded, compose(random_resized_crop(size), hflip()), True),
    }
    runs: dict[str, list[float]] = {k: [] for k in paths}
    keys = list(paths)
    fast = image_io.FAST_JPEG                       # False where simplejpeg is not installed
    try:
        for r in range(rounds + 1):                 # round 0 warms the file cache
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                read, transform, use_simplejpeg = paths[k]
                image_io.FAST_JPEG = use_simplejpeg and fast
                t = time.perf_counter()
                for i in range(len(src)):
                    out = transform(read(i), np.random.default_rng((0, i)))
                if r:
                    runs[k].append(len(src) / (time.perf_counter() - t))
                assert out["image"].shape == (size, size, 3)
    finally:
        image_io.FAST_JPEG = fast
    return {k: _best(v) for k, v in runs.items()}


def cpu_seconds() -> float | None:
    """CPU seconds (user + system) used so far by this process and its live children (Linux's /proc), or None."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stat(pid):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    try:
        me, total = os.getpid(), 0.0
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    fields = stat(p)
                except OSError:
                    continue
                if int(p) == me or int(fields[1]) == me:
                    total += (int(fields[11]) + int(fields[12])) / tick
        return total
    except OSError:
        return None


def loader_rate(src, size: int, batch: int, steps: int, **how) -> tuple[float, float | None]:
    """(images/s, images per CPU second of this process and its workers) of ``train_batches`` once every worker
    has sent a batch (``how``: ``threads=`` or ``workers=``). The second is the work each core does, which
    other processes competing for the cores do not change much; the first is what this machine delivered."""
    from jaxcnn.data.loader import train_batches
    from jaxcnn.data.transforms import make_train_transform

    warm = 1 + how.get("workers", 0)        # every worker process has started and sent a batch
    it = train_batches(src, global_batch=batch, seed=0, augment=make_train_transform("inception", size),
                       num_steps=steps + warm, **how)
    for _ in range(warm):
        next(it)
    c, t = cpu_seconds(), time.perf_counter()
    n = 0
    for _ in range(steps):      # stop before the iterator ends, while the workers still run (their CPU counts)
        n += len(next(it)["label"])
    c2, t2 = cpu_seconds(), time.perf_counter()
    del it
    return n / (t2 - t), (n / (c2 - c) if c is not None and c2 is not None and c2 > c else None)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--images", type=int, default=240, help="fixture training JPEGs, spread over its 6 classes")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128], help="crop sizes of the one-core paths")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40, help="loader batches timed per round")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu-rate", type=float, default=3000.0, help="images/s of an accelerator to feed")
    args = ap.parse_args(argv)

    from jaxcnn.data.fixture import build
    from jaxcnn.data.loader import usable_cores
    from jaxcnn.data.sources import get_source

    cores = usable_cores()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        build(root, train_per_class=max(1, args.images // 6), val_per_class=1, v2_per_class=1, voc=(1, 1),
              tfds=False)
        src = get_source(f"folder:{os.path.join(root, 'ILSVRC')}", "train")
        for size in args.sizes:
            for path, r in one_core(src, size, args.rounds).items():
                rows.append({"what": f"one core, {path}", "size": size, "cores": 1, **r,
                             "per_core": r["images_per_s"]})
        size = args.sizes[0]
        ways = {"loader, 1 thread": ({"threads": 1}, 1),
                **{f"loader, {w} worker process{'es' if w > 1 else ''}": ({"workers": w}, w) for w in args.workers},
                f"loader, {cores} threads": ({"threads": cores}, cores)}
        runs: dict[str, list[float]] = {k: [] for k in ways}
        per_cpu: dict[str, list[float]] = {k: [] for k in ways}
        keys = list(ways)
        for r in range(args.rounds):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                rate, cpu_rate = loader_rate(src, size, args.batch, args.steps, **ways[k][0])
                runs[k].append(rate)
                if cpu_rate is not None:
                    per_cpu[k].append(cpu_rate)
        for k, (_, used) in ways.items():
            b = _best(runs[k])
            rows.append({"what": k, "size": size, "cores": used, **b, "per_core": b["images_per_s"] / min(used, cores),
                         "per_cpu_second": max(per_cpu[k]) if per_cpu[k] else None})
        n_files = len(src)
    one = next((r for r in rows if r["what"] == "loader, 1 worker process"), None)
    two = next((r for r in rows if r["what"] == "loader, 2 worker processes"), None)
    per_core = max(r["per_cpu_second"] or r["per_core"] for r in rows
                   if r["what"].startswith("loader") and "process" in r["what"])
    derived = {"two_processes_over_one": two["images_per_s"] / one["images_per_s"] if one and two else None,
               "process_per_cpu_second": per_core, "gpu_rate": args.gpu_rate,
               "cores_for_gpu_rate": args.gpu_rate / per_core}
    print(f"decode + random-resized crop + flip of {n_files} JPEGs (300-500 px), {cores} cores; best of "
          f"{args.rounds} rounds (spread); per CPU s: images per CPU second of the process and its workers")
    print(harness.markdown(["path", "size", "images/s", "per core", "per CPU s", "spread"],
                           [[r["what"], r["size"], f"{r['images_per_s']:.0f}", f"{r['per_core']:.0f}",
                             f"{r['per_cpu_second']:.0f}" if r.get("per_cpu_second") else "",
                             f"{100 * r['spread']:.0f}%"] for r in rows]))
    if two:
        print(f"2 processes / 1: {derived['two_processes_over_one']:.2f}x")
    print(f"{args.gpu_rate:.0f} images/s needs {derived['cores_for_gpu_rate']:.1f} cores of worker processes at "
          f"{per_core:.0f} images per CPU second")
    return harness.write_result("pipeline", MODULE, argv, rows, out=args.out, settings=harness.settings(args),
                                extra={"derived": derived}, jax_versions=False)


if __name__ == "__main__":
    main()
