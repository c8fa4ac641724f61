"""Parity with torchvision: same weights, eval mode, float32 -> same logits and features.

The references were made by ``tests/parity/make_refs.py`` with torch 2.14.1 /
torchvision 0.29.1 on synthetic weights that ``tests/parity/synthetic.py``
regenerates here with NumPy alone; the weights travel through a real
``.safetensors`` file and ``jaxcnn.load_pretrained``. Error measure:
max |jaxcnn - torch| / max |torch| per array, required <= 1e-4.
"""

import functools
import json
import os

import jax
import numpy as np
import pytest

import jaxcnn
from tests.parity.cases import CASES, FAST
from tests.parity.synthetic import relative_error, sample, synthetic_images, synthetic_state_dict

REF_DIR = os.path.join(os.path.dirname(__file__), "data", "parity")
TOLERANCE = 1e-4


def _params(names, slow):
    return [pytest.param(n, marks=pytest.mark.slow) if slow else n for n in names]


@pytest.mark.parametrize("name", _params(FAST, False) + _params([n for n in CASES if n not in FAST], True))
def test_matches_torchvision(name, tmp_path):
    case = CASES[name]
    ref = np.load(os.path.join(REF_DIR, f"{name}.npz"))
    shapes = json.loads(str(ref["keys"]))
    path = tmp_path / "weights.safetensors"
    jaxcnn.write_state_dict(synthetic_state_dict(shapes, name), path)
    model, variables = jaxcnn.load_pretrained(name, path, **case.get("options", {}))
    n_params = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))
    assert jaxcnn.count_params(variables) == n_params
    forward = jax.jit(functools.partial(model.apply, train=False))
    errors = {}
    for size in case["sizes"]:
        x = synthetic_images(name, size).transpose(0, 2, 3, 1)
        logits, feats = forward(variables, x)
        assert tuple(logits.shape) == tuple(ref[f"shape_{size}_logits"])
        errors[f"logits@{size}"] = relative_error(sample(name, "logits", logits), ref[f"logits_{size}"])
        for key in case["features"]:
            ours, want_shape = feats[key], tuple(ref[f"shape_{size}_{key}"])
            if ours.ndim == 4 and ours.shape[1:3] == (1, 1) and len(want_shape) == 2:
                ours = ours.reshape(ours.shape[0], -1)  # make_refs stores (N, C, 1, 1) maps as (N, C)
            assert tuple(ours.shape) == want_shape, key
            errors[f"{key}@{size}"] = relative_error(sample(name, key, ours), ref[f"feat_{size}_{key}"])
    worst = max(errors, key=errors.get)
    print(f"\n{name}: largest relative error {errors[worst]:.2e} ({worst})")
    assert errors[worst] <= TOLERANCE, errors
