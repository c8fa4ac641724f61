"""``jaxcnn eval``: top-1/top-5 (and ReaL) of checkpoints and weight files, their ensemble, on one or more test sets.

``jaxcnn eval RUN ... [--model M --weights FILE ...] [--dataset D ...] [--data-dir DIR] [--ten-crop]``
scores every run and weight file (each ``--weights`` pairs with the ``--model`` before it; one ``--model``
serves every ``--weights``) on each data set, streamed in batches over every device
(``jaxcnn.training.evaluation``). With several members it adds their ensemble; with several data sets
it prints each member's top-1 on each, the drop from the first, and Kendall's tau of the ranking.
"""

from __future__ import annotations

import argparse


def _members(args: argparse.Namespace):
    from jaxcnn.training.evaluation import run_member, weights_member

    models, weights = args.model or [], args.weights or []
    if weights and not models:
        raise ValueError("--weights needs --model (the registry name the weights are for)")
    if models and not weights:
        raise ValueError("--model needs --weights (eval scores trained models; a run directory is positional)")
    if len(models) not in (1, len(weights)):
        raise ValueError(f"{len(models)} --model for {len(weights)} --weights: give one --model for all, "
                         "or one before each --weights")
    if (args.size is not None or args.resize is not None) and not weights:
        raise ValueError("--size and --resize apply to --weights (a run is scored at its own size)")
    if args.ema and not args.workdirs:
        raise ValueError("--ema selects the runs' weight averages: give run directories")
    members = [run_member(wd, args.ten_crop, args.ema) for wd in args.workdirs]
    for i, path in enumerate(weights):
        members.append(weights_member(models[i if len(models) > 1 else 0], path, size=args.size,
                                      resize=args.resize, ten_crop=args.ten_crop))
    names = [m.name for m in members]
    if len(set(names)) < len(names):
        raise ValueError(f"a model is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return members


def _datasets(args: argparse.Namespace, members) -> list[tuple[str, str | None]]:
    """(data set, data dir) of each test set: --dataset, else the runs' data set; the data dir is --data-dir,
    else that of a run trained on the data set, else that of a run trained on another tfds set (one tfds data
    dir holds them all: ``jaxcnn.cli.loading.data_dir_for``)."""
    from jaxcnn.cli.loading import data_dir_for

    runs = [m.run for m in members if m.run is not None]
    if args.dataset:
        names = args.dataset
    else:
        trained = sorted({r.dataset for r in runs})
        if not trained:
            raise ValueError("give --dataset: weight files carry no data set")
        if len(trained) > 1:
            raise ValueError(f"the runs were trained on different data sets ({', '.join(trained)}); "
                             "give --dataset to score them on one")
        names = trained
    own = {r.dataset: r.data_dir for r in reversed(runs) if r.data_dir}

    def where(name):
        return args.data_dir or own.get(name) or next(filter(None, (data_dir_for(name, r) for r in runs)), None)
    return [(name, where(name)) for name in names]


def _pct(x: float) -> str:
    return f"{100 * x:>6.2f}%"


def _print_table(res: dict) -> None:
    real = any("real" in r for r in res["members"].values())
    views = "; ".join(dict.fromkeys(r["views"] for r in res["members"].values()))
    title = f"{res['dataset']} ({res['count']} images)"
    print(f"{title:<40} {'top-1':>7} {'top-5':>7}" + (f" {'ReaL':>7}" if real else "") + f"   ({views})")
    rows = dict(res["members"])
    if "ensemble" in res:
        rows[f"ensemble of {len(res['members'])}"] = res["ensemble"]
    for name, r in rows.items():
        print(f"{name:<40} {_pct(r['top1'])} {_pct(r['top5'])}" + (f" {_pct(r['real'])}" if real else ""))
    if real:
        first = next(iter(res["members"].values()))
        print(f"ReaL: {first['real_count']} of {first['count']} images have ReaL labels; the others are left out")


def _print_comparison(results: list[dict]) -> None:
    from jaxcnn.training.evaluation import compare

    names = list(results[0]["members"])
    sets = [r["dataset"] for r in results]
    width = max(10, *(len(s) for s in sets))
    print()
    print(f"{'top-1':<40} " + " ".join(f"{s:>{width}}" for s in sets)
          + "".join(f" {'drop ' + str(i + 2):>8}" for i in range(len(sets) - 1)))
    comparisons = compare(results)
    for n in names:
        accs = " ".join(f"{_pct(r['members'][n]['top1']):>{width}}" for r in results)
        drops = "".join(f" {100 * c['drop'][n]:>8.2f}" for c in comparisons)
        print(f"{n:<40} {accs}{drops}")
    for c in comparisons:
        if c["tau"] is None:
            print(f"Kendall's tau {c['reference']} vs {c['dataset']}: needs 2 or more models")
        else:
            print(f"Kendall's tau of the {len(names)} models' top-1 ranking, {c['reference']} vs {c['dataset']}: "
                  f"{c['tau']:.3f} (p = {c['p_value']:.3g})")


def _workers(args: argparse.Namespace) -> int:
    """--data-workers, else the loader's default for this backend (``jaxcnn.data.loader.default_workers``)."""
    from jaxcnn.data.loader import resolve_workers

    return resolve_workers(args.data_workers, "--data-workers")


def _cmd_eval(args: argparse.Namespace) -> None:
    from jaxcnn.training.evaluation import evaluate

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    members = _members(args)
    workers = _workers(args)
    results = []
    for i, (dataset, data_dir) in enumerate(_datasets(args, members)):
        if i:
            print()
        res = evaluate(members, dataset, split=args.split, data_dir=data_dir, batch_size=args.batch_size,
                       progress=not args.no_progress, workers=workers)
        _print_table(res)
        results.append(res)
    if len(results) > 1:
        _print_comparison(results)


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate checkpoints and weight files on data sets (several: their ensemble)")
    p.add_argument("workdirs", nargs="*", help="run directories (each with checkpoints/)")
    p.add_argument("--model", action="append", help="registry name of the --weights that follow (repeatable)")
    p.add_argument("--weights", action="append", help="torchvision state dict (.safetensors, .npz, .pth); "
                                                       "repeatable")
    p.add_argument("--dataset", nargs="+", help="test set(s) (default: the runs' data set); several: the drop and "
                                                "Kendall's tau of the ranking")
    p.add_argument("--data-dir", help="where the data sets are prepared (default: the run's, else tfds's)")
    p.add_argument("--split", default="test", help="split to score (default: test; ImageNet's validation)")
    p.add_argument("--size", type=int, help="--weights: crop size (default: the model's resolution)")
    p.add_argument("--resize", type=int, help="--weights: shorter side before the crop (default: size * 256/224)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch, rounded up to the devices")
    p.add_argument("--ten-crop", action="store_true", help="average over AlexNet's 10 crops")
    p.add_argument("--data-workers", type=int, help="loader processes decoding the images (0: threads; default: "
                                                     "none on the CPU, else the cores but two)")
    p.add_argument("--ema", action="store_true", help="score each run's weight average (EMA) instead of its raw "
                                                      "weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)
