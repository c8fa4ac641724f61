"""The 1x1 stride-2 convolutions of ResNet-50's downsampling paths through oneDNN, given the whole
input (what ``jaxcnn.onednn.conv`` does now) against the input cropped to the rows and columns
the windows read (what it did before), forward and forward + backward, the two alternating.

    python benchmarks/conv_crop.py --repeats 9
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from jaxcnn.cpu import build, host_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved import interleaved_ms  # noqa: E402

SHAPES = [(56, 256, 512), (28, 512, 1024), (14, 1024, 2048)]   # (H = W, C in, C out), batch 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.cpu import build, onednn

    if not build.available():
        raise SystemExit(f"oneDNN is unavailable: {build.why_unavailable()}")
    print("| 1x1/2 convolution | cropped fwd ms | whole fwd ms | cropped fwd+bwd ms | whole fwd+bwd ms |")
    print("|---|---|---|---|---|")
    for h, c, o in SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((16, h, h, c)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((1, 1, c, o)) * 0.05, jnp.float32)
        geometry, out_hw = ((2, 2), (1, 1), (0, 0), (0, 0), 1), (h // 2, h // 2)
        inputs = {"cropped": lambda x: x[:, :h - 1, :h - 1], "whole": lambda x: x}
        calls = {}
        for name, take in inputs.items():
            conv = lambda x, w, take=take: onednn._conv(take(x), w, geometry, out_hw)
            calls[name, "fwd"] = functools.partial(jax.jit(conv), x, w)
            calls[name, "grad"] = functools.partial(
                jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(conv(x, w)), argnums=(0, 1))), x, w)
        np.testing.assert_allclose(calls["whole", "fwd"](), calls["cropped", "fwd"](), rtol=1e-5)
        ms = interleaved_ms(calls, args.repeats)
        print(f"| {h}x{h}x{c} -> {o} | {ms['cropped', 'fwd']:.1f} | {ms['whole', 'fwd']:.1f} | "
              f"{ms['cropped', 'grad']:.1f} | {ms['whole', 'grad']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
