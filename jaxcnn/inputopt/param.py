"""Parametrizations: what the optimiser actually changes, and how it maps to an image in [0, 1].

``Pixels``: the image itself, projected back into [0, 1] after every step.
``Fourier``: a spectrum per channel in a decorrelated colour space, scaled
by 1 / frequency**decay, mapped through a colour-correlation matrix and a
sigmoid (the image is in (0, 1) by construction). Gradient steps in this
space whiten the gradient's spectrum and colours, so ascent from noise gives
far less high-frequency noise than in pixel space (the idea of Olah et al.,
"Feature Visualization", Distill 2017).

Each parametrization has ``init(key, shape, image=None)`` -> params (from
noise, or reproducing ``image`` exactly), ``to_image(params)`` -> (B, H, W, 3)
and ``project(params)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# principal axes of natural-image RGB colour (Krizhevsky et al. 2012's ImageNet PCA, pixel scale [0, 1]):
# COLOR_SQRT maps decorrelated coordinates to RGB, columns scaled by the square roots of the eigenvalues
_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
COLOR_SQRT = _EIGVEC * np.sqrt(_EIGVAL)[None, :]
COLOR_SQRT = (COLOR_SQRT / np.max(np.linalg.norm(COLOR_SQRT, axis=0))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Optimise pixel values directly; noise init is ``0.5 + noise_std * N(0, 1)``."""

    noise_std: float = 0.01

    def init(self, key, shape, image=None):
        if image is not None:
            return jnp.clip(jnp.asarray(image, jnp.float32), 0.0, 1.0)
        return jnp.clip(0.5 + self.noise_std * jax.random.normal(key, shape), 0.0, 1.0)

    def to_image(self, params):
        return params

    def project(self, params):
        return jnp.clip(params, 0.0, 1.0)


def _freq_scale(h: int, w: int, decay: float) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(freq, 1.0 / max(h, w)) ** decay).astype(np.float32)  # (H, W//2+1)


@dataclasses.dataclass(frozen=True)
class Fourier:
    """Decorrelated-colour Fourier parametrization; params are (B, 2, 3, H, W//2+1) real/imaginary parts."""

    decay: float = 1.0
    noise_std: float = 0.01
    decorrelate: bool = True

    def _matrix(self):
        return jnp.asarray(COLOR_SQRT if self.decorrelate else np.eye(3, dtype=np.float32))

    def to_image(self, params):
        h, w = params.shape[-2], 2 * (params.shape[-1] - 1)
        # the width is recovered from the spectrum's length: even widths only (checked in init)
        scale = jnp.asarray(_freq_scale(h, w, self.decay))
        spectrum = jax.lax.complex(params[:, 0], params[:, 1]) * scale
        decorrelated = jnp.fft.irfft2(spectrum, s=(h, w), norm="ortho")  # (B, 3, H, W)
        rgb = jnp.einsum("bchw,dc->bhwd", decorrelated, self._matrix())
        return jax.nn.sigmoid(rgb)

    def init(self, key, shape, image=None):
        b, h, w = shape[:3]
        if w % 2:
            raise ValueError(f"the Fourier parametrization needs an even image width, got {w}")
        if image is None:
            return self.noise_std * jax.random.normal(key, (b, 2, 3, h, w // 2 + 1))
        x = jnp.clip(jnp.asarray(image, jnp.float32), 1e-3, 1 - 1e-3)
        logit = jnp.log(x) - jnp.log1p(-x)
        decorrelated = jnp.einsum("bhwd,dc->bchw", logit, jnp.linalg.inv(self._matrix()).T)
        spectrum = jnp.fft.rfft2(decorrelated, norm="ortho") / jnp.asarray(_freq_scale(h, w, self.decay))
        return jnp.stack([spectrum.real, spectrum.imag], axis=1)

    def project(self, params):
        return params


PARAMS = {"pixels": Pixels, "fourier": Fourier}


def get_param(spec) -> Pixels | Fourier:
    """A parametrization from its name (``pixels``, ``fourier``) or an instance."""
    if isinstance(spec, str):
        if spec not in PARAMS:
            raise ValueError(f"unknown parametrization {spec!r}; valid: {', '.join(PARAMS)}")
        return PARAMS[spec]()
    return spec
