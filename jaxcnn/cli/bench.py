"""``jaxcnn bench``: inference and train-step throughput of models on whatever JAX sees, beside PyTorch's.

    jaxcnn bench [MODEL ...] [--all] [--mode infer|train|both] [--batch N] [--size S]
                 [--dtype float32|bfloat16] [--strategy jit|pmap] [--devices N] [--repeats R]
                 [--csv FILE] [--json FILE] [--vs torch] [--torch-python PATH] [--profile DIR]
                 [--data SOURCE]

Each model runs the training path (``jaxcnn.bench.measure``: the placement, the sharded uint8 batch,
the donated state, the task's step and optimizer) and the inference forward; the table gives images/s
(median of the repeats, and their spread), ms/step, compile time, TFLOP/s and MFU against the device's
matmul peak measured in this process, and device memory. A batch that does not fit is halved until it
does, and the row says so. ``--vs torch`` runs torchvision's same model in a separate process on the
same device (``jaxcnn.bench.torch_side``) and prints jaxcnn's ratio to each PyTorch variant;
``--data`` times the input pipeline alone and says which side bounds a run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from jaxcnn.cli.writable import writable_dir

DEFAULT_MODELS = ("resnet50",)


def _models(args: argparse.Namespace) -> list[str]:
    from jaxcnn.models import list_models, model_info

    if args.all and args.models:
        raise ValueError("give model names or --all, not both")
    names = list_models() if args.all else (args.models or list(DEFAULT_MODELS))
    for name in names:
        model_info(name)        # unknown names: a one-line error with the valid list
    return list(dict.fromkeys(names))


def options_from(args: argparse.Namespace):
    from jaxcnn.bench.runner import Options

    for flag in ("batch", "size", "repeats", "devices", "steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be at least 1, got {value}")
    if args.memory_limit is not None and args.memory_limit <= 0:
        raise ValueError(f"--memory-limit must be positive, got {args.memory_limit}")
    if args.vs and args.vs != "torch":
        raise ValueError(f"--vs: only torch is known, got {args.vs!r}")
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    return Options(models=_models(args), modes=modes, batch=args.batch, size=args.size, dtype=args.dtype,
                   strategy=args.strategy, devices=args.devices, repeats=args.repeats, steps=args.steps,
                   memory_limit=None if args.memory_limit is None else int(args.memory_limit * 2**20),
                   profile_dir=args.profile, vs_torch=args.vs == "torch", torch_python=args.torch_python,
                   torch_compile=not args.no_torch_compile, data=args.data, data_dir=args.data_dir,
                   augment=args.augment)


def command(argv: list[str]) -> str:
    """The command line a result records (without ``--torch-python``, this machine's path)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--torch-python":
            skip = True
        elif not a.startswith("--torch-python="):
            kept.append(a)
    return shlex.join(["jaxcnn", *kept])


def _cmd_bench(args: argparse.Namespace) -> None:
    from jaxcnn.bench import report, runner

    options = options_from(args)
    if options.vs_torch:    # before JAX starts: its memory grows on demand, the rest is left to PyTorch's process
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    for what, folder in (("--csv", args.csv and os.path.dirname(os.path.abspath(args.csv))),
                         ("--json", args.json and os.path.dirname(os.path.abspath(args.json))),
                         ("--profile", args.profile)):
        if folder:
            writable_dir(folder, what)
    if args.data:
        from jaxcnn.data.sources import get_source
        get_source(args.data, "train", **({"data_dir": args.data_dir} if args.data_dir else {}))  # fails early

    def save(result: dict) -> None:
        if args.json:
            report.write_json(args.json, result)
        if args.csv:
            report.write_csv(args.csv, result)

    log = lambda line: print(line, file=sys.stderr, flush=True)
    result = runner.run(options, command=command(args.argv or sys.argv[1:]), log=log, on_model=save)
    save(result)
    print()
    runner.print_report(result)
    for path in (args.csv, args.json):
        if path:
            print(f"wrote {path}")
    if runner.failed(result):
        raise SystemExit(1)


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="inference and train-step throughput (images/s, MFU, memory), beside PyTorch",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"registry names (default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    p.add_argument("--batch", type=int, help="global batch over the devices (default: sized for the device: 256 per "
                                             "GPU or TPU; on the CPU about 128 GFLOP of forward per batch)")
    p.add_argument("--size", type=int, help="image side (default: each model's native resolution)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--strategy", choices=("jit", "pmap"), default="jit", help="data-parallel strategy")
    p.add_argument("--devices", type=int, help="use the first N devices (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median and spread)")
    p.add_argument("--steps", type=int, help="steps per timed repeat (default: about half a second's worth)")
    p.add_argument("--memory-limit", type=float, metavar="MIB",
                   help="treat a device as holding this many MiB (default: its own limit, where it reports one)")
    p.add_argument("--csv", metavar="FILE", help="write the rows as CSV")
    p.add_argument("--json", metavar="FILE", help="write the whole result as JSON")
    p.add_argument("--vs", metavar="torch", help="also time torchvision's same model with PyTorch")
    p.add_argument("--torch-python", metavar="PATH",
                   help="a Python with torch and torchvision (default: this one if it has them, else "
                        "$JAXCNN_TORCH_PYTHON)")
    p.add_argument("--no-torch-compile", action="store_true", help="leave out the torch.compile variant")
    p.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of a few steps of each row to DIR")
    p.add_argument("--data", metavar="SOURCE", help="also time the input pipeline alone on this data set (digits, "
                                                   "folder:PATH, a tfds name) and say which side bounds a run")
    p.add_argument("--data-dir", help="where tfds data sets are prepared")
    p.add_argument("--augment", default="auto", help="--data's training transform (default: shift for fixed-size "
                                                      "data, inception otherwise)")
    p.set_defaults(func=_cmd_bench)
