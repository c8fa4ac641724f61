"""Registry, options, ImageNet conventions."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn

EXPECTED = {
    "alexnet", "alexnet_twotower", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
    "vgg19_bn", "googlenet", "inception_v1", "inception_v3", "resnet18", "resnet34", "resnet50", "resnet101",
    "resnet152", "fcn32s", "fcn16s", "fcn8s", "fcn_resnet50", "fcn_resnet101", "squeezenet1_0", "squeezenet1_1",
    "densenet121", "densenet161",
}


def test_every_model_of_the_zoo_is_registered():
    assert EXPECTED <= set(jaxcnn.list_models())
    assert set(jaxcnn.list_models(task="segmentation")) >= {"fcn32s", "fcn16s", "fcn8s", "fcn_resnet50"}
    assert "resnet50" in jaxcnn.list_models(family="resnet") and "vgg16" not in jaxcnn.list_models(family="resnet")


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'; valid models: .*resnet50"):
        jaxcnn.create_model("resnet5")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) classes; valid options: .*num_classes"):
        jaxcnn.create_model("resnet18", classes=10)


def test_options_are_applied_and_checked():
    m = jaxcnn.create_model("resnet18", num_classes=7, dtype="bfloat16")
    assert m.num_classes == 7 and m.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        jaxcnn.create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="dtype='float8' is not one of"):
        jaxcnn.create_model("resnet18", dtype="float8")
    assert "stage_sizes" not in jaxcnn.model_options("resnet50")  # fixed by the variant's table row


def test_preprocess_deprocess_and_class_names():
    pixels = np.random.default_rng(0).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    x = jaxcnn.preprocess(pixels)
    np.testing.assert_allclose(np.asarray(x[0, 0, 0]), (pixels[0, 0, 0] - np.array(jaxcnn.MEAN)) /
                               np.array(jaxcnn.STD), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jaxcnn.deprocess(x)), pixels, atol=1e-6)
    names = jaxcnn.class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
