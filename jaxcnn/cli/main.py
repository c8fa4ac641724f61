"""The ``jaxcnn`` command.

  jaxcnn train [--config train/X.py] [key=value ...]
                                         train (default: ResNet-18 on the bundled digits, no download)
  jaxcnn eval WORKDIR [WORKDIR ...] [--ten-crop]
                                         top-1/top-5 of checkpoints, and of their ensemble
  jaxcnn models [NAME ...] [--family F] every model (or those named): parameters, GFLOPs at native size,
                                         torchvision twin
  jaxcnn predict [--model M] [--weights FILE | --checkpoint RUN] [IMAGE ...]
                                         top-5 classes of photos (default: scikit-image's sample photos)
  jaxcnn export RUN OUT.safetensors [--ema]
                                         a run's weights (or their average) as a torchvision state dict
  jaxcnn visualize | dream | invert | style ...      (jaxcnn/cli/dream.py)
  jaxcnn attack | fool | patch ...                     (jaxcnn/cli/attack.py)
  jaxcnn explain --method occlusion|saliency|deconvnet|guided|ig|smoothgrad|gradcam|top-patches|filters
                                                       (jaxcnn/cli/explain.py)
                                         input optimisation; each takes --model/--weights/--checkpoint
                                         (jaxcnn/cli/loading.py) and writes PNGs and a report under out/
  jaxcnn fixture DIR                     a small ImageNet-format data set to try the commands on
                                                       (jaxcnn/cli/fixture.py)
  jaxcnn bench [MODEL ...] [--mode infer|train|both] [--vs torch] ...  (jaxcnn/cli/bench.py)
                                         throughput, MFU and memory of the training path, beside PyTorch

Errors in what the user gave (unknown model, unreadable file, bad weights, a value of the wrong
type, an output directory that cannot be written) are one line on stderr and exit status 2;
output directories are checked before any work starts.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from jaxcnn.cli import compile_cache
from jaxcnn.cli.loading import add_model_args
from jaxcnn.cli.writable import writable_dir
from jaxcnn.cpu import host_memory

# modules of jaxcnn.cli with an ``add_commands(subparsers)``
COMMAND_MODULES = ("evaluate", "dream", "attack", "explain", "bench", "fixture")


def _cmd_models(args: argparse.Namespace) -> None:
    from jaxcnn import count_flops, count_params, create_model, list_models, model_info
    from jaxcnn.weights.torchvision import variable_shapes

    names = list_models(family=args.family)
    if not names:
        raise ValueError(f"no models in family {args.family!r}")
    if args.names:
        unknown = [n for n in args.names if n not in names]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}; valid: {', '.join(names)}")
        names = [n for n in names if n in args.names]
    print(f"{'model':<18} {'family':<13} {'task':<13} {'params':>12} {'GFLOPs':>8} {'size':>5}  torchvision twin")
    for name in names:
        info = model_info(name)
        model = create_model(name)
        params = count_params(variable_shapes(model, info.resolution))
        gflops = count_flops(model, info.resolution) / 1e9
        print(f"{name:<18} {info.family:<13} {info.task:<13} {params:>12,} {gflops:>8.2f} {info.resolution:>5}  "
              f"{info.torchvision or '-'}")
    print("GFLOPs = 2 x multiply-accumulates of conv/dense layers for one image at the native size.")


def _cmd_predict(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from jaxcnn import class_names, preprocess
    from jaxcnn.cli.loading import choose_model, load_images, load_model

    choice = choose_model(args, task="classification")
    size = choice.size
    labels, batch = load_images(args.images, size, resize=round(size * 256 / 224))
    labels = args.images or labels
    loaded = load_model(args, choice=choice)
    model, variables = loaded.model, loaded.variables
    forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, preprocess(x), train=False)[0]))
    t0 = time.perf_counter()
    probs = jax.block_until_ready(forward(variables, batch))
    t1 = time.perf_counter()
    probs = np.asarray(jax.block_until_ready(forward(variables, batch)))
    t2 = time.perf_counter()
    names = class_names()
    for label, p in zip(labels, probs):
        top = np.argsort(-p)[: args.top]
        print(f"{label}: " + ", ".join(f"{names[i] if len(p) == len(names) else i} {p[i]:.3f}" for i in top))
    print(f"{loaded.name} on {len(batch)} image(s) at {size}x{size}: first call (compile + run) {t1 - t0:.2f} s, "
          f"then {1000 * (t2 - t1) / len(batch):.1f} ms/image on {jax.devices()[0].device_kind}")


def _cmd_train(args: argparse.Namespace) -> None:
    from jaxcnn.parallel.multihost import initialize
    initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.join_timeout)
    import jax

    from jaxcnn.training import load_config, train

    cfg = load_config(args.config).with_overrides(args.overrides)
    writable_dir(cfg.workdir, "workdir")
    t0 = time.perf_counter()
    result = train(cfg, progress=not args.no_progress,
                   reuse="resume" if args.resume else "overwrite" if args.overwrite else None)
    if jax.process_index() == 0:
        ev = result["eval"]
        scores = (f"test mIoU {100 * ev['miou']:.2f}%, pixel accuracy {100 * ev['pixel_acc']:.2f}%" if "miou" in ev
                  else f"test top-1 {100 * ev.get('top1', 0):.2f}%, top-5 {100 * ev.get('top5', 0):.2f}%")
        print(f"{cfg.model} on {cfg.dataset}: {scores} after {result['step']} steps in "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"checkpoints: {result['checkpoints']}\nmetrics:     {result['metrics']} (+ tensorboard/)\n"
              f"plot:        {result.get('plot')}")


def _cmd_export(args: argparse.Namespace) -> None:
    import jax

    from jaxcnn.training.evaluation import restore_run
    from jaxcnn.weights import to_torch_state_dict, write_state_dict

    if os.path.splitext(args.path)[1].lower() not in (".safetensors", ".npz"):
        raise ValueError(f"{args.path}: the export is written as .safetensors or .npz")
    writable_dir(os.path.dirname(os.path.abspath(args.path)), "output directory")
    cfg, _, variables = restore_run(args.workdir, ema=args.ema)
    state = to_torch_state_dict(jax.device_get(variables))
    write_state_dict(state, args.path)
    print(f"{args.path}: {len(state)} tensors of the {cfg.model} run {args.workdir}"
          f"{' (weight average)' if args.ema else ''}, torchvision's key names; read it with "
          f"--model {cfg.model} --weights {args.path}")


def _config_fields_help() -> str:
    from jaxcnn.training.config import override_fields

    rows = override_fields()
    width = max(len(f"{k}: {t}") for k, t, _ in rows)
    lines = [f"  {f'{k}: {t}':<{width}}  = {v!r}" for k, t, v in rows]
    return ("config fields, set as key=value anywhere among the options (a value is a Python literal; text\n"
            "may go unquoted), with the default run's values:\n" + "\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model (default: the offline digits run)", epilog=_config_fields_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=3 (see below)")
    p.add_argument("--config", help="recipe file under train/ (default: the digits run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", help="host:port of process 0, for multi-host runs")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--join-timeout", type=float, default=300, metavar="SECONDS",
                   help="multi-host: give up when not all processes have joined within this time (default 300)")
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--resume", action="store_true",
                       help="continue the run in workdir although its schedule (epochs, optimizer) changed")
    reuse.add_argument("--overwrite", action="store_true", help="discard the run in workdir and start afresh")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("models", help="list every model with parameter count and GFLOPs")
    p.add_argument("names", nargs="*", help="only these models (default: all)")
    p.add_argument("--family", help="only this family (e.g. resnet)")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("predict", help="classify photos (default: scikit-image's sample photos)")
    p.add_argument("images", nargs="*", help="image files (JPEG/PNG/...)")
    add_model_args(p, "resnet50", size_help="crop size (default: the run's with --checkpoint, else the model's "
                                            "native resolution)")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("export", help="a run's weights as a torchvision-style state dict (for --weights, PyTorch)")
    p.add_argument("workdir", help="a `jaxcnn train` run directory")
    p.add_argument("path", metavar="OUT", help="the file to write: .safetensors or .npz")
    p.add_argument("--ema", action="store_true", help="the run's weight average instead of its raw weights")
    p.set_defaults(func=_cmd_export)
    for name in COMMAND_MODULES:   # each adds its sub-commands
        importlib.import_module(f"jaxcnn.cli.{name}").add_commands(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; ``train``'s key=value overrides may come before, between or after its options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # what a result records as its command
    try:
        if getattr(args, "out", None):
            writable_dir(args.out, "--out")
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"jaxcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # TrainingDiverged: the run stopped, its checkpoints are intact
        if type(e).__name__ != "TrainingDiverged":
            raise
        print(f"jaxcnn {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    return 0


def run() -> int:
    """The ``jaxcnn`` console script: ``main`` in a process set up for long runs (``host_memory``,
    ``compile_cache``)."""
    host_memory.keep_freed_memory()
    compile_cache.enable()
    return main()


if __name__ == "__main__":
    sys.exit(run())
