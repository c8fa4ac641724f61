"""Makes the torchvision reference outputs the parity tests compare against.

Run in a separate venv that has PyTorch (never a dependency of jaxcnn):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /tmp/torchvenv/bin/python tests/parity/make_refs.py            # every case
    /tmp/torchvenv/bin/python tests/parity/make_refs.py resnet18   # some cases

For each case of ``cases.py`` it builds torchvision's model, loads the
synthetic weights of ``synthetic.py``, runs it in eval mode (float32) on two
input sizes and writes ``tests/data/parity/<name>.npz``: the state-dict key
shapes, the logits and a fixed sample of each named feature. It also writes
``tests/data/torch_format.pth`` (a tiny state dict exercising the .pth reader)
and ``jaxcnn/imagenet_classes.txt``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cases import CASES  # noqa: E402
from synthetic import sample, synthetic_images, synthetic_state_dict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "parity")


def _to_nhwc(t: torch.Tensor) -> np.ndarray:
    a = t.detach().float().numpy().copy()  # copy: later in-place ops (ReLU(inplace)) must not change it
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        return a.reshape(a.shape[0], -1)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def make(name: str) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    model = torchvision.models.get_model(case["tv"], weights=None, **case["kwargs"]).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = synthetic_state_dict(shapes, name)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    out = {"keys": np.array(json.dumps(shapes))}
    modules = dict(model.named_modules())
    for size in case["sizes"]:
        captured = {}
        hooks = [modules[path].register_forward_hook(
            lambda m, i, o, key=key: captured.__setitem__(key, _to_nhwc(o)))
            for key, path in case["features"].items()]
        with torch.no_grad():
            y = model(torch.from_numpy(synthetic_images(name, size)))
        for h in hooks:
            h.remove()
        logits = y["out"] if isinstance(y, dict) else y
        logits = _to_nhwc(logits)
        out[f"logits_{size}"] = sample(name, "logits", logits)
        out[f"shape_{size}_logits"] = np.array(logits.shape)
        for key, value in captured.items():
            out[f"feat_{size}_{key}"] = sample(name, key, value)
            out[f"shape_{size}_{key}"] = np.array(value.shape)
    np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **out)
    print(f"{name}: {sum(int(np.prod(s)) for s in shapes.values()):,} params, sizes {case['sizes']}")


def make_torch_format_file() -> None:
    """A tiny .pth with the tensor layouts a reader must handle, and the expected arrays."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = {
        "conv.weight": torch.randn(2, 3, 3, 3, generator=g),
        "bn.running_var": torch.rand(2, generator=g, dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(7),
        "fc.weight": base.t(),               # non-contiguous view
        "fc.bias": base[1, 2:5],             # offset into a shared storage
        "half": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(3, generator=g).bfloat16(),
        "mask": torch.tensor([True, False, True]),
    }
    sd = torch.nn.Module().state_dict()  # an OrderedDict with _metadata, as torchvision saves
    sd.update(state)
    torch.save(sd, os.path.join(ROOT, "tests", "data", "torch_format.pth"))
    np.savez(os.path.join(ROOT, "tests", "data", "torch_format_expected.npz"),
             **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()})


def make_class_names() -> None:
    from torchvision.models._meta import _IMAGENET_CATEGORIES
    with open(os.path.join(ROOT, "jaxcnn", "imagenet_classes.txt"), "w") as f:
        f.write("\n".join(_IMAGENET_CATEGORIES) + "\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    names = sys.argv[1:] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    for n in names:
        make(n)
    if not sys.argv[1:]:
        make_torch_format_file()
        make_class_names()
