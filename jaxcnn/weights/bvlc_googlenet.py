"""BVLC's GoogLeNet weights (Caffe's blob names) -> ``inception_v1``'s state-dict keys.

The weights: BVLC's ``bvlc_googlenet.caffemodel`` (trained by Sergio Guadarrama with Caffe, released by
BVLC "for unrestricted use"), in the form the ONNX model zoo publishes it, converted Caffe -> Caffe2 ->
ONNX: ``vision/classification/inception_and_googlenet/googlenet/model/googlenet-{3,6,7,8,9,12}.onnx`` of
github.com/onnx/models (licence: BSD-3-Clause; the zoo's card reports 68.7% top-1 and 88.9% top-5 with
center crops). Read with ``jaxcnn.weights.onnx_io`` (``pip install 'jaxcnn[onnx]'``):
``jaxcnn.load_pretrained("inception_v1", "googlenet-12.onnx")``. The zoo's file has no auxiliary heads
(``load_pretrained`` sets ``aux_logits=False``); a Caffe train_val model's ``loss1``/``loss2`` heads map
onto them when present.

Blob names are Caffe2's: the Caffe layer name with ``_w_0``/``_b_0`` (``_w``/``_b`` are accepted too), e.g.
``inception_4a/5x5_reduce_w_0`` -> ``mixed4a.5x5_bottleneck.weight``.

The input those weights expect is Caffe's: BGR, 0..255, minus the mean (BVLC trained with B 104, G 117,
R 123; the zoo's card subtracts 103.939, 116.779, 123.68, which differs by under 0.4/255). jaxcnn's
``inception_v1`` takes ImageNet-normalized RGB like every model and converts it with
``transform_input=True`` (``load_pretrained`` sets it).
"""

from __future__ import annotations

import re

_STEM = {"conv1/7x7_s2": "conv2d0", "conv2/3x3_reduce": "conv2d1", "conv2/3x3": "conv2d2",
         "loss3/classifier": "softmax2",
         "loss1/conv": "head0_bottleneck", "loss1/fc": "nn0", "loss1/classifier": "softmax0",
         "loss2/conv": "head1_bottleneck", "loss2/fc": "nn1", "loss2/classifier": "softmax1"}
_BRANCH = {"1x1": "1x1", "3x3_reduce": "3x3_bottleneck", "3x3": "3x3", "5x5_reduce": "5x5_bottleneck",
           "5x5": "5x5", "pool_proj": "pool_reduce"}
_BLOB = re.compile(r"^(?P<layer>.+)_(?P<kind>[wb])(?:_0)?$")
_INCEPTION = re.compile(r"^inception_(?P<stage>[345][a-e])/(?P<branch>[a-z0-9_]+)$")


def to_jaxcnn_key(name: str) -> str:
    """A Caffe2 blob name of BVLC's GoogLeNet -> the jaxcnn key; any other name is returned as it is
    (so jaxcnn's own exports of ``inception_v1`` load too, and a stray name is reported as unexpected)."""
    m = _BLOB.match(name)
    if not m:
        return name
    layer, suffix = m["layer"], "weight" if m["kind"] == "w" else "bias"
    if layer in _STEM:
        return f"{_STEM[layer]}.{suffix}"
    inc = _INCEPTION.match(layer)
    if inc and inc["branch"] in _BRANCH:
        return f"mixed{inc['stage']}.{_BRANCH[inc['branch']]}.{suffix}"
    return name
