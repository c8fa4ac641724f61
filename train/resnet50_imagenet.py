"""ResNet-50 on ImageNet-1k, He et al. 2015's recipe with the linear scaling rule.

Run:      jaxcnn train --config train/resnet50_imagenet.py data_dir=/path/to/tensorflow_datasets
Expected: about 76.1% top-1 / 92.9% top-5 (torchvision's IMAGENET1K_V1 weights, same recipe).
Source:   He et al. 2015, sec. 3.4 and Goyal et al. 2017: SGD momentum 0.9, lr 0.1 x batch/256,
          weight decay 1e-4 (not on biases/BN), 90 epochs, lr x0.1 at epochs 30, 60, 80,
          5 warm-up epochs for large batches.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig

BATCH = 1024


def config() -> TrainConfig:
    return TrainConfig(
        model="resnet50", dataset="imagenet2012", image_size=224, batch_size=BATCH, eval_batch_size=1024,
        epochs=90, dtype="bfloat16",
        optimizer=OptimizerConfig(learning_rate=0.1 * BATCH / 256, momentum=0.9, weight_decay=1e-4,
                                  schedule="step", decay_epochs=(30, 60, 80), decay_factor=0.1, warmup_epochs=5),
        augment="inception", eval_transform="center", workdir="runs/resnet50_imagenet", checkpoint_every_steps=1000,
        log_every_steps=100)
