"""Where metrics go: JSON lines, TensorBoard event files (tensorboardX), and a learning-curve PNG."""

from __future__ import annotations

import json
import os


class MetricsLog:
    """Appends ``{"step": s, name: value, ...}`` rows to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")
        for k, v in values.items():
            self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_rows(path: str) -> list[dict]:
    """The rows of a metrics.jsonl; for a resumed run, the last row written for each (step, keys) wins."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
