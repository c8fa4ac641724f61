"""Mixup and cutmix as batch operations inside the compiled train step (timm's ``Mixup``, mode "batch").

Per batch: with probability ``prob`` the batch is mixed, else left as it is. A mixed batch is cutmix with
probability ``switch_prob`` when both alphas are positive (only the one whose alpha is positive otherwise);
``lam ~ Beta(alpha, alpha)`` of that operation. The partner of example ``i`` is example ``B - 1 - i`` (timm's
``x.flip(0)``):

- mixup: ``lam * x + (1 - lam) * partner``;
- cutmix: a box of side ``floor(H * sqrt(1 - lam))`` by ``floor(W * sqrt(1 - lam))`` centred on a uniform pixel
  and clipped to the image (timm's ``rand_bbox``: half-sides ``cut // 2``) is pasted from the partner, and
  ``lam`` is corrected to the share of the image left unpasted, ``1 - box area / (H * W)``.

Targets become soft: label smoothing is applied to both one-hots, which are then mixed (timm's
``mixup_target``): ``lam * smooth(y) + (1 - lam) * smooth(y_partner)``.

The randomness comes from the step's key (``fold_in(run key, step)``, folded with ``MIX_SALT``), so a resumed
run mixes the same way. One lambda and one box per batch the step sees: under ``jit`` that is the global
batch (the partner of an example may live on another device, and XLA moves it); under ``pmap`` each device's
shard is a batch with the same lambda and box on every device (the key is the same) and partners within the
shard.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MIX_SALT = 0x6D6978   # folded into the step's key: the mixing draws are not the dropout's


@dataclasses.dataclass(frozen=True)
class MixConfig:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5
    prob: float = 1.0

    @property
    def enabled(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0


def check_mix(mix: MixConfig) -> MixConfig:
    """One-line errors for alphas below 0 or probabilities outside [0, 1]."""
    for name in ("mixup_alpha", "cutmix_alpha"):
        if not getattr(mix, name) >= 0:
            raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(mix, name)}")
    for name, value in (("mix_switch_prob", mix.switch_prob), ("mix_prob", mix.prob)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    return mix


def cutmix_box(lam: jax.Array, cy: jax.Array, cx: jax.Array, height: int, width: int):
    """``(yl, yh, xl, xh, lam_corrected)`` of timm's ``rand_bbox`` for centre ``(cy, cx)`` and ``lam``."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    yl, yh = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    xl, xh = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    corrected = 1.0 - ((yh - yl) * (xh - xl)).astype(jnp.float32) / float(height * width)
    return yl, yh, xl, xh, corrected


def mix_targets(labels: jax.Array, num_classes: int, lam: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """(B, C) float32: smoothed one-hots of ``labels`` and of the reversed batch's, mixed by ``lam``."""
    off = smoothing / num_classes
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (1.0 - smoothing) + off
    return lam * one_hot + (1.0 - lam) * one_hot[::-1]


def mix_draws(key: jax.Array, mix: MixConfig, height: int, width: int) -> dict[str, jax.Array]:
    """The batch's random choices: whether it is mixed, whether by cutmix, ``lam`` and the box centre."""
    k_apply, k_switch, k_mix, k_cut, k_y, k_x = jax.random.split(key, 6)
    apply = jax.random.uniform(k_apply) < mix.prob
    if mix.mixup_alpha > 0 and mix.cutmix_alpha > 0:
        use_cut = jax.random.uniform(k_switch) < mix.switch_prob
    else:
        use_cut = jnp.asarray(mix.cutmix_alpha > 0)
    one = jnp.float32(1.0)
    lam_mix = jax.random.beta(k_mix, mix.mixup_alpha, mix.mixup_alpha) if mix.mixup_alpha > 0 else one
    lam_cut = jax.random.beta(k_cut, mix.cutmix_alpha, mix.cutmix_alpha) if mix.cutmix_alpha > 0 else one
    lam = jnp.where(apply, jnp.where(use_cut, lam_cut, lam_mix), one).astype(jnp.float32)
    return {"apply": apply, "cutmix": apply & use_cut, "lam": lam,
            "cy": jax.random.randint(k_y, (), 0, height), "cx": jax.random.randint(k_x, (), 0, width)}


def apply_mix(images: jax.Array, labels: jax.Array, num_classes: int, draws: dict[str, jax.Array],
              smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(mixed images, soft targets (B, C), lam used)`` for the choices ``draws`` (``mix_draws``)."""
    height, width = images.shape[1:3]
    lam = draws["lam"]
    partner = images[::-1]
    yl, yh, xl, xh, lam_box = cutmix_box(lam, draws["cy"], draws["cx"], height, width)
    rows, cols = jnp.arange(height), jnp.arange(width)
    inside = (((rows >= yl) & (rows < yh))[:, None] & ((cols >= xl) & (cols < xh))[None, :])[None, :, :, None]
    lam_f = lam.astype(images.dtype)
    mixed = lam_f * images + (1 - lam_f) * partner
    cut = jnp.where(inside, partner, images)
    out = jnp.where(draws["cutmix"], cut, jnp.where(draws["apply"], mixed, images))
    lam = jnp.where(draws["cutmix"], lam_box, lam)
    return out, mix_targets(labels, num_classes, lam, smoothing), lam


def mix_batch(key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int, mix: MixConfig,
              smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """``(images, soft targets)`` of the batch mixed as ``mix`` says, with the draws of ``key``."""
    draws = mix_draws(jax.random.fold_in(key, MIX_SALT), mix, *images.shape[1:3])
    out, targets, _ = apply_mix(images, labels, num_classes, draws, smoothing)
    return out, targets
