"""The results of ``jaxcnn bench``: the printed table, and the CSV and JSON files.

The JSON holds everything: the command, the machine (``jaxcnn.bench.machine``), the versions, the
device kind and count, the measured peak, the settings, jaxcnn's rows, PyTorch's rows (or why it did
not run), jaxcnn's ratio to each PyTorch variant, the input pipeline and the bound. The CSV is one
line per row, jaxcnn's and PyTorch's alike, each carrying the command, device kind and versions, so
that a file stands on its own when tables from several machines are concatenated.
"""

from __future__ import annotations

import csv
import json
import math
import os

CSV_FIELDS = ("model", "mode", "framework", "variant", "batch", "requested_batch", "size", "dtype", "devices",
              "images_per_s", "spread", "ms_per_step", "compile_s", "tflop_s", "mfu", "program_bytes",
              "device_peak_bytes", "jaxcnn_ratio", "note", "error", "backend", "device_kind", "cpu", "jax", "jaxlib",
              "torch", "command")


def ratios(jax_rows: list[dict], torch_rows: list[dict]) -> list[dict]:
    """jaxcnn's images/s over each PyTorch variant's, per model and mode (above 1: jaxcnn is faster); a torch row
    that failed has no ratio."""
    ours = {(r["model"], r["mode"]): r for r in jax_rows if "images_per_s" in r}
    out = []
    for t in torch_rows:
        j = ours.get((t["model"], t["mode"]))
        if j is not None and t.get("images_per_s"):
            out.append({"model": t["model"], "mode": t["mode"], "variant": t["variant"],
                        "ratio": j["images_per_s"] / t["images_per_s"]})
    return out


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def table(result: dict) -> str:
    """The rows as a fixed-width table: jaxcnn's, each followed by the PyTorch variants of the same model and mode
    with jaxcnn's ratio to each."""
    head = ("model", "mode", "variant", "batch", "img/s", "spread", "ms/step", "compile s", "TFLOP/s", "MFU",
            "mem MiB", "jaxcnn/x")
    lines = [head]
    torch_rows = result.get("torch", {}).get("rows", [])
    ratio = {(r["model"], r["mode"], r["variant"]): r["ratio"] for r in result.get("ratios", [])}
    for row in result["rows"]:
        if "error" in row:
            lines.append((row["model"], row["mode"], row.get("variant", "jaxcnn"), "-", "error: " + row["error"][:60],
                          *[""] * 7))
            continue
        mem = row.get("device_peak_bytes") or row.get("program_bytes")
        lines.append((row["model"], row["mode"], f"{row['variant']} {row['dtype']}", str(row["batch"]),
                      _fmt(row["images_per_s"], ".1f"), f"{100 * row['spread']:.0f}%", _fmt(row["ms_per_step"], ".1f"),
                      _fmt(row["compile_s"], ".1f"), _fmt(row["tflop_s"], ".3g"), f"{100 * row['mfu']:.1f}%",
                      _mib(mem), ""))
        for t in torch_rows:
            if (t["model"], t["mode"]) != (row["model"], row["mode"]):
                continue
            if "error" in t:
                lines.append(("", "", t["variant"], str(t.get("batch", "-")), "error: " + t["error"][:60], *[""] * 7))
                continue
            lines.append(("", "", t["variant"], str(t["batch"]), _fmt(t["images_per_s"], ".1f"),
                          f"{100 * t['spread']:.0f}%", _fmt(t["ms_per_step"], ".1f"),
                          _fmt(t.get("compile_s") or None, ".1f"), _fmt(t.get("tflop_s"), ".3g"),
                          _fmt(t.get("mfu") and 100 * t["mfu"], ".1f") + "%", _mib(t.get("device_peak_bytes")),
                          _fmt(ratio.get((t["model"], t["mode"], t["variant"])), ".2f") + "x"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           .rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def header(result: dict) -> str:
    """One line: device, count, peak, versions."""
    v, m, peak = result["versions"], result["machine"], result.get("peak") or {}
    torch = result.get("torch", {})
    side = (f", torch {torch['torch']} / torchvision {torch['torchvision']} ({torch['device']})"
            if torch.get("torch") else "")
    return (f"{v['devices_used']} x {v['device']} ({v['backend']}; host {m['cpu']}, {m['cores']} cores); "
            f"jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}{side}; measured peak "
            f"{_fmt(peak.get('flop_s', 0) / 1e12, '.3g')} TFLOP/s ({peak.get('dtype', '?')} matmul)")


def notes(result: dict) -> list[str]:
    """The lines under the table: retries, skipped PyTorch side, the pipeline and the bound, traces."""
    out = [f"note: {r['model']} {r['mode']}: {r['note']}" for r in result["rows"] if r.get("note")]
    torch = result.get("torch", {})
    if torch.get("skipped"):
        out.append(f"torch: skipped: {torch['skipped']}")
    for p in result.get("pipeline", []):
        workers = f"{p['data_workers']} worker processes" if p["data_workers"] else "threads"
        out.append(f"loader: {p['source']} ({p['augment']}, {p['size']} px, batch {p['batch']}, {workers}): "
                   f"{p['images_per_s']:.0f} images/s on {p['cores']} cores")
    for b in result.get("bound", []):
        out.append(f"bound: {b['model']} {b['mode']}: the {b['bound']} (loader {b['headroom']:.2f}x the step's "
                   f"images/s)")
    out += [f"trace: {r['trace']}" for r in result["rows"] if r.get("trace")]
    if result.get("compile_cache"):
        out.append(f"compile s: with JAX's persistent cache in {result['compile_cache']} (a program compiled before "
                   "is read back; JAXCNN_COMPILE_CACHE=0 measures a cold compile)")
    return out


def csv_rows(result: dict) -> list[dict]:
    """jaxcnn's rows and PyTorch's, flat, with the command, device kind and versions on each."""
    v, torch = result["versions"], result.get("torch", {})
    common = {"backend": v["backend"], "device_kind": v["device"], "cpu": result["machine"]["cpu"], "jax": v["jax"],
              "jaxlib": v["jaxlib"], "torch": torch.get("torch"), "command": result["command"]}
    ratio = {(r["model"], r["mode"], r["variant"]): r["ratio"] for r in result.get("ratios", [])}
    out = []
    for row in result["rows"]:
        out.append({**common, "framework": "jaxcnn", **row})
    for t in torch.get("rows", []):
        out.append({**common, "devices": 1, **t, "jaxcnn_ratio": ratio.get((t["model"], t["mode"], t["variant"]))})
    return [{k: r.get(k) for k in CSV_FIELDS} for r in out]


def write_csv(path: str, result: dict) -> None:
    _atomic(path, lambda f: _csv(f, csv_rows(result)))


def _csv(f, rows: list[dict]) -> None:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)


def write_json(path: str, result: dict) -> None:
    _atomic(path, lambda f: (json.dump(result, f, indent=1, default=_jsonable), f.write("\n")))


def _jsonable(value):
    if hasattr(value, "item"):      # NumPy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _atomic(path: str, write) -> None:
    """Writes through a temporary file renamed over ``path``: a run cut short leaves the last complete file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)
