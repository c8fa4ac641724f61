"""AutoAttack's standard evaluation (Croce & Hein 2020): the worst case per example over four attacks.

``autoattack`` runs APGD-CE, APGD-T (targeted DLR loss, 9 target classes), FAB-T (9 target classes)
and Square (5000 queries) in that order, each on the examples no earlier attack has broken, and
keeps per example the first adversarial image found; the robust accuracy is the share of examples
that none of them broke (the figure RobustBench's leaderboards report). Budgets are AutoAttack's
standard version's (100 iterations, one restart); changing one makes the version ``custom``.

The report holds the clean accuracy, the robust accuracy after each attack and the worst case, per
example the attack that broke it, as a Markdown table and JSON, with AutoAttack's checks for an
evaluation that may be unreliable (``flags``):

* ``randomized``: five forwards of the same batch disagree (logits differing by more than 1e-4 after
  normalisation, or a different accuracy): a randomised defence needs expectation over transformation;
* ``softmax_output``: the model returns probabilities, which weakens the gradient attacks;
* ``zero_gradient``: examples with a zero gradient of the DLR loss at APGD's start;
* ``square_improves``: the black-box Square attack broke examples (more than 0.2%) that every
  white-box attack missed, a sign of masked gradients;
* ``eps_not_monotone``: with several budgets, the robust accuracy rose with the budget;
* ``few_classes``: fewer classes than APGD-T and FAB-T have targets (they use as many as there are).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxcnn.inputopt import passes, problem
from jaxcnn.inputopt.apgd import apgd_passes, apgd_targeted_passes
from jaxcnn.inputopt.fab import fab_targeted_passes
from jaxcnn.inputopt.square import check_size, square_passes

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
TITLES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
DEFAULTS = dict(steps=100, queries=5000, targets=9, restarts=1)
SQUARE_ALPHA = 0.002      # AutoAttack's threshold for the Square flag


@dataclasses.dataclass
class EpsResult:
    """One budget's evaluation: accuracies (fractions) and per example (N,) ``first`` (see ``passes.Outcome``),
    ``images`` (N, H, W, 3) the first adversarial image found (the clean one elsewhere), ``predictions``."""

    eps: float
    clean_accuracy: float
    robust_after: dict[str, float]
    robust_accuracy: float
    max_perturbation: float
    seconds: float
    first: np.ndarray
    images: np.ndarray
    predictions: np.ndarray


@dataclasses.dataclass
class AutoAttackReport:
    """``rows``: one ``EpsResult`` per budget (increasing); ``flags``: [{"flag", "message"}]."""

    norm: str
    version: str
    seed: int
    attacks: tuple[str, ...]
    labels: np.ndarray
    rows: list[EpsResult]
    flags: list[dict]
    budgets: dict

    def markdown(self) -> str:
        """The table: one row per budget, the accuracy after each attack in turn, the worst case last."""
        cols = ["clean", *(f"after {TITLES[a]}" for a in self.attacks), "robust accuracy"]
        head = f"| {self.norm} epsilon (pixels in [0, 1]) | " + " | ".join(cols) + " |\n"
        head += "|---" * (len(cols) + 1) + "|\n"
        lines = []
        for r in self.rows:
            eps = f"{r.eps:.4g} ({r.eps * 255:.1f}/255)" if self.norm == "linf" else f"{r.eps:.4g}"
            cells = [r.clean_accuracy, *(r.robust_after[a] for a in self.attacks)]
            lines.append(f"| {eps} | " + " | ".join(f"{100 * v:.1f}%" for v in cells)
                         + f" | **{100 * r.robust_accuracy:.1f}%** |")
        return head + "\n".join(lines)

    def to_json(self, per_example: bool = True) -> dict:
        out = {"norm": self.norm, "version": self.version, "seed": self.seed, "attacks": list(self.attacks),
               "budgets": self.budgets, "images": int(len(self.labels)), "flags": self.flags, "results": []}
        for r in self.rows:
            row = {"eps": r.eps, "clean_accuracy": r.clean_accuracy, "robust_accuracy_after": r.robust_after,
                   "robust_accuracy": r.robust_accuracy, "max_perturbation": r.max_perturbation,
                   "seconds": round(r.seconds, 2)}
            if per_example:
                names = ("clean", *self.attacks)
                row["examples"] = [{"label": int(y), "prediction": int(p), "broken_by": None if f == len(self.attacks)
                                    else names[f + 1]} for y, p, f in zip(self.labels, r.predictions, r.first)]
            out["results"].append(row)
        return out

    def save_json(self, path: str, per_example: bool = True) -> str:
        with open(path, "w") as f:
            json.dump(self.to_json(per_example), f, indent=1)
        return path


def _plan(name, model, variables, eps, norm, budgets, n_classes, flags):
    b = budgets
    if name == "apgd-ce":
        return apgd_passes(model, variables, eps=eps, norm=norm, loss="ce", steps=b["steps"], restarts=b["restarts"])
    if name == "apgd-dlr":
        return apgd_passes(model, variables, eps=eps, norm=norm, loss="dlr", steps=b["steps"], restarts=b["restarts"],
                           flags=flags)
    if name == "apgd-t":
        return apgd_targeted_passes(model, variables, eps=eps, norm=norm, steps=b["steps"], targets=b["targets"],
                                    restarts=1, num_classes=n_classes, flags=flags)
    if name == "fab-t":
        return fab_targeted_passes(model, variables, eps=eps, norm=norm, steps=b["steps"], targets=b["targets"],
                                   restarts=1, num_classes=n_classes)
    return square_passes(model, variables, eps=eps, norm=norm, queries=b["queries"], restarts=1)


def _eps_list(eps) -> list[float]:
    values = [eps] if np.isscalar(eps) else list(eps)
    if not values:
        raise ValueError("give at least one epsilon")
    return sorted(values)


def autoattack(model, variables, x, y, eps, *, norm: str = "linf", version: str = "standard", seed: int = 0,
               batch_size: int = 256, attacks: Sequence[str] | None = None, log: Callable[[str], None] | None = None,
               **budgets) -> AutoAttackReport:
    """AutoAttack's standard ensemble on images x (N, H, W, 3) in [0, 1] with labels y (N,).

    ``eps``: a budget or several (each evaluated on the whole set; pixels in [0, 1]); ``norm``: ``linf`` or
    ``l2``; ``seed``: the attacks' random numbers (per example: a result does not depend on the batch);
    ``batch_size``: the fixed batch of every compiled program. ``version="custom"`` with ``attacks`` (names
    from ``ATTACKS``, run in that order) or budget overrides (``steps``, ``queries``, ``targets``,
    ``restarts``: of APGD-CE and APGD-DLR; APGD-T, FAB-T and Square run once per target, as in AutoAttack's
    standard version) run something else than the standard evaluation, reported as ``custom``. ``log``
    receives a line per attack (AutoAttack's progress lines). The ``randomized`` check guards a model whose
    forward draws random numbers or reduces nondeterministically; jaxcnn's models in evaluation mode do not.
    """
    if version not in ("standard", "custom"):
        raise ValueError(f"unknown version {version!r}; valid: standard, custom")
    unknown = sorted(set(budgets) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown budget {unknown[0]!r}; valid: {', '.join(DEFAULTS)}")
    if version == "standard" and attacks is not None:
        raise ValueError("attacks are chosen by version='custom'; the standard version runs " + ", ".join(STANDARD))
    names = tuple(attacks) if attacks is not None else STANDARD
    if not names:
        raise ValueError(f"give at least one attack; valid: {', '.join(ATTACKS)}")
    bad = [a for a in names if a not in ATTACKS]
    if bad:
        raise ValueError(f"unknown attack {bad[0]!r}; valid: {', '.join(ATTACKS)}")
    budgets = {**DEFAULTS, **budgets}
    passes.check_counts(**budgets)
    if budgets != DEFAULTS or names != STANDARD:
        version = "custom"
    epsilons = _eps_list(eps)
    for e in epsilons[1:]:
        passes.check_eps(e)
    xs, ys, n_classes = passes.check_inputs(model, variables, x, y, epsilons[0], norm)   # the images once
    if "square" in names:
        check_size(xs.shape, norm)
    if {"apgd-t", "apgd-dlr"} & set(names):
        passes.check_num_classes(n_classes, 4 if "apgd-t" in names else 3, "the DLR loss of APGD-T / APGD-DLR")
    variables = problem.fixed_weights(variables)
    size = passes.batch_size_for(len(xs), batch_size)
    flags = checks(model, variables, xs[:size], ys[:size], n_classes, names, budgets)
    clean = passes.predict(model, variables, xs, size)
    rows = []
    for e in epsilons:
        counts = {}
        plan = [p for a in names for p in _plan(a, model, variables, e, norm, budgets, n_classes, counts)]
        t0 = time.perf_counter()
        progress = _progress(plan, names, log, t0, e) if log else None
        out = passes.run_passes(plan, model, variables, xs, ys, key=passes.seed_key(seed), batch_size=size,
                                attacks=names, clean=clean, on_pass=progress)
        after = dict(zip(names, out.robust_accuracy_after()))
        d = (out.images - xs).reshape(len(xs), -1)
        size_of = np.abs(d).max(1) if norm == "linf" else np.sqrt(np.sum(np.square(d, dtype=np.float64), 1))
        rows.append(EpsResult(float(e), out.clean_accuracy, after, float(np.mean(out.robust)),
                              float(size_of.max()) if len(d) else 0.0, time.perf_counter() - t0, out.first,
                              out.images, out.predictions))
        if counts.get("zero_gradient"):
            flags.append(_flag("zero_gradient", f"there are {len(counts['zero_gradient'])} points with zero gradient "
                               f"at eps {e:.4g}: the gradient-based attacks may be unreliable there"))
        flags += _square_flag(after, names, e)
    flags += _monotone_flags(rows)
    return AutoAttackReport(norm, version, int(seed), names, ys, rows, flags, budgets)


def _progress(plan, names, log, t0, eps):
    last = {}
    for i, p in enumerate(plan):
        last[p.attack] = i

    def on_pass(number, outcome):
        a = plan[number].attack
        if last[a] == number:
            acc = outcome.robust_accuracy_after()[names.index(a)]
            log(f"eps {eps:.4g}: robust accuracy after {TITLES[a]}: {100 * acc:.2f}% "
                f"(total time {time.perf_counter() - t0:.1f} s)")
    return on_pass


# ---------------------------------------------------------------- AutoAttack's checks
def _flag(name: str, message: str) -> dict:
    return {"flag": name, "message": message}


def checks(model, variables, x, y, n_classes, names, budgets, repeats: int = 5, alpha: float = 1e-4) -> list[dict]:
    """The checks made before attacking, on one batch: randomised or softmax outputs, too few classes."""
    flags = []
    (xb,) = problem.shard_batch(jnp.asarray(x))
    outs = [np.asarray(problem.logits(model, variables, xb), np.float64) for _ in range(repeats)]
    unit = [o / (np.linalg.norm(o, axis=1, keepdims=True) + 1e-10) for o in outs]
    spread = max(np.linalg.norm(a - b, axis=1).max() for i, a in enumerate(unit) for b in unit[i + 1:])
    correct = {int(np.sum(o.argmax(1) == y)) for o in outs}
    if spread > alpha or len(correct) > 1:
        flags.append(_flag("randomized", f"it seems to be a randomized defense: {repeats} forwards of the same batch "
                           f"differ (normalised logits up to {spread:.3g} apart); evaluate it with expectation over "
                           "transformation"))
    o = outs[0]
    if o.max() < 1 + 1e-5 and o.min() > -1e-5 and np.all(np.abs(o.sum(-1) - 1) < 1e-5):
        flags.append(_flag("softmax_output", "it seems that the output is a probability distribution: give the "
                           "model's logits"))
    targeted = [a for a in names if a in ("apgd-t", "fab-t")]
    if targeted and budgets["targets"] + 1 > n_classes:
        flags.append(_flag("few_classes", f"{budgets['targets']} target classes asked but the model has {n_classes} "
                           f"classes: {', '.join(TITLES[a] for a in targeted)} use{'s' if len(targeted) == 1 else ''} "
                           f"{n_classes - 1}"))
    return flags


def _square_flag(after: dict, names, eps) -> list[dict]:
    """Square's own share: the examples it broke after the attacks before it (AutoAttack runs it last)."""
    i = names.index("square") if "square" in names else 0
    if i == 0:
        return []
    white = after[names[i - 1]]
    if after["square"] < white - SQUARE_ALPHA:
        return [_flag("square_improves", f"Square Attack has decreased the robust accuracy by "
                      f"{100 * (white - after['square']):.2f}% at eps {eps:.4g}: the white-box attacks may be facing "
                      "masked gradients; run Square with more queries and restarts, or an adaptive attack")]
    return []


def _monotone_flags(rows: list[EpsResult]) -> list[dict]:
    out = []
    for lo, hi in zip(rows, rows[1:]):
        if hi.robust_accuracy > lo.robust_accuracy:
            out.append(_flag("eps_not_monotone", f"robust accuracy rises from {100 * lo.robust_accuracy:.1f}% at eps "
                             f"{lo.eps:.4g} to {100 * hi.robust_accuracy:.1f}% at eps {hi.eps:.4g}: a larger budget "
                             "should never help the model; the attacks are failing"))
    return out
