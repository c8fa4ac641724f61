"""Writes tests/data/inception_v1_refs.npz: a synthetic BVLC GoogLeNet ONNX model evaluated by onnx.reference.

Run once where the ``onnx`` package is installed (``python tests/refs/make_inception_v1_refs.py``; NumPy
only, no torch). ``tests/parity/bvlc_googlenet_onnx.py`` builds the graph of BVLC's deploy.prototxt with
seeded weights; ``onnx.reference.ReferenceEvaluator`` (the ONNX specification's NumPy implementation of
each operator: ceil-mode pools, 5x5 pads, Caffe's LRN convention, for which the specification's formula
is written out here because the evaluator's own loops over the wrong axis) runs it on scikit-image's photos at
64 px, given as Caffe's input (BGR, 0..255, minus BVLC's mean). Stored: the photos (uint8), the logits, a
fixed sample of each feature of ``FEATURES`` (NHWC) and, to show that the LRN layers matter at this
scale, the logits of the same graph without them. tests/test_inception_v1.py writes the same graph,
loads it with ``jaxcnn.load_pretrained("inception_v1", ...)`` and compares.
"""

import os
import sys

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from PIL import Image
from skimage import data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.parity.bvlc_googlenet_onnx import FEATURES, bvlc_googlenet, caffe_input  # noqa: E402
from tests.parity.synthetic import sample  # noqa: E402

SIZE = 64
SEED = 7


class LRN(OpRun):
    """The ONNX specification's LRN: y = x / (bias + alpha / size * sum of x^2 over channels
    [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]) ** beta. (onnx 1.23's reference LRN loops over
    the batch axis instead of the channels, so it is replaced here.)"""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        x64 = x.astype(np.float64)
        square_sum = np.zeros_like(x64)
        for c in range(x.shape[1]):
            square_sum[:, c] = np.sum(x64[:, max(0, c - lo):min(x.shape[1], c + hi + 1)] ** 2, axis=1)
        return ((x64 / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)


def main():
    photos = np.stack([np.asarray(Image.fromarray(getattr(data, p)()).resize((SIZE, SIZE), Image.BILINEAR))
                       for p in ("chelsea", "coffee")])
    x = caffe_input(photos.astype(np.float32) / 255)
    model = bvlc_googlenet(SEED)
    logits, *feats = ReferenceEvaluator(model, new_ops=[LRN]).run(None, {"data_0": x})
    out = {"photos": photos, "logits": logits}
    for (name, key), value in zip(FEATURES.items(), feats):
        nhwc = value.transpose(0, 2, 3, 1) if value.ndim == 4 else value
        nhwc = nhwc.reshape(nhwc.shape[0], -1) if key == "avgpool0" else nhwc
        out[f"shape_{key}"] = np.array(nhwc.shape)
        out[f"feat_{key}"] = sample("inception_v1", key, nhwc)
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    for node in plain.graph.node:
        if node.op_type == "LRN":           # the same graph with every LRN an identity
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]
    out["logits_without_lrn"] = ReferenceEvaluator(plain).run(["prob_0"], {"data_0": x})[0]
    path = os.path.join(ROOT, "tests", "data", "inception_v1_refs.npz")
    np.savez_compressed(path, **out)
    gap = np.abs(out["logits_without_lrn"] - logits).max() / np.abs(logits).max()
    between = np.abs(logits[0] - logits[1]).max() / np.abs(logits).max()
    print(path, os.path.getsize(path), f"bytes; LRN changes the logits by {gap:.3f}, the photos differ by "
          f"{between:.3f} (relative to the largest logit)")


if __name__ == "__main__":
    main()
