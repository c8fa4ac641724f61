"""ResNet-18 on scikit-learn's handwritten digits (32 px, offline): the default run.

Run:     jaxcnn train --config train/digits_resnet18.py     (the same as plain `jaxcnn train`)
Reached: 99.1-99.7% test top-1 after 8 epochs (176 steps), about a minute on 2 CPU cores; the
         CPU fast paths round differently on different CPUs (AVX2, AVX-512, AMX), so runs on
         different machines end within that range rather than on one figure.
Source:  this repo; the data ship inside scikit-learn (1,437 train / 360 test images, 8x8 upsampled).
"""

from jaxcnn.training import TrainConfig


def config() -> TrainConfig:
    return TrainConfig()
