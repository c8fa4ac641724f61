"""Recipe for subprocess tests: a tiny FCN on the generated 32 px shapes data (the ``shapes`` source).

The test suite's in-process run (tests/test_segmentation.py) reaches about 0.74 mean IoU in 480 steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxcnn.training import OptimizerConfig, TrainConfig  # noqa: E402
from tests.tiny_model import register_segmentation  # noqa: E402

register_segmentation()


def config():
    return TrainConfig(model="tiny_fcn", dataset="shapes", image_size=32, batch_size=32, eval_batch_size=48,
                       epochs=30, augment_flip=True, augment_shift=0, checkpoint_every_steps=64, log_every_steps=16,
                       optimizer=OptimizerConfig(learning_rate=0.2, momentum=0.9, weight_decay=1e-4,
                                                 schedule="cosine", warmup_epochs=0.5),
                       workdir="runs/tiny_shapes")
