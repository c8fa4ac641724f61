"""RobustBench- and robustness-library-format weight files: prefixes, normalization buffers, the wrapped model.

``tests/refs/make_robust_refs.py`` (run once with torch) wrapped a ResNet-18 (the parity suite's synthetic
weights, batch-norm statistics calibrated on scikit-image's photos) as RobustBench's ``normalize_model``
and the robustness library's ``AttackerModel`` do, with a normalization that is not ImageNet's, and stored
both state-dict layouts (key -> shape) and the torch model's logits on the photos. Here the same weights
are written in each layout (a ``.safetensors`` file, and a torch zip ``.pth`` whose pickle holds the
robustness library's checkpoint dict), loaded with ``jaxcnn.load_pretrained`` and run on the photos
through ``jaxcnn.preprocess`` like any other model.
"""

import json
import os
import warnings

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn.inputopt import problem
from jaxcnn.weights import NormalizationWarning, Renormalized, unwrap
from tests.parity.synthetic import relative_error, synthetic_state_dict
from tests.test_weights_crafted import Ordered, dumps, tensor, write_pth

REF = os.path.join(os.path.dirname(__file__), "data", "robust_refs.npz")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ref():
    r = np.load(REF)
    keys = {name: json.loads(str(r[name])) for name in ("robustbench_keys", "robustness_keys")}
    torchvision_shapes = {k[len("model."):]: tuple(s) for k, s in keys["robustbench_keys"].items()
                          if k.startswith("model.")}
    weights = synthetic_state_dict(torchvision_shapes, "resnet18")
    weights.update({k[len("bn/"):]: r[k] for k in r.files if k.startswith("bn/")})
    x = r["photos"].astype(np.float32) / 255
    return r, keys, weights, x


def _wrapped(keys: dict, weights: dict, mean, std) -> dict:
    """The state dict of ``keys``'s layout: network weights under any prefix, buffers of the layout's shape."""
    out = {}
    for k, shape in keys.items():
        if k.endswith(("mean", "std")) and "normalize" in k:
            out[k] = np.asarray(mean if k.endswith("mean") else std, np.float32).reshape(shape)
        else:
            out[k] = weights[k.split("model.", 1)[1]]
    return out


def _write_pth(path, state: dict) -> None:
    """A torch zip file holding the robustness library's checkpoint: {model, optimizer, schedule, epoch}."""
    items, records = [], {}
    for i, (k, v) in enumerate(state.items()):
        v = np.ascontiguousarray(v)
        storage = "LongStorage" if v.dtype == np.int64 else "FloatStorage"
        strides = tuple(int(np.prod(v.shape[j + 1:])) for j in range(v.ndim))
        items.append((k, tensor(str(i), v.size, 0, tuple(v.shape), strides, storage)))
        records[str(i)] = v.astype("<i8" if storage == "LongStorage" else "<f4").tobytes()
    checkpoint = {"model": Ordered(items), "optimizer": {"state": {}, "param_groups": [{"params": [0, 1]}]},
                  "schedule": None, "epoch": 90}
    write_pth(path, dumps(checkpoint), records)


def _logits(model, variables, x):
    return np.asarray(problem.logits(model, variables, x))


def test_robustbench_layout_reads_its_normalization(ref, tmp_path):
    r, keys, weights, x = ref
    state = _wrapped(keys["robustbench_keys"], weights, r["robust_mean"], r["robust_std"])
    jaxcnn.write_state_dict(state, tmp_path / "robust.safetensors")
    with pytest.warns(NormalizationWarning, match=r"RobustBench .*mean=\(0\.5, 0\.35, 0\.3\) std=\(0\.15, 0\.3, "
                                                  r"0\.45\), read from normalize\.mean and normalize\.std"):
        model, variables = jaxcnn.load_pretrained("resnet18", tmp_path / "robust.safetensors")
    assert isinstance(model, Renormalized) and model.normalization.std == pytest.approx((0.15, 0.3, 0.45))
    got = _logits(model, variables, x)
    assert relative_error(got, r["logits_robust"]) <= TOLERANCE
    # the normalization matters: the same network fed ImageNet's is another function of the photos
    assert relative_error(r["logits_imagenet"], r["logits_robust"]) > 0.2
    # training feeds ImageNet-normalized batches: fine-tuning from this file is refused, not silently wrong
    from jaxcnn.training import TrainConfig, train
    with pytest.raises(ValueError, match="normalizes its input with mean .*not ImageNet's"):
        train(TrainConfig(model="resnet18", pretrained=str(tmp_path / "robust.safetensors"), max_steps=1,
                          workdir=str(tmp_path / "run")), progress=False)


def test_robustness_library_checkpoint_pth(ref, tmp_path):
    r, keys, weights, x = ref
    state = _wrapped(keys["robustness_keys"], weights, r["robust_mean"], r["robust_std"])
    assert {"module.normalizer.new_mean", "module.attacker.normalize.new_std"} <= set(state)
    _write_pth(tmp_path / "checkpoint.pt", state)
    with pytest.warns(NormalizationWarning, match="robustness library .*read from normalizer.new_mean"):
        model, variables = jaxcnn.load_pretrained("resnet18", tmp_path / "checkpoint.pt")
    assert relative_error(_logits(model, variables, x), r["logits_robust"]) <= TOLERANCE


def test_files_without_buffers_state_imagenet_and_plain_files_are_unchanged(ref, tmp_path):
    r, keys, weights, x = ref
    zoo = {f"module.model.{k}": v for k, v in weights.items()}      # a model-zoo file: prefixes, no buffers
    jaxcnn.write_state_dict(zoo, tmp_path / "zoo.safetensors")
    with pytest.warns(NormalizationWarning, match=r"\(ImageNet's, as jaxcnn.preprocess\), stated: the file holds no"):
        model, variables = jaxcnn.load_pretrained("resnet18", tmp_path / "zoo.safetensors")
    assert model.normalization.is_imagenet()
    assert relative_error(_logits(model, variables, x), r["logits_imagenet"]) <= TOLERANCE
    zoo_variables = variables
    jaxcnn.write_state_dict(weights, tmp_path / "plain.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a plain torchvision file: no wrapper, no warning
        model, variables = jaxcnn.load_pretrained("resnet18", tmp_path / "plain.safetensors")
    assert not isinstance(model, Renormalized)
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, zoo_variables))   # the same network as the zoo's


def test_bad_wrapped_files_are_one_line_errors():
    w = {"model.fc.bias": np.zeros(3, np.float32)}
    three = np.ones((1, 3, 1, 1), np.float32)
    cases = [
        ({**w, "normalize.mean": three}, "has normalize.mean but not normalize.std"),
        ({**w, "normalize.std": three}, "has normalize.std but not normalize.mean"),
        ({**w, "normalize.mean": three, "normalize.std": -three}, "normalize.std must be positive"),
        ({**w, "normalizer.new_mean": np.ones(4), "normalizer.new_std": three}, r"new_mean has shape \(4,\)"),
        ({**w, "normalize.mean": three * np.nan, "normalize.std": three}, "normalize.mean holds NaN"),
        ({"fc.bias": np.zeros(3), "normalize.mean": three, "normalize.std": three}, "weights are not under 'model.'"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            unwrap(state, "f.pt")
        assert str(e.value).startswith("f.pt: ") and "\n" not in str(e.value)
    plain = {"fc.bias": np.zeros(3)}
    assert unwrap(plain) == (plain, None)
