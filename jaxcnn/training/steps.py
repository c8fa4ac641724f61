"""Train and eval step factories: pure functions ``state, batch -> state, metrics``.

The factories know nothing about devices: ``jaxcnn.parallel`` jits them with
shardings (or pmaps them). A batch is ``{"image": (B, H, W, 3) uint8 pixels or normalized float,
"label": (B,) int32}`` plus, for evaluation, an optional ``"mask"`` (B,) that
is 0 for padding examples.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess
from jaxcnn.training.mixup import MixConfig, check_mix, mix_batch
from jaxcnn.training.state import RNG_IMPL, TrainState

# auxiliary classifier outputs found in ``features`` during training, and their loss weights:
# GoogLeNet's two heads at 0.3 (Szegedy et al. 2014), Inception-v3's at 0.4 (torchvision's recipe)
AUX_LOSS_WEIGHTS = {"aux1": 0.3, "aux2": 0.3, "aux": 0.4}


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy in float32, with optional label smoothing. ``labels`` (B,) integers,
    or (B, C) soft targets (mixup/cutmix: smoothed already, ``label_smoothing`` is not applied again)."""
    if labels.ndim == 2:
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """(B,) float: 1 where the label is among the k highest logits."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def check_batch(batch: dict[str, jax.Array]) -> None:
    """Shapes are static under jit, so a wrong batch fails at trace time with one line."""
    if "image" not in batch or "label" not in batch:
        raise ValueError(f"a batch needs 'image' and 'label'; got keys {sorted(batch)}")
    images, labels = batch["image"], batch["label"]
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = " (looks like NCHW; the loader yields NHWC)" if images.ndim == 4 and images.shape[1] == 3 else ""
        raise ValueError(f"batch images must be (B, H, W, 3); got {tuple(images.shape)}{hint}")
    if labels.shape != images.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"batch labels must be integers of shape ({images.shape[0]},); "
                         f"got {labels.dtype} {tuple(labels.shape)}")


def model_input(images: jax.Array) -> jax.Array:
    """uint8 pixels (as the loader ships them: 4x less host->device traffic) -> normalized float32."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return preprocess(images.astype(jnp.float32) / 255.0)
    return images


def _all_finite(tree: Any) -> jax.Array:
    """Whether every element is finite, as one fused reduction per leaf: ``sum(x * 0)`` is 0 for finite
    ``x`` and NaN as soon as one element is NaN or +-Inf (XLA keeps ``x * 0``: no fast math). XLA:CPU
    lowers ``all(isfinite(x))`` to a boolean array and a windowed reduction of it: two passes over every
    gradient instead of one (``python -m benchmarks.train_step`` times the whole step)."""
    zero = [jnp.sum(x * jnp.zeros((), x.dtype), dtype=jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.isfinite(sum(zero, jnp.float32(0)))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *, label_smoothing: float = 0.0,
                    accum_steps: int = 1, axis_name: str | None = None,
                    aux_weights: dict[str, float] | None = None, adversarial: dict | None = None,
                    mix: MixConfig | None = None, num_classes: int | None = None) -> Callable:
    """Builds ``train_step(state, batch) -> (state, metrics)``.

    Args:
      model: a jaxcnn model (``apply(..., train=True)`` -> ``(logits, features)``).
      tx: the optax optimizer whose state is in ``state.opt_state``.
      label_smoothing: epsilon of label smoothing.
      accum_steps: split the batch into this many micro-batches and average
        their gradients (a global batch larger than memory); batch-norm
        statistics are updated micro-batch after micro-batch.
      axis_name: the ``pmap`` axis to average gradients and metrics over
        (None under ``jit``, where the sharded batch is global already).
      aux_weights: loss weight of each auxiliary output in ``features``.
      adversarial: adversarial training (Madry et al. 2018): ``{"eps": ..,
        "steps": .., "step_size": .., "norm": "linf"|"l2"}`` in pixel units
        ([0, 1]); each batch is replaced by its PGD examples against the
        current weights (eval-mode model, random start) before the update.
      mix: mixup / cutmix of each batch (``jaxcnn.training.mixup``; soft targets with the label smoothing),
        drawn from the step's key; needs ``num_classes``. Train ``top1``/``top5`` are then against each
        soft target's largest class.

    Returns:
      A pure function. ``metrics`` holds the step's mean ``loss``, ``top1``,
      ``top5`` and ``finite`` (0 when the loss or a gradient was NaN/Inf: the
      state is then returned unchanged, and the caller stops the run).
    """
    aux_weights = AUX_LOSS_WEIGHTS if aux_weights is None else aux_weights
    adversarial = check_adversarial(adversarial)
    mix = check_mix(mix) if mix is not None and mix.enabled else None
    if mix is not None and adversarial:
        raise ValueError("mixup/cutmix and adversarial training do not combine (PGD needs hard labels)")
    if mix is not None and not num_classes:
        raise ValueError("mixup/cutmix needs num_classes")

    def loss_fn(params, batch_stats, images, labels, key):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        (logits, feats), updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                               rngs={"dropout": key})
        loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
        for name, weight in aux_weights.items():
            if name in feats:
                loss = loss + weight * jnp.mean(cross_entropy(feats[name], labels, label_smoothing))
        hard = jnp.argmax(labels, axis=-1) if labels.ndim == 2 else labels
        metrics = {"loss": loss, "top1": jnp.mean(topk_correct(logits, hard, 1)),
                   "top5": jnp.mean(topk_correct(logits, hard, 5))}
        return loss, (updates.get("batch_stats", {}), metrics)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        check_batch(batch)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=RNG_IMPL), state.step)
        images, labels = model_input(batch["image"]), batch["label"]
        if adversarial:
            images = _adversarial_images(model, state, images, labels, jax.random.split(key)[1], adversarial)
        if mix is not None:
            images, labels = mix_batch(key, images, labels, num_classes, mix, label_smoothing)
        return gradient_update(state, tx, grad_fn, images, labels, key, accum_steps=accum_steps,
                               axis_name=axis_name)

    return train_step


def gradient_update(state: TrainState, tx: optax.GradientTransformation, grad_fn: Callable, images: jax.Array,
                    targets: jax.Array, key: jax.Array, *, accum_steps: int = 1,
                    axis_name: str | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update from ``grad_fn``, shared by every task's train step.

    ``grad_fn(params, batch_stats, images, targets, key) -> ((loss, (batch_stats, metrics)), grads)``
    is called on the whole batch, or on ``accum_steps`` micro-batches (leading
    axis split; gradients and metrics averaged, batch statistics threaded
    through, key folded with the micro-batch index). Under ``pmap``
    (``axis_name``) gradients and metrics are averaged over devices. A
    non-finite loss or gradient leaves ``state`` unchanged; ``metrics["finite"]`` says so.
    """
    if accum_steps == 1:
        (_, (batch_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, images, targets, key)
    else:
        micro = lambda a: a.reshape(accum_steps, a.shape[0] // accum_steps, *a.shape[1:])  # noqa: E731

        def body(carry, xs):
            grads_sum, stats = carry
            imgs, tgts, i = xs
            (_, (stats, m)), g = grad_fn(state.params, stats, imgs, tgts, jax.random.fold_in(key, i))
            return (jax.tree_util.tree_map(jnp.add, grads_sum, g), stats), m

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (grads, batch_stats), ms = jax.lax.scan(
            body, (zeros, state.batch_stats), (micro(images), micro(targets), jnp.arange(accum_steps)))
        grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grads)
        metrics = jax.tree_util.tree_map(jnp.mean, ms)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)

    def update() -> TrainState:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             batch_stats=batch_stats, opt_state=opt_state)

    finite = jnp.isfinite(metrics["loss"]) & _all_finite(grads)
    # a non-finite step changes nothing, so the last good state (and checkpoint) survives
    return _update_if(finite, update, state), {**metrics, "finite": finite.astype(jnp.float32)}


EMA_WARMUPS = ("none", "tf")


def check_ema(decay: float, every: int = 1, warmup: str = "none") -> None:
    """One-line errors for a decay outside [0, 1), ``every`` < 1 or an unknown warm-up."""
    if not 0 <= decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1) (0 = no EMA), got {decay}")
    if every < 1:
        raise ValueError(f"ema_every must be >= 1, got {every}")
    if warmup not in EMA_WARMUPS:
        raise ValueError(f"unknown ema_warmup {warmup!r}; valid: {', '.join(EMA_WARMUPS)}")


def ema_decay_at(decay: float, updates: jax.Array, warmup: str = "none") -> jax.Array:
    """The decay of the EMA update after ``updates`` earlier ones: ``decay``, or with ``warmup="tf"``
    ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's ``ExponentialMovingAverage(num_updates=n)``)."""
    if warmup == "tf":
        n = jnp.asarray(updates, jnp.float32)
        return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))
    return jnp.float32(decay)


def with_ema(train_step: Callable, decay: float, every: int = 1, warmup: str = "none") -> Callable:
    """``train_step`` that also updates ``state.ema`` (weights and batch-norm statistics) inside the same
    compiled step: after every ``every``-th optimizer step, ``ema = d * ema + (1 - d) * weights`` with ``d =
    ema_decay_at(decay, earlier updates, warmup)``. A non-finite step (state unchanged) leaves it alone.
    ``decay`` 0: ``train_step`` itself. torchvision's ``--model-ema-decay`` maps to ``decay`` through
    ``state.torchvision_ema_decay``."""
    check_ema(decay, every, warmup)
    if not decay:
        return train_step

    def step(state: TrainState, batch):
        if not state.ema:
            raise ValueError("ema_decay > 0 needs a state with an EMA (create_train_state(..., ema=True))")
        new, metrics = train_step(state, batch)
        due = (metrics["finite"] > 0) & (new.step % every == 0)
        d = ema_decay_at(decay, new.step // every - 1, warmup)
        target = {"params": new.params, "batch_stats": new.batch_stats}

        def update():
            return jax.tree_util.tree_map(lambda a, x: (d * a + (1 - d) * x).astype(a.dtype), new.ema, target)

        # lax.cond: with every > 1 the steps between updates do not touch the average
        return new.replace(ema=jax.lax.cond(due, update, lambda: new.ema)), metrics

    return step


def _update_if(finite: jax.Array, update: Callable[[], TrainState], state: TrainState) -> TrainState:
    """``update()`` if ``finite`` else ``state``: one ``lax.cond`` on the CPU (``cpu.cond_tree``)."""
    return cpu.cond_tree(finite, update, lambda: state)


ADVERSARIAL_KEYS = ("eps", "steps", "step_size", "norm")


def check_adversarial(adversarial: dict | None) -> dict:
    """Validates the adversarial-training options (unknown keys, bad budget: one line) and fills defaults."""
    if not adversarial:
        return {}
    unknown = set(adversarial) - set(ADVERSARIAL_KEYS)
    if unknown:
        raise ValueError(f"unknown adversarial option(s) {sorted(unknown)}; valid: {', '.join(ADVERSARIAL_KEYS)}")
    eps = float(adversarial.get("eps", 0.0))
    if not (eps > 0 and eps < float("inf")):
        raise ValueError(f"adversarial training needs a finite eps > 0, got {adversarial.get('eps')}")
    steps = int(adversarial.get("steps", 3))
    return {"eps": eps, "steps": steps, "step_size": float(adversarial.get("step_size", 2.5 * eps / steps)),
            "norm": adversarial.get("norm", "linf")}


def _adversarial_images(model, state, images, labels, key, opts):
    from jaxcnn.imagenet import deprocess
    from jaxcnn.inputopt.attacks import perturb
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    pixels = jnp.clip(deprocess(images), 0.0, 1.0)
    adv = perturb(model, jax.lax.stop_gradient(variables), pixels, labels, key, eps=opts["eps"], steps=opts["steps"],
                  step_size=opts["step_size"], norm=opts["norm"])
    return preprocess(jax.lax.stop_gradient(adv))


def make_eval_step(model: nn.Module, *, axis_name: str | None = None) -> Callable:
    """Builds ``eval_step(variables, batch) -> sums`` of loss, top1, top5 and count (masked)."""

    def eval_step(variables, batch):
        check_batch(batch)
        logits, _ = model.apply(variables, model_input(batch["image"]), train=False)
        labels = batch["label"]
        mask = batch.get("mask", jnp.ones(labels.shape, jnp.float32)).astype(jnp.float32)
        sums = {"loss": jnp.sum(cross_entropy(logits, labels) * mask),
                "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
                "top5": jnp.sum(topk_correct(logits, labels, 5) * mask),
                "count": jnp.sum(mask)}
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return eval_step
