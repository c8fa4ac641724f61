"""Robustness evaluation: accuracy under an attack as a function of its budget, as a table and a plot.

``robustness_rows`` streams: it takes batches (images in [0, 1], labels and a mask that is 0 on padding) and
attacks each batch at every budget before the next batch is read, so memory holds one batch whatever the size
of the data set (``jaxcnn attack --dataset`` feeds it from the loader). ``robustness_curve`` is the same on
arrays held in memory.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from jaxcnn.inputopt import problem
from jaxcnn.inputopt.attacks import ATTACKS

BUDGETED = ("fgsm", "bim", "pgd")


def robustness_rows(model, variables, batches: Iterable, *, attack: str = "pgd", epsilons: Sequence[float],
                    **attack_options) -> list[dict]:
    """One row per epsilon, ``{"eps", "accuracy", "count"}``, over every batch (the clean accuracy at eps 0).

    ``batches`` yields ``(images (B, H, W, 3) float in [0, 1], labels (B,))`` or ``(images, labels, mask)``
    with ``mask`` (B,) 1 for an example and 0 for padding (padded batches keep one shape: one compiled
    attack). ``attack`` is fgsm, bim or pgd (the budgeted attacks); options pass through (steps, norm,
    restarts ...).
    """
    if attack not in BUDGETED:
        raise ValueError(f"robustness needs a budgeted attack; got {attack!r}, valid: {', '.join(BUDGETED)}")
    epsilons = [float(e) for e in epsilons]
    correct, count = np.zeros(len(epsilons), np.int64), 0
    for batch in batches:
        x, y = np.asarray(batch[0], np.float32), np.asarray(batch[1])
        keep = np.ones(len(y), bool) if len(batch) < 3 else np.asarray(batch[2]) > 0
        count += int(keep.sum())
        for k, eps in enumerate(epsilons):
            if eps == 0:
                pred = np.argmax(np.asarray(problem.logits(model, variables, x)), -1)
            else:
                pred = np.asarray(ATTACKS[attack](model, variables, x, y, eps=eps, **attack_options).predictions)
            correct[k] += int(((pred == y) & keep).sum())
    if count == 0:
        raise ValueError("robustness: no images to attack")
    return [{"eps": eps, "accuracy": float(c / count), "count": count} for eps, c in zip(epsilons, correct)]


def robustness_curve(model, variables, images, labels, *, attack: str = "pgd", epsilons: Sequence[float],
                     batch_size: int = 256, **attack_options) -> list[dict]:
    """``robustness_rows`` over arrays held in memory, in batches of ``batch_size``."""
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    return robustness_rows(model, variables, batches, attack=attack, epsilons=epsilons, **attack_options)


def markdown_table(rows: list[dict], attack: str) -> str:
    head = f"| {attack} epsilon (pixels in [0, 1]) | accuracy |\n|---|---|\n"
    return head + "\n".join(f"| {r['eps']:.4g} ({r['eps'] * 255:.1f}/255) | {100 * r['accuracy']:.1f}% |"
                            for r in rows)


def plot_robustness(curves: dict[str, list[dict]], path: str) -> str:
    """Accuracy against epsilon, one line per attack (``{name: rows}``), written as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, rows in curves.items():
        ax.plot([r["eps"] * 255 for r in rows], [100 * r["accuracy"] for r in rows], marker="o", label=name)
    ax.set_xlabel("epsilon (x/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
