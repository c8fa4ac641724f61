"""Grad-CAM and guided Grad-CAM against Captum's on the same ResNet-18 and the same photos.

``tests/refs/make_gradcam_refs.py`` (run once with torch and Captum 0.9) stored Captum's ``LayerGradCam``
(layer3 and layer4, with and without ReLU), its nearest upsampling and ``GuidedGradCam`` (layer3) for
scikit-image's photos at 72 px and two targets per photo, on torchvision's ResNet-18 with the parity
suite's synthetic weights and batch-norm statistics calibrated on the photos. The same weights travel
here through a ``.safetensors`` file and ``jaxcnn.load_pretrained``. (``jaxcnn explain --method
gradcam`` is tested in tests/test_cli_inputopt.py.) Error measure: max |jaxcnn - Captum|
over max |Captum| per array, float32 rounding (<= 1e-4).
"""

import json
import os

import numpy as np
import pytest

import jaxcnn
from jaxcnn.inputopt import gradcam
from jaxcnn.inputopt import objectives as O
from tests.parity.synthetic import relative_error, synthetic_state_dict

REF = os.path.join(os.path.dirname(__file__), "data", "gradcam_refs.npz")
PARITY = os.path.join(os.path.dirname(__file__), "data", "parity", "resnet18.npz")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    ref = np.load(REF)
    shapes = json.loads(str(np.load(PARITY)["keys"]))        # torchvision's resnet18 state-dict layout
    state = synthetic_state_dict(shapes, "resnet18")
    state.update({k[len("bn/"):]: ref[k] for k in ref.files if k.startswith("bn/")})
    path = tmp_path_factory.mktemp("w") / "resnet18.safetensors"
    jaxcnn.write_state_dict(state, path)
    model, variables = jaxcnn.load_pretrained("resnet18", path)
    return model, variables, ref["photos"].astype(np.float32) / 255, ref


# layer4 (3x3 maps) compiles a second gradient program: with -m slow
@pytest.mark.parametrize("layer", ["layer3", pytest.param("layer4", marks=pytest.mark.slow)])
def test_grad_cam_matches_captum(resnet, layer):
    model, variables, x, ref = resnet
    for t in (0, 1):
        unit = O.class_logit(ref[f"target{t}"])
        raw = gradcam.grad_cam(model, variables, x, unit, layer, relu=False)
        assert raw.shape == ref[f"gradcam{t}_{layer}_raw"].shape
        assert relative_error(raw, ref[f"gradcam{t}_{layer}_raw"]) <= TOLERANCE
        assert relative_error(gradcam.grad_cam(model, variables, x, unit, layer), ref[f"gradcam{t}_{layer}_relu"]) \
            <= TOLERANCE
        # the maps are about the photos: each differs from the others' by far more than the tolerance
        want = ref[f"gradcam{t}_{layer}_raw"]
        assert min(relative_error(want[i], want[j]) for i in range(3) for j in range(3) if i != j) > 0.1


def test_nearest_upsampling_and_guided_grad_cam_match_captum(resnet):
    model, variables, x, ref = resnet
    for t in (0, 1):
        np.testing.assert_array_equal(gradcam.upsample(ref[f"gradcam{t}_layer3_relu"], (72, 72)),
                                      ref[f"upsampled{t}_layer3"])          # rows floor(i * 5 / 72)
        got = gradcam.guided_grad_cam(model, variables, x, O.class_logit(ref[f"target{t}"]), "layer3")
        assert got.shape == (3, 72, 72, 3)
        assert relative_error(got, ref[f"guided{t}_layer3"]) <= TOLERANCE
    bilinear = gradcam.upsample(ref["gradcam0_layer3_relu"], (72, 72), "bilinear")
    assert bilinear.shape == (3, 72, 72) and np.isclose(bilinear.mean(), ref["gradcam0_layer3_relu"].mean(), rtol=0.1)


def test_bad_layers_are_one_line_errors(resnet):
    model, variables, x, _ = resnet
    assert gradcam.default_layer(model, variables, x.shape) == "layer4"
    with pytest.raises(ValueError, match=r"needs a spatial \(B, h, w, C\) layer; pre_logits is \(3, 512\)"):
        gradcam.grad_cam(model, variables, x, O.class_logit(1), "pre_logits")
    with pytest.raises(ValueError, match="no layer 'layer9'; valid: layer1, layer1.0"):
        gradcam.grad_cam(model, variables, x, O.class_logit(1), "layer9")
    with pytest.raises(ValueError, match="unknown upsampling 'cubic'"):
        gradcam.upsample(np.zeros((1, 2, 2)), (4, 4), "cubic")
