"""Inspecting units and filters: top-activating patches over a data set, and first-layer filters against
factorizations of natural image patches.

``top_patches``: the k (image, position) pairs with the largest activation
of one channel of one layer over a data set (at most one per image, as in
Zeiler & Fergus), with the unit's receptive-field crop: the bounding box of
pixels its gradient reaches (computed, so it holds for any architecture and
padding).

``patch_factorizations``: random patches of real photos factorised three
ways with scikit-learn: PCA (orthogonal; Fourier-like patterns), FastICA on
whitened patches and sparse dictionary learning (non-orthogonal; oriented
edges and colour blobs, like a trained first layer). ``first_layer`` reads a
model's first convolution kernels for the same mosaic.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import objectives as O, problem


@dataclasses.dataclass
class TopPatches:
    """index (k,) image indices, position (k, 2) feature-map (y, x), value (k,) activation,
    box (k, 4) receptive-field crop (y0, y1, x0, x1) in pixels, patches: list of (h, w, 3) crops."""

    index: np.ndarray
    position: np.ndarray
    value: np.ndarray
    box: np.ndarray
    patches: list


def channel_maps(model, variables, images, layer: str, channel: int, *, batch: int = 128,
                 progress: bool = False) -> np.ndarray:
    """(N, h, w) activation maps of one channel over images (N, H, W, 3) in [0, 1]."""
    problem.check_images01(images)
    _, feats = problem.feature_shapes(model, variables, (1, *np.shape(images)[1:]))
    if layer not in feats:
        raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(feats)}")
    if feats[layer].ndim != 4 or not 0 <= channel < feats[layer].shape[-1]:
        raise ValueError(f"{layer} has shape {feats[layer].shape[1:]}; channel {channel} is not a spatial unit of it")
    starts = range(0, len(images), batch)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, unit="batch", leave=False)
    return np.concatenate([np.asarray(_channel_map(model, variables, jnp.asarray(images[i:i + batch], jnp.float32),
                                                   layer, jnp.int32(channel))) for i in starts])


@functools.partial(cpu.jit, static_argnames=("model", "layer"))    # once per model and layer, not per call
def _channel_map(model, variables, x, layer, channel):
    return jnp.take(model.apply(variables, preprocess(x), train=False)[1][layer], channel, axis=-1)


def receptive_box(model, variables, image, layer: str, channel: int, y: int, x: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): bounding box of the input pixels that the unit's gradient reaches (whole image if none)."""
    unit = O.neuron(layer, channel, y=int(y), x=int(x))
    g = jax.grad(lambda im: jnp.sum(unit({"features": model.apply(variables, preprocess(im), train=False)[1],
                                          "logits": None, "image": im})))(jnp.asarray(image, jnp.float32)[None])
    reach = np.any(np.asarray(g[0]) != 0, axis=-1)
    if not reach.any():
        h, w = reach.shape
        return 0, h, 0, w
    ys, xs = np.nonzero(reach)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def top_patches(model, variables, images, layer: str, channel: int, *, k: int = 9,
                progress: bool = False) -> TopPatches:
    """The k images whose maximum activation of ``layer``/``channel`` is largest, with where and how much."""
    maps = channel_maps(model, variables, images, layer, channel, progress=progress)
    flat = maps.reshape(len(maps), -1)
    best = flat.max(axis=1)
    order = np.argsort(-best, kind="stable")[: min(k, len(maps))]
    pos = np.stack(np.unravel_index(flat[order].argmax(axis=1), maps.shape[1:]), -1)
    boxes = np.array([receptive_box(model, variables, images[i], layer, channel, *p) for i, p in zip(order, pos)])
    patches = [np.asarray(images[i])[b[0]:b[1], b[2]:b[3]] for i, b in zip(order, boxes)]
    return TopPatches(order, pos, best[order], boxes, patches)


# ---------------------------------------------------------------- filters and patch factorizations
def first_layer(variables) -> np.ndarray:
    """The first convolution's kernels (kh, kw, 3, N) of a model's variables (the first 4-D 3-channel kernel)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
        if np.ndim(leaf) == 4 and np.shape(leaf)[2] == 3:
            return np.asarray(leaf)
    raise ValueError("no convolution with 3 input channels in these variables")


def sample_patches(photos, size: int, n: int, *, seed: int = 0) -> np.ndarray:
    """(n, size*size*3) random patches (flattened, float in [0, 1]) from a list of (H, W, 3) photos."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        y, x = rng.integers(0, im.shape[0] - size + 1), rng.integers(0, im.shape[1] - size + 1)
        out.append(im[y:y + size, x:x + size].reshape(-1))
    return np.asarray(out, np.float32)


def patch_factorizations(patches: np.ndarray, n_components: int, *, seed: int = 0) -> dict:
    """PCA, FastICA (whitened) and sparse dictionary atoms of mean-removed patches, each (n_components, D).

    Returns ``{"pca": ..., "ica": ..., "dictionary": ..., "mean": ...}``; the
    dictionary atoms have unit norm, the PCA components are orthonormal.
    """
    from sklearn.decomposition import PCA, FastICA, MiniBatchDictionaryLearning
    centred = patches - patches.mean(axis=1, keepdims=True)      # remove each patch's DC (brightness)
    pca = PCA(n_components, random_state=seed).fit(centred)
    ica = FastICA(n_components, whiten="unit-variance", random_state=seed, max_iter=400).fit(centred)
    mixing = ica.mixing_.T
    mixing = mixing / np.linalg.norm(mixing, axis=1, keepdims=True)
    dico = MiniBatchDictionaryLearning(n_components, alpha=0.1, batch_size=256, max_iter=20,
                                       random_state=seed).fit(centred)
    return {"pca": pca.components_, "ica": mixing, "dictionary": dico.components_, "mean": centred.mean(0)}


def as_kernels(atoms: np.ndarray, size: int) -> np.ndarray:
    """(N, size*size*3) atoms -> (size, size, 3, N), the layout ``viz.filter_mosaic`` draws."""
    return np.moveaxis(atoms.reshape(-1, size, size, 3), 0, -1)


def sparse_reconstruction_error(atoms: np.ndarray, patches: np.ndarray, nonzero: int) -> float:
    """Relative L2 error of OMP reconstructions of (mean-removed) patches with ``nonzero`` atoms each."""
    from sklearn.decomposition import SparseCoder
    centred = patches - patches.mean(axis=1, keepdims=True)
    coder = SparseCoder(atoms, transform_algorithm="omp", transform_n_nonzero_coefs=nonzero)
    recon = coder.transform(centred) @ atoms
    return float(np.linalg.norm(recon - centred) / np.linalg.norm(centred))
