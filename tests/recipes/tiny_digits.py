"""Recipe for the subprocess tests: a tiny CNN on 16 px digits, checkpoints every 4 steps."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxcnn.training import OptimizerConfig, TrainConfig  # noqa: E402
from tests.tiny_model import register  # noqa: E402

register()


def config():
    return TrainConfig(model="tiny_cnn", model_options={"dropout_rate": 0.1}, image_size=16, batch_size=32,
                       eval_batch_size=64, epochs=1, checkpoint_every_steps=4, log_every_steps=4,
                       optimizer=OptimizerConfig(learning_rate=0.05, weight_decay=5e-4, schedule="cosine"),
                       workdir="runs/tiny")
