"""``jaxcnn eval``: top-1/top-5 of checkpoints, and of their ensemble."""

from __future__ import annotations

import argparse


def _cmd_eval(args: argparse.Namespace) -> None:
    from jaxcnn.training.evaluation import evaluate_runs

    results = evaluate_runs(args.workdirs, ten_crop=args.ten_crop)
    views = "; ".join(sorted({r["views"] for r in results.values() if "views" in r}))
    print(f"{'run':<40} {'top-1':>7} {'top-5':>7}   ({views})")
    for name, r in results.items():
        print(f"{name:<40} {100 * r['top1']:>6.2f}% {100 * r['top5']:>6.2f}%")


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate checkpoints (several: also their ensemble)")
    p.add_argument("workdirs", nargs="+", help="run directories (each with checkpoints/)")
    p.add_argument("--ten-crop", action="store_true", help="average over AlexNet's 10 crops")
    p.set_defaults(func=_cmd_eval)
