"""Every comparison with PyTorch from one command: models, input-optimisation loops, device scaling.

(A model's throughput beside PyTorch's, on any device: ``jaxcnn bench MODEL --vs torch``. This is the
developer's full CPU comparison, input optimisation and simulated-device scaling included.)

    python -m benchmarks.vs_torch [--torch-python PATH]     # about an hour on a 2-core CPU

runs, one after the other (each in processes of its own, PyTorch in the Python of ``--torch-python``,
this one if it has torch, or ``$JAXCNN_TORCH_PYTHON``):

  benchmarks.models_vs_torch --models resnet50 vgg16 alexnet googlenet   inference and train step, f32 and bf16,
                                                                          PyTorch eager / channels-last / torch.compile
  benchmarks.inputopt_vs_torch --size 224 --batch 16                      style transfer, DeepDream, PGD (ResNet-18,
  benchmarks.inputopt_vs_torch --size 128 --batch 8                       batch 16 at 224 px)
  benchmarks.train_scaling, benchmarks.attack_scaling                     1, 2, 4, 8 simulated devices, jit vs pmap

Each writes its JSON under benchmarks/results/ (named for the benchmark and this machine), and this
command writes ``summary.MACHINE.md`` there: machine, versions, the commands and the headline ratios.
``--parts`` runs a subset (e.g. ``loops``); ``--summary-only`` rewrites the summary from the JSON files.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

from benchmarks import harness

MODULE = "benchmarks.vs_torch"
PARTS = ("models", "loops", "scaling")
MODELS = ("resnet50", "vgg16", "alexnet", "googlenet")
LOOPS = ((224, 16), (128, 8))      # (image size, PGD batch)


def _run(module: str, *args: str, **env: str) -> None:
    print("$ " + harness.command(module, list(args)), flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *args], check=True, env=harness.subprocess_env(**env))
    print(f"({time.perf_counter() - t:.0f} s)\n", flush=True)


def _load(benchmark: str):
    """The newest result of ``benchmark`` on this machine (any accelerator), or None."""
    paths = glob.glob(os.path.join(harness.RESULTS, f"{benchmark}.{harness.machine_tag()}*.json"))
    if not paths:
        return None
    with open(max(paths, key=os.path.getmtime)) as f:
        return json.load(f)


def _command(data: dict) -> str:
    return data.get("command") or data.get("meta", {}).get("command", "?")


def model_rows(data: dict) -> list[str]:
    """The headline ratios per model: jaxcnn against each PyTorch variant, inference / train step."""
    by = {(r["model"], r["variant"]): r for r in data["rows"]}

    def ratio(model: str, ours: str, theirs: str) -> str:
        a, b = by.get((model, ours)), by.get((model, theirs))
        if a is None or b is None:
            return "-"
        return f"{a['infer_img_s'] / b['infer_img_s']:.2f}x / {a['train_img_s'] / b['train_img_s']:.2f}x"

    rows = []
    for model in dict.fromkeys(r["model"] for r in data["rows"]):
        f32 = by[(model, "jaxcnn f32")]
        rows.append([f"{model} ({f32['batch']})", ratio(model, "jaxcnn f32", "torch channels-last"),
                     ratio(model, "jaxcnn f32", "torch.compile"),
                     ratio(model, "jaxcnn bf16", "torch channels-last bf16"),
                     f"{f32['infer_img_s']:.1f} / {f32['train_img_s']:.2f}", f"{100 * f32['train_mfu']:.0f}%",
                     f"{f32['compile_s']:.1f}"])
    return harness.markdown(["model (batch)", "f32 vs PyTorch channels-last", "f32 vs torch.compile",
                             "bf16 vs PyTorch bf16 autocast", "jaxcnn f32 img/s (inference / train)", "train MFU",
                             "train-step compile s"], rows).splitlines()


def loop_rows(runs: list[dict]) -> list[str]:
    rows = []
    for data in runs:
        by = {(r["workload"], r["dtype"]): r for r in data["rows"]}
        for workload in dict.fromkeys(r["workload"] for r in data["rows"]):
            f32, bf16 = by[workload, "float32"], by.get((workload, "bfloat16"))
            b = f"{bf16['speed_ratio']:.2f}x, {bf16['speed_ratio_vs_torch_f32']:.2f}x" if bf16 else "-"
            rows.append([workload, data["meta"]["size"], f"{f32['jax_s_per_step']:.3f}",
                         f"{f32['torch_s_per_step']:.3f}",
                         f"**{f32['speed_ratio']:.2f}x**", b, f"{f32['jax_compile_s']:.1f}"])
    return harness.markdown(["loop", "px", "jaxcnn f32 s/step", "PyTorch f32 s/step", "f32 ratio",
                             "bf16: jaxcnn / PyTorch bf16, / PyTorch f32", "jaxcnn compile s"], rows).splitlines()


def scaling_rows(train: dict | None, attack: dict | None) -> list[str]:
    train_rows, attack_rows = (train or {}).get("rows", []), (attack or {}).get("rows", [])
    cell = lambda r: f"{r['images_per_s']:.1f}" if r else "-"  # noqa: E731
    rows = []
    for n in sorted({r["devices"] for r in train_rows} | {r["devices"] for r in attack_rows}):
        pick = lambda rs, **kw: next((r for r in rs if all(r[k] == v for k, v in kw.items())), None)  # noqa: E731
        rows.append([n, cell(pick(train_rows, devices=n, strategy="jit")),
                     cell(pick(train_rows, devices=n, strategy="pmap")),
                     cell(pick(attack_rows, devices=n))])
    return harness.markdown(["devices", "train step img/s, jit", "pmap", "PGD img/s (jit)"], rows).splitlines()


def summary(command: str) -> str:
    """The Markdown summary of this machine's results of the benchmarks that this command runs."""
    names = ["models_vs_torch", *(f"inputopt_vs_torch_{s}" for s, _ in LOOPS), "train_scaling", "attack_scaling"]
    data = {name: _load(name) for name in names}
    models = data.get("models_vs_torch")
    loops = [d for name, d in data.items() if name.startswith("inputopt_vs_torch") and d]
    train, attack = data.get("train_scaling"), data.get("attack_scaling")
    lines = [f"# `{command}`", ""]
    first = next((d for d in data.values() if d), None)
    if first:
        m = first.get("machine") or first.get("meta", {})
        v = {**first.get("meta", {}), **first.get("versions", {})}
        flags = f" ({', '.join(m['flags']) or 'no AVX2'})" if "flags" in m else ""
        native = m.get("bf16_native")
        lines += [f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores{flags}; jax {v.get('jax', '?')}, "
                  f"torch {v.get('torch', '?')}, torchvision {v.get('torchvision', '?')}"
                  + (f"; matmul peak f32 {models['meta']['matmul_peak_gflop_s']:.0f} GFLOP/s" if models else "")
                  + ("" if native is None else f"; native bf16: {'yes' if native else 'no'}"), ""]
    if models:
        lines += [f"Models, {models['meta']['size']} px, inference / train step (`{_command(models)}`):", "",
                  *model_rows(models), ""]
    if loops:
        lines += ["Input-optimisation loops against plain PyTorch loops (`" + "`, `".join(_command(d) for d in loops)
                  + "`):", "", *loop_rows(loops), ""]
    if train or attack:
        cmds = " and ".join(f"`{_command(d)}`" for d in (train, attack) if d)
        lines += [f"Simulated devices on the same cores ({cmds}):", "", *scaling_rows(train, attack), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    harness.add_torch_python(ap)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--summary-only", action="store_true", help="rewrite the summary from the JSON files there")
    args = ap.parse_args(argv)
    needs_torch = not args.summary_only and bool({"models", "loops"} & set(args.parts))
    torch = {harness.TORCH_PYTHON_ENV: harness.torch_python(args.torch_python)} if needs_torch else {}
    if not args.summary_only:
        if "models" in args.parts:
            _run("benchmarks.models_vs_torch", "--models", *args.models, "--repeats", str(args.repeats),
                 "--warmup", "2", **torch)
        if "loops" in args.parts:
            for size, batch in LOOPS:
                _run("benchmarks.inputopt_vs_torch", "--size", str(size), "--steps", "10",
                     "--repeats", str(args.repeats), "--batch", str(batch), **torch)
        if "scaling" in args.parts:
            _run("benchmarks.train_scaling")
            _run("benchmarks.attack_scaling")
    text = summary(harness.command(MODULE, [a for a in harness.recorded(argv) if a != "--summary-only"]))
    path = args.out or os.path.join(harness.RESULTS, f"summary.{harness.machine_tag()}.md")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)
    return path


if __name__ == "__main__":
    main()
