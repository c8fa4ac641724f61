"""The ``linear`` baseline: softmax regression on the pixels, trained by the same loop as the CNNs, against
scikit-learn's multinomial logistic regression fitted on the same normalized pixels."""

import numpy as np
import pytest

import jaxcnn
from jaxcnn.data.sources import digits
from jaxcnn.imagenet import preprocess
from jaxcnn.training import OptimizerConfig, TrainConfig, train

SIZE = 16


def test_linear_is_one_dense_layer_on_the_pixels():
    model = jaxcnn.create_model("linear", num_classes=10)
    variables = jaxcnn.init_variables(model, SIZE)
    assert jaxcnn.count_params(variables) == SIZE * SIZE * 3 * 10 + 10
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    logits, feats = model.apply(variables, x)
    want = x.reshape(2, -1) @ np.asarray(variables["params"]["fc"]["kernel"]) + np.asarray(
        variables["params"]["fc"]["bias"])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert feats["pixels"].shape == (2, SIZE * SIZE * 3)


def test_linear_on_digits_is_within_reach_of_scikit_learn(tmp_path):
    from sklearn.linear_model import LogisticRegression

    out = train(TrainConfig(model="linear", image_size=SIZE, batch_size=256, epochs=8, augment_shift=0,
                            optimizer=OptimizerConfig(learning_rate=0.1, weight_decay=5e-4, warmup_epochs=1),
                            workdir=str(tmp_path / "linear")), progress=False)
    train_src, test_src = digits("train", SIZE), digits("test", SIZE)
    pixels = lambda s: np.asarray(preprocess(np.asarray(s.images, np.float32) / 255.0)).reshape(len(s), -1)  # noqa
    reference = LogisticRegression(C=0.1, max_iter=2000).fit(pixels(train_src), train_src.labels)
    want = reference.score(pixels(test_src), test_src.labels)
    assert out["eval"]["top1"] == pytest.approx(want, abs=0.03) and out["eval"]["top1"] > 0.94
