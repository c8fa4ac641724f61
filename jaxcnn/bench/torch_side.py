"""torchvision's twin of a model, timed the way ``jaxcnn bench`` times jaxcnn's: run as a file in its own process.

    PYTHON jaxcnn/bench/torch_side.py < spec.json     # prints one line: "@@torch " + the JSON result

It imports no jaxcnn and no JAX (only this folder's ``timing``, the standard library and torch), so
``PYTHON`` can be any Python with torch and torchvision (``jaxcnn bench --vs torch --torch-python``).
A separate process keeps the two frameworks' thread pools and allocators apart.

The spec: ``{"model": torchvision name, "batch", "size", "dtype": "float32"|"bfloat16", "device": "cpu"|
"cuda", "modes": ["infer", "train"], "repeats", "steps" (null: about 0.5 s per repeat), "warmup",
"compile": bool, "lr", "momentum", "weight_decay"}``. Variants, each timed for each mode:

  torch eager          NCHW
  torch channels-last  ``memory_format=torch.channels_last``
  torch.compile        channels-last through ``torch.compile`` (its compile time apart; where it fails the
                       row holds the error)

each under ``torch.autocast(device, torch.bfloat16)`` when the dtype is bfloat16 (the labels then end in
" bf16"). As jaxcnn's step, each reads a uint8 batch already on the device and normalizes it inside
the step; training is cross-entropy (plus the auxiliary heads of GoogLeNet at 0.3 and Inception-v3 at
0.4, as jaxcnn trains them) and SGD with momentum and weight decay.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback


def standalone(name: str):
    """This folder's module ``name`` (one that needs only the standard library) loaded from its file as
    ``_jaxcnn_bench_<name>``, for a Python without JAX, where the jaxcnn package cannot import: this file run
    as a script, or loaded by path by ``benchmarks/harness.py`` in a PyTorch worker."""
    key = f"_jaxcnn_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                        f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module      # before running it: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[key]


timing = importlib.import_module("jaxcnn.bench.timing") if __package__ else standalone("timing")

MARK = "@@torch "
TORCH_PYTHON_ENV = "JAXCNN_TORCH_PYTHON"
AUX_WEIGHTS = {"googlenet": 0.3, "inception_v3": 0.4}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def variants(dtype: str, compile: bool) -> list[tuple[str, bool, bool]]:
    """(label, channels_last, compiled) of each variant; the labels end in " bf16" for bfloat16."""
    out = [("torch eager", False, False), ("torch channels-last", True, False)]
    if compile:
        out.append(("torch.compile", True, True))
    suffix = " bf16" if dtype == "bfloat16" else ""
    return [(label + suffix, cl, c) for label, cl, c in out]


def build(name: str, batch: int, size: int, *, device: str = "cpu", channels_last: bool = False,
          bf16: bool = False, compiled: bool = False, lr: float = 0.02, momentum: float = 0.9,
          weight_decay: float = 5e-4, state_dict=None, seed: int = 0):
    """``(infer, train, sync)``: no-argument calls of torchvision ``name``'s forward (eval mode, no grad) and
    train step on a random uint8 batch on ``device``, and the call that waits for the device."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    kwargs = {"init_weights": False} if name in AUX_WEIGHTS else {}
    net = getattr(torchvision.models, name)(weights=None, **kwargs)
    if state_dict is not None:
        net.load_state_dict(state_dict, strict=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8)
    pixels = pixels.to(device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    fwd = torch.compile(net) if compiled else net
    aux = AUX_WEIGHTS.get(name, 0.0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def model_input():
        return (pixels.float() / 255.0 - mean) / std

    def infer():
        net.eval()
        with torch.inference_mode(), torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
            return fwd(model_input())

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
            out = fwd(model_input())
            if isinstance(out, tuple):      # GoogLeNet / Inception-v3 in train mode: (logits, aux heads...)
                logits, heads = out[0], [h for h in out[1:] if h is not None]
            else:
                logits, heads = out, []
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            for h in heads:
                loss = loss + aux * torch.nn.functional.cross_entropy(h.float(), labels)
        loss.backward()
        opt.step()
        return loss

    return infer, train, sync


def _time(call, sync, spec: dict) -> tuple[timing.Timing, int, float]:
    """(timing, steps per repeat, first call's seconds)."""
    t = time.perf_counter()
    call()
    sync()
    first = time.perf_counter() - t
    steps = spec.get("steps") or timing.auto_steps(call, lambda _: sync())
    result = timing.time_block(call, lambda _: sync(), steps=steps, repeats=int(spec.get("repeats", 5)),
                               warmup=max(int(spec.get("warmup", 2)) - 1, 0))
    return result, steps, first


def run(spec: dict) -> dict:
    """The rows of every variant and mode of ``spec`` (see the module docstring)."""
    import torch
    import torchvision

    device = spec.get("device", "cpu")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    batch, size, bf16 = int(spec["batch"]), int(spec["size"]), spec.get("dtype") == "bfloat16"
    rows = []
    for label, channels_last, compiled in variants(spec.get("dtype", "float32"), bool(spec.get("compile", True))):
        try:
            infer, train, sync = build(spec["model"], batch, size, device=device, channels_last=channels_last,
                                       bf16=bf16, compiled=compiled,
                                       **{k: spec[k] for k in ("lr", "momentum", "weight_decay") if k in spec})
        except Exception as err:
            rows += [{"variant": label, "mode": m, "error": f"{type(err).__name__}: {err}"} for m in spec["modes"]]
            continue
        for mode in spec["modes"]:
            row = {"framework": "torch", "variant": label, "mode": mode, "batch": batch, "size": size,
                   "dtype": spec.get("dtype", "float32")}
            try:
                result, steps, first = _time(infer if mode == "infer" else train, sync, spec)
                row.update(timing.throughput(batch, result), steps=steps,
                           compile_s=max(first - result.median, 0.0) if compiled else 0.0)
            except Exception as err:    # torch.compile without a compiler, out of memory, ...: the row says so
                traceback.print_exc(file=sys.stderr)
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            if device.startswith("cuda"):
                row["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            rows.append({k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))})
        del infer, train
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": name,
            "threads": torch.get_num_threads(), "rows": rows}


def find_python(option: str | None = None) -> tuple[str | None, str | None]:
    """``(python, None)``: the Python to run this file in, or ``(None, why)`` when none can. ``option``
    (``--torch-python``) when given, else this Python if torch and torchvision import in it, else
    ``$JAXCNN_TORCH_PYTHON``."""
    if option:
        reason = unavailable(option)
        return (None, reason) if reason else (option, None)
    here = unavailable(sys.executable)
    if here is None:
        return sys.executable, None
    chosen = os.environ.get(TORCH_PYTHON_ENV)
    if chosen:
        reason = unavailable(chosen)
        return (None, f"{reason} (${TORCH_PYTHON_ENV})") if reason else (chosen, None)
    return None, (f"torch and torchvision do not import in {sys.executable}: give --torch-python PATH "
                  f"(a Python that has them) or set ${TORCH_PYTHON_ENV}")


def unavailable(python: str) -> str | None:
    """Why ``python`` cannot run the PyTorch side (not an executable, torch or torchvision do not import), or None."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return f"{python} is not an executable file"
    check = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"torch and torchvision do not import in {python} ({last})"
    return None


def launch(python: str, spec: dict) -> dict:
    """``run(spec)`` in a child process of ``python``; a ``RuntimeError`` naming it when it fails."""
    proc = subprocess.run([python, os.path.abspath(__file__)], input=json.dumps(spec), capture_output=True,
                          text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise RuntimeError(f"the PyTorch side ({python} {os.path.abspath(__file__)}) exited with code "
                       f"{proc.returncode} and no result: {tail}")


def main() -> None:
    spec = json.loads(sys.stdin.read())
    out = run(spec)
    sys.stdout.write(MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
