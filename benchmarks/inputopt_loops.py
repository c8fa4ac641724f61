"""The float32/bfloat16 style-transfer, DeepDream and PGD loops of ``benchmarks.inputopt_vs_torch``, for the
benchmarks that time or profile one alone: style transfer on VGG-19 (random weights, content astronaut, style coffee,
Adam on the pixels), DeepDream on GoogLeNet (inception4c, normalised-gradient ascent, jitter 16), and
PGD on ResNet-18 (batch 8, random images)."""

from __future__ import annotations

from typing import Callable


def _photos(size: int, *names: str) -> list:
    from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos

    photos = sample_photos()
    return [center_crop(resize_shorter(photos[name], size), size) for name in names]


def style_run(size: int = 128, steps: int = 10, dtype: str = "float32") -> Callable[[], object]:
    """A no-argument function running the whole loop and returning its images (blocked on). Its step is
    traced on the first call, so lowering switches must be set then."""
    import jax

    import jaxcnn
    from jaxcnn.inputopt.optimize import InputOptimizer
    from jaxcnn.inputopt.style import style_objectives

    content, style = _photos(size, "astronaut", "coffee")
    variables = jaxcnn.init_variables(jaxcnn.create_model("vgg19"), 32)
    vgg = jaxcnn.create_model("vgg19", dtype=dtype)
    content_obj, style_obj = style_objectives(vgg, variables, content, [style])
    opt = InputOptimizer(vgg, variables, steps=steps, optimizer="adam", learning_rate=0.02, shard=False)
    objective = content_obj + 1e3 * style_obj
    return lambda: jax.block_until_ready(opt.run(objective, content[None]).images)


def dream_run(size: int = 128, steps: int = 10, dtype: str = "float32") -> Callable[[], object]:
    """Like ``style_run``, for DeepDream."""
    import jax

    import jaxcnn
    from jaxcnn.inputopt import objectives as O
    from jaxcnn.inputopt.optimize import InputOptimizer
    from jaxcnn.inputopt.transforms import Jitter

    (content,) = _photos(size, "astronaut")
    variables = jaxcnn.init_variables(jaxcnn.create_model("googlenet", aux_logits=False), 64)
    net = jaxcnn.create_model("googlenet", aux_logits=False, dtype=dtype)
    opt = InputOptimizer(net, variables, steps=steps, optimizer="normalized_sgd", learning_rate=0.01,
                         transforms=(Jitter(16),), shard=False)
    return lambda: jax.block_until_ready(opt.run(O.layer_l2("inception4c"), content[None]).images)


def pgd_run(size: int = 128, steps: int = 10, dtype: str = "float32", batch: int = 8) -> Callable[[], object]:
    """Like ``style_run``, for L-inf PGD on ResNet-18 (eps 4/255, random start; random images and labels)."""
    import jax
    import numpy as np

    import jaxcnn
    from jaxcnn.inputopt.attacks import pgd

    variables = jaxcnn.init_variables(jaxcnn.create_model("resnet18"), 64)
    net = jaxcnn.create_model("resnet18", dtype=dtype)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(batch, size, size, 3)).astype(np.float32), rng.integers(0, 1000, batch)
    return lambda: jax.block_until_ready(pgd(net, variables, x, y, eps=4 / 255, steps=steps).images)


LOOPS = {"style": style_run, "dream": dream_run, "pgd": pgd_run}
