"""A ``jaxcnn bench`` run: each model's modes through ``measure``, torchvision's twin through ``torch_side``, the
input pipeline through ``pipeline``; one result dict that ``report`` prints and writes.

The result grows model by model (``on_model`` is called with it after each), so a run stopped early
still leaves its finished models in the files. A model that fails (out of memory even at one image per
device, an unsupported option) gets an error row and the run goes on; ``failed(result)`` says whether
any did.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import jax

from jaxcnn.bench import machine, measure, peak as peaks, pipeline, report, torch_side
from jaxcnn.models import model_info

TORCH_DEVICE = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "rocm": "cuda"}


@dataclasses.dataclass
class Options:
    models: list[str]
    modes: tuple[str, ...] = measure.MODES
    batch: int | None = None            # None: measure.default_batch for the device
    size: int | None = None             # None: each model's native resolution
    dtype: str = "float32"
    strategy: str = "jit"
    devices: int | None = None
    repeats: int = 5
    steps: int | None = None
    memory_limit: int | None = None
    profile_dir: str | None = None
    vs_torch: bool = False
    torch_python: str | None = None
    torch_compile: bool = True
    data: str | None = None             # a data set name: time the loader too
    data_dir: str | None = None
    augment: str = "auto"


def torch_plan(options: Options, devices: list) -> tuple[str | None, str | None, str | None]:
    """``(python, torch device, None)`` when PyTorch's side can run, else ``(None, None, why not)``."""
    platform = devices[0].platform
    if platform not in TORCH_DEVICE:
        return None, None, f"PyTorch runs on the CPU or CUDA; JAX runs on {platform}"
    if platform != "cpu" and len(devices) > 1:   # its one device against jaxcnn's several would be no comparison
        return None, None, f"PyTorch's side runs on one device, jaxcnn's on {len(devices)}: compare with --devices 1"
    if platform == "cpu" and options.dtype == "bfloat16" and not machine.bf16_native():
        return None, None, ("bfloat16 autocast on a CPU without AVX512-BF16 or AMX is emulated by PyTorch, many "
                            "times slower than float32: no meaningful comparison")
    python, why = torch_side.find_python(options.torch_python)
    return (python, TORCH_DEVICE[platform], None) if python else (None, None, why)


def run(options: Options, *, command: str, log: Callable[[str], None] = print,
        on_model: Callable[[dict], None] | None = None) -> dict:
    """Measures every model and mode of ``options`` (see the module docstring); returns the result dict."""
    devices = measure.devices_for(options.devices)
    peak = peaks.run_peak(options.dtype, devices, use_cache=False)   # this process's, not an older one's
    result = {"command": command, "machine": machine.machine(),
              "versions": {**machine.versions(), "devices_used": len(devices)},
              "settings": {k: v for k, v in dataclasses.asdict(options).items() if k != "torch_python"},
              "peak": peak, "compile_cache": jax.config.jax_compilation_cache_dir, "rows": [], "ratios": [],
              "complete": False}
    python = device = None
    if options.vs_torch:
        python, device, why = torch_plan(options, devices)
        result["torch"] = {"skipped": why} if why else {"python": python, "device": device, "rows": []}
        if why:
            log(f"torch: skipped: {why}")
    pipelines: dict[tuple[int, int], dict] = {}
    for name in options.models:
        rows, batch = [], options.batch or measure.default_batch(name, options.size, devices)
        for mode in options.modes:
            setup = measure.Setup(name, mode=mode, batch=batch, size=options.size, dtype=options.dtype,
                                  strategy=options.strategy, devices=options.devices, repeats=options.repeats,
                                  steps=options.steps, memory_limit=options.memory_limit,
                                  profile_dir=options.profile_dir)
            try:
                row = measure.measure_with_retry(setup, peak, log=log)
            except (measure.OutOfMemory, ValueError, RuntimeError) as err:
                message = str(err).splitlines()[0] if str(err) else type(err).__name__
                log(f"{name} {mode}: error: {message}")
                row = {"model": name, "mode": mode, "variant": f"jaxcnn {options.strategy}", "dtype": options.dtype,
                       "error": message}
            else:
                log(f"{name} {mode}: {row['images_per_s']:.1f} images/s at batch {row['batch']}")
            rows.append(row)
        result["rows"] += rows
        if python:
            side = _torch_side(name, rows, python, device, options, log)
            result["torch"]["rows"] += side.pop("rows")
            result["torch"].update(side)
        if options.data:
            _data_bound(name, rows, options, pipelines, result, log)
        result["ratios"] = report.ratios(result["rows"], result.get("torch", {}).get("rows", []))
        if on_model:
            on_model(result)
    result["complete"] = True
    return result


def _torch_side(name: str, jax_rows: list[dict], python: str, device: str, options: Options, log) -> dict:
    """``{"rows": [...], "torch", "torchvision", "device", "threads"}``: torchvision's twin of ``name`` at the batch
    and size of jaxcnn's rows, one child process per batch."""
    twin = model_info(name).torchvision
    out: dict = {"rows": []}
    if not twin:
        log(f"torch: {name} has no torchvision twin")
        return out
    groups: dict[tuple[int, int], list[str]] = {}
    for r in jax_rows:
        if "images_per_s" in r:
            groups.setdefault((r["batch"], r["size"]), []).append(r["mode"])
    for (batch, size), modes in groups.items():
        spec = {"model": twin, "batch": batch, "size": size, "dtype": options.dtype, "device": device,
                "modes": modes, "repeats": options.repeats, "steps": options.steps, "compile": options.torch_compile}
        try:
            side = torch_side.launch(python, spec)
        except RuntimeError as err:
            log(f"torch: {name}: {err}")
            out["rows"] += [{"model": name, "mode": m, "variant": "torch", "batch": batch, "error": str(err)}
                            for m in modes]
            continue
        flop = {r["mode"]: (r["flop_per_image"], r["peak_tflop_s"]) for r in jax_rows if "flop_per_image" in r}
        for r in side.pop("rows"):
            row = {**r, "model": name, "torchvision": twin}
            if "images_per_s" in r:     # the same FLOP count and peak as jaxcnn's row
                per_image, peak_tflop_s = flop[r["mode"]]
                factor = measure.TRAIN_FLOP_FACTOR if r["mode"] == "train" else 1
                row["tflop_s"] = factor * per_image * r["images_per_s"] / 1e12
                row["mfu"] = row["tflop_s"] / peak_tflop_s
            out["rows"].append(row)
        out.update(side)
        log(f"torch: {twin} done ({', '.join(modes)} at batch {batch})")
    return out


def _data_bound(name: str, rows: list[dict], options: Options, pipelines: dict, result: dict, log) -> None:
    """The loader timed at the model's size and batch (once per pair), and whether it or the step bounds a run."""
    timed = [r for r in rows if "images_per_s" in r]
    row = next((r for r in timed if r["mode"] == "train"), timed[0] if timed else None)
    if row is None:
        return
    key = (row["size"], row["batch"])
    if key not in pipelines:
        pipelines[key] = pipeline.time_pipeline(options.data, model=name, batch=row["batch"], size=row["size"],
                                                augment=options.augment, data_dir=options.data_dir)
        result.setdefault("pipeline", []).append(pipelines[key])
        log(f"loader: {options.data}: {pipelines[key]['images_per_s']:.0f} images/s")
    verdict = pipeline.bound(row["images_per_s"], pipelines[key]["images_per_s"])
    result.setdefault("bound", []).append({"model": name, "mode": row["mode"], **verdict})


def failed(result: dict) -> bool:
    """Whether any jaxcnn row holds an error."""
    return any("error" in r for r in result["rows"])


def print_report(result: dict, out=None) -> None:
    out = out or sys.stdout
    print(report.header(result), file=out)
    print(report.table(result), file=out)
    for line in report.notes(result):
        print(line, file=out)
