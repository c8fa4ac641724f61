"""Where metrics go: JSON lines, TensorBoard event files (tensorboardX), and a learning-curve PNG.

Without tensorboardX the rows still go to ``metrics.jsonl`` (the run says so once on stderr): event
files are a view of the same numbers, not worth failing a run over.
"""

from __future__ import annotations

import json
import os
import sys


class MetricsLog:
    """Appends ``{"step": s, name: value, ...}`` rows to ``metrics.jsonl`` and TensorBoard.

    A run resumed from the checkpoint of step ``start_step`` repeats the steps after it, so the rows past
    ``start_step`` (written before the run stopped) are dropped first, and TensorBoard is told to purge
    its events past that step: every step keeps one row.
    """

    def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            truncate_rows(self.path, start_step)
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print("note: tensorboardX is not installed: metrics go to metrics.jsonl only, no TensorBoard events",
                      file=sys.stderr)
            else:
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_rows(path: str) -> list[dict]:
    """The rows of a metrics.jsonl, in the order written ([] when there is no file). A line cut short
    by a killed run is skipped."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def truncate_rows(path: str, last_step: int) -> None:
    """Keeps only the rows of steps <= ``last_step`` (atomically: a new file renamed over the old)."""
    if not os.path.isfile(path):
        return
    rows = read_rows(path)
    keep = [r for r in rows if r["step"] <= last_step]
    with open(path) as f:
        unchanged = len(keep) == len(rows) and sum(1 for line in f if line.strip()) == len(rows)
    if unchanged:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
    os.replace(tmp, path)


def last_eval(path: str, up_to_step: int | None = None) -> dict[str, float]:
    """The metrics of the last evaluation row (at or before ``up_to_step``), without the ``eval/`` prefix."""
    for row in reversed(read_rows(path)):
        if up_to_step is not None and row["step"] > up_to_step:
            continue
        found = {k[len("eval/"):]: v for k, v in row.items() if k.startswith("eval/")}
        if found:
            return found
    return {}


def plot_curves(metrics_path: str, png_path: str) -> str:
    """Training loss and train/eval top-1 against step, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(metrics_path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys in ((ax_loss, ("train/loss", "eval/loss")), (ax_acc, ("train/top1", "eval/top1"))):
        for key in keys:
            pts = sorted({r["step"]: r[key] for r in rows if key in r}.items())
            if pts:
                ax.plot(*zip(*pts), marker="o" if key.startswith("eval") else None, label=key)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    ax_loss.set_title("loss")
    ax_loss.set_yscale("log")
    ax_acc.set_title("top-1 accuracy")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
