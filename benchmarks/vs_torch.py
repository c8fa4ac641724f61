"""Every comparison of the speed issue from one command: models, input-optimisation loops, device scaling.

    python benchmarks/vs_torch.py          # about an hour on the project's 2-core CPU (58 min in run 9)

runs, one after the other (each in processes of its own, PyTorch beside jaxcnn as in benchmarks/README.md):

  models_vs_torch.py --models resnet50 vgg16 alexnet googlenet   inference and train step, f32 and bf16,
                                                                  PyTorch eager / channels-last / torch.compile
  inputopt_vs_torch.py --size 224 --batch 16                      style transfer, DeepDream, PGD (ResNet-18,
  inputopt_vs_torch.py --size 128 --batch 8                       batch 16 at 224 px: the issue's setting)
  train_scaling.py, attack_scaling.py                             1, 2, 4, 8 simulated devices, jit vs pmap

and writes each script's JSON under ``--out`` plus ``summary.md`` there: machine, versions, the command
and the headline ratios, which benchmarks/RESULTS.md quotes. ``--parts`` runs a subset (e.g. ``loops``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("models", "loops", "scaling")
MODELS = ("resnet50", "vgg16", "alexnet", "googlenet")
LOOPS = ((224, 16), (128, 8))      # (image size, PGD batch)


def _run(script: str, *args: str) -> None:
    cmd = [sys.executable, os.path.join(HERE, script), *args]
    print("$ " + " ".join(["python", f"benchmarks/{script}", *args]), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"({time.perf_counter() - t:.0f} s)\n", flush=True)


def _load(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def model_rows(data: dict) -> list[str]:
    """The headline ratios per model: jaxcnn against each PyTorch variant, inference / train step."""
    out = ["| model (batch) | f32 vs PyTorch channels-last | f32 vs torch.compile | bf16 vs PyTorch bf16 autocast "
           "| jaxcnn f32 img/s (inference / train) | train MFU | train-step compile s |",
           "|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["variant"]): r for r in data["rows"]}

    def ratio(model: str, ours: str, theirs: str) -> str:
        a, b = by.get((model, ours)), by.get((model, theirs))
        if a is None or b is None:
            return "-"
        return f"{a['infer_img_s'] / b['infer_img_s']:.2f}x / {a['train_img_s'] / b['train_img_s']:.2f}x"

    for model in dict.fromkeys(r["model"] for r in data["rows"]):
        f32 = by[(model, "jaxcnn f32")]
        out.append(f"| {model} ({f32['batch']}) | {ratio(model, 'jaxcnn f32', 'torch channels-last')} "
                   f"| {ratio(model, 'jaxcnn f32', 'torch.compile')} "
                   f"| {ratio(model, 'jaxcnn bf16', 'torch channels-last bf16')} "
                   f"| {f32['infer_img_s']:.1f} / {f32['train_img_s']:.2f} | {100 * f32['train_mfu']:.0f}% "
                   f"| {f32['compile_s']:.1f} |")
    return out


def loop_rows(runs: list[dict]) -> list[str]:
    out = ["| loop | px | jaxcnn f32 s/step | PyTorch f32 s/step | f32 ratio | bf16: jaxcnn / PyTorch bf16, "
           "/ PyTorch f32 | jaxcnn compile s |", "|---|---|---|---|---|---|---|"]
    for data in runs:
        rows = {(r["workload"], r["dtype"]): r for r in data["rows"]}
        for workload in dict.fromkeys(r["workload"] for r in data["rows"]):
            f32, bf16 = rows[workload, "float32"], rows.get((workload, "bfloat16"))
            b = f"{bf16['speed_ratio']:.2f}x, {bf16['speed_ratio_vs_torch_f32']:.2f}x" if bf16 else "-"
            out.append(f"| {workload} | {data['meta']['size']} | {f32['jax_s_per_step']:.3f} "
                       f"| {f32['torch_s_per_step']:.3f} | **{f32['speed_ratio']:.2f}x** | {b} "
                       f"| {f32['jax_compile_s']:.1f} |")
    return out


def scaling_rows(train: dict | None, attack: dict | None) -> list[str]:
    out = ["| devices | train step img/s, jit | pmap | PGD img/s (jit) |", "|---|---|---|---|"]
    rows = train["rows"] if train else []
    devices = sorted({r["devices"] for r in rows} | {r["devices"] for r in (attack or {}).get("rows", [])})
    for n in devices:
        j = next((r for r in rows if r["devices"] == n and r["strategy"] == "jit"), None)
        p = next((r for r in rows if r["devices"] == n and r["strategy"] == "pmap"), None)
        a = next((r for r in (attack or {}).get("rows", []) if r["devices"] == n), None)
        cell = lambda r, k="images_per_s": f"{r[k]:.1f}" if r else "-"  # noqa: E731
        out.append(f"| {n} | {cell(j)} | {cell(p)} | {cell(a)} |")
    return out


def summary(out_dir: str, command: str) -> str:
    models = _load(os.path.join(out_dir, "models_vs_torch.json"))
    loops = [d for d in (_load(os.path.join(out_dir, f"inputopt_vs_torch_{s}.json")) for s, _ in LOOPS) if d]
    train, attack = (_load(os.path.join(out_dir, f"{n}_scaling.json")) for n in ("train", "attack"))
    lines = [f"# `{command}`", ""]
    meta = (models or {}).get("meta") or (loops[0]["meta"] if loops else {})
    if meta:
        native = meta.get("bf16_native")
        lines += [f"{meta.get('cpu', '?')}, {meta.get('cores', '?')} cores; jax {meta.get('jax', '?')}, "
                  f"torch {meta.get('torch', '?')}, torchvision {meta.get('torchvision', '?')}"
                  + (f"; matmul peak f32 {meta['matmul_peak_gflop_s']:.0f} GFLOP/s" if "matmul_peak_gflop_s" in meta
                     else "") + ("" if native is None else f"; native bf16: {'yes' if native else 'no'}"), ""]
    if models:
        lines += [f"Models, {models['meta']['size']} px, inference / train step (`{models['meta']['command']}`):",
                  "", *model_rows(models), ""]
    if loops:
        lines += ["Input-optimisation loops against plain PyTorch loops, 10 steps (`" +
                  "`, `".join(d["meta"]["command"] for d in loops) + "`):", "", *loop_rows(loops), ""]
    if train or attack:
        cmds = " and ".join(f"`{d['command']}`" for d in (train, attack) if d)
        lines += [f"Simulated devices on the same cores ({cmds}):", "", *scaling_rows(train, attack), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--summary-only", action="store_true", help="rewrite summary.md from the JSON files there")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    command = "python benchmarks/vs_torch.py" + (f" --parts {' '.join(args.parts)}" if len(args.parts) < 3 else "") \
        + (f" --models {' '.join(args.models)}" if tuple(args.models) != MODELS else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
    path = lambda name: os.path.join(args.out, name)  # noqa: E731
    if not args.summary_only:
        if "models" in args.parts:
            _run("models_vs_torch.py", "--models", *args.models, "--repeats", str(args.repeats), "--warmup", "2",
                 "--out", path("models_vs_torch.json"))
        if "loops" in args.parts:
            for size, batch in LOOPS:
                _run("inputopt_vs_torch.py", "--size", str(size), "--steps", "10", "--repeats", str(args.repeats),
                     "--batch", str(batch), "--out", path(f"inputopt_vs_torch_{size}.json"))
        if "scaling" in args.parts:
            _run("train_scaling.py", "--out", path("train_scaling.json"))
            _run("attack_scaling.py", "--out", path("attack_scaling.json"))
    text = summary(args.out, command)
    with open(path("summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
