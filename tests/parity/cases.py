"""What each parity reference holds: torchvision builder, input sizes, compared features.

``features`` maps a jaxcnn feature key to the torchvision module path whose
output (hooked, NCHW -> NHWC; (N, C, 1, 1) -> (N, C)) it must equal.
``FAST`` are the cases the default test run checks (one or two per family);
``pytest -m slow`` checks every case. Pure Python: shared with make_refs.py.
"""

from __future__ import annotations

_VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512,
              "M"],
}


def _vgg_features(cfg: str, bn: bool) -> dict[str, str]:
    paths, idx, block, conv = {}, 0, 1, 1
    for v in _VGG_CFGS[cfg]:
        if v == "M":
            paths[f"pool{block}"] = f"features.{idx}"
            idx, block, conv = idx + 1, block + 1, 1
        else:
            idx += 3 if bn else 2
            paths[f"conv{block}_{conv}"] = f"features.{idx - 1}"  # the ReLU's output
            conv += 1
    last = [k for k in paths if k.startswith("conv5_")][-1]
    keep = ["conv1_1", "pool1", "conv3_1", last, "pool5"]
    return {**{k: paths[k] for k in keep}, "fc6": "classifier.1", "fc7": "classifier.4"}


def _resnet_features(prefix: str = "") -> dict[str, str]:
    return {"stem": f"{prefix}relu", "stem_pool": f"{prefix}maxpool", "layer1.0": f"{prefix}layer1.0",
            "layer2": f"{prefix}layer2", "layer4": f"{prefix}layer4"}


CASES: dict[str, dict] = {}

for _n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2"):
    CASES[_n] = dict(tv=_n, kwargs={}, sizes=(64, 97), features={**_resnet_features(), "pre_logits": "avgpool"})

for _n in ("fcn_resnet50", "fcn_resnet101"):
    CASES[_n] = dict(tv=_n, kwargs=dict(weights_backbone=None, aux_loss=True, num_classes=21), sizes=(64, 97),
                     features={"layer3": "backbone.layer3", "layer4": "backbone.layer4", "head": "classifier",
                               "aux_head": "aux_classifier"}, options=dict(num_classes=21))

CASES["alexnet"] = dict(tv="alexnet", kwargs={}, sizes=(64, 97),
                        features={"conv1": "features.1", "pool1": "features.2", "conv2": "features.4",
                                  "conv5": "features.11", "pool5": "features.12", "fc6": "classifier.2",
                                  "fc7": "classifier.5"})

for _n in ("vgg11", "vgg13", "vgg16", "vgg19"):
    for _bn in (False, True):
        _name = _n + ("_bn" if _bn else "")
        CASES[_name] = dict(tv=_name, kwargs={}, sizes=(32, 57), features=_vgg_features(_n, _bn))

CASES["googlenet"] = dict(
    tv="googlenet", kwargs=dict(aux_logits=True, transform_input=True, init_weights=False), sizes=(64, 97),
    features={k: k for k in ("conv1", "maxpool1", "conv3", "inception3a", "inception4a", "inception4e",
                             "inception5b")} | {"pre_logits": "avgpool"})

CASES["inception_v3"] = dict(
    tv="inception_v3", kwargs=dict(aux_logits=True, transform_input=True, init_weights=False), sizes=(75, 107),
    features={k: k for k in ("Conv2d_1a_3x3", "maxpool1", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_6a", "Mixed_6e",
                             "Mixed_7c")} | {"pre_logits": "avgpool"})

CASES["squeezenet1_0"] = dict(tv="squeezenet1_0", kwargs={}, sizes=(64, 97),
                              features={"conv1": "features.1", "maxpool1": "features.2", "fire2": "features.3",
                                        "fire9": "features.12", "conv10": "classifier.2"})
CASES["squeezenet1_1"] = dict(tv="squeezenet1_1", kwargs={}, sizes=(64, 97),
                              features={"conv1": "features.1", "maxpool1": "features.2", "fire2": "features.3",
                                        "fire9": "features.12", "conv10": "classifier.2"})

for _n in ("densenet121", "densenet161", "densenet169", "densenet201"):
    CASES[_n] = dict(tv=_n, kwargs={}, sizes=(64, 97),
                     features={"stem": "features.relu0", "pool0": "features.pool0",
                               "denseblock1": "features.denseblock1", "transition1": "features.transition1",
                               "denseblock4": "features.denseblock4", "norm5": "features.norm5"})

FAST = ["resnet18", "resnet50", "fcn_resnet50", "alexnet", "vgg11_bn", "googlenet", "inception_v3",
        "squeezenet1_0", "squeezenet1_1", "densenet121"]
