"""The float32/bfloat16 style-transfer loop of ``inputopt_vs_torch.py`` (VGG-19 with random weights, content
astronaut, style coffee, Adam on the pixels), for the benchmarks that time or profile it alone."""

from __future__ import annotations

from typing import Callable


def style_run(size: int = 128, steps: int = 10, dtype: str = "float32") -> Callable[[], object]:
    """A no-argument function running the whole loop and returning its images (blocked on). Its step is
    traced on the first call, so lowering switches must be set then."""
    import jax

    import jaxcnn
    from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos
    from jaxcnn.inputopt.optimize import InputOptimizer
    from jaxcnn.inputopt.style import style_objectives

    photos = sample_photos()
    content = center_crop(resize_shorter(photos["astronaut"], size), size)
    style = center_crop(resize_shorter(photos["coffee"], size), size)
    variables = jaxcnn.init_variables(jaxcnn.create_model("vgg19"), 32)
    vgg = jaxcnn.create_model("vgg19", dtype=dtype)
    content_obj, style_obj = style_objectives(vgg, variables, content, [style])
    opt = InputOptimizer(vgg, variables, steps=steps, optimizer="adam", learning_rate=0.02, shard=False)
    objective = content_obj + 1e3 * style_obj
    return lambda: jax.block_until_ready(opt.run(objective, content[None]).images)
