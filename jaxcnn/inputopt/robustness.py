"""Robustness evaluation: accuracy under an attack as a function of its budget, as a table and a plot."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxcnn.inputopt import problem
from jaxcnn.inputopt.attacks import ATTACKS


def robustness_curve(model, variables, images, labels, *, attack: str = "pgd", epsilons: Sequence[float],
                     batch_size: int = 256, **attack_options) -> list[dict]:
    """One row per epsilon: {"eps", "accuracy", "attack_success"} over the whole set (clean rows at eps 0).

    ``attack`` is fgsm, bim or pgd (the budgeted attacks); options pass through (steps, norm, restarts ...).
    """
    if attack not in ("fgsm", "bim", "pgd"):
        raise ValueError(f"robustness needs a budgeted attack; got {attack!r}, valid: fgsm, bim, pgd")
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    rows = []
    for eps in epsilons:
        correct = []
        for i in range(0, len(images), batch_size):
            x, y = images[i:i + batch_size], labels[i:i + batch_size]
            if eps == 0:
                correct.append(np.argmax(np.asarray(problem.logits(model, variables, x)), -1) == y)
            else:
                res = ATTACKS[attack](model, variables, x, y, eps=float(eps), **attack_options)
                correct.append(res.predictions == y)
        acc = float(np.mean(np.concatenate(correct)))
        rows.append({"eps": float(eps), "accuracy": acc})
    return rows


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
