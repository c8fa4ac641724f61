"""VGG-16 on ImageNet-1k, Simonyan & Zisserman 2014's schedule.

Run:      jaxcnn train --config train/vgg16_imagenet.py data_dir=/path/to/tensorflow_datasets
Expected: about 71.6% top-1 / 90.4% top-5 (torchvision's vgg16 weights).
Source:   Simonyan & Zisserman 2014, sec. 3.1: batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5
          on fc6/fc7, lr 0.01 divided by 10 when the validation accuracy stopped improving
          (3 times, 74 epochs).
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="vgg16", model_options={"dropout_rate": 0.5}, dataset="imagenet2012", image_size=224,
        batch_size=256, eval_batch_size=256, epochs=74,
        optimizer=OptimizerConfig(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, schedule="plateau",
                                  decay_factor=0.1, plateau_patience=1),
        augment="vgg_scale", eval_transform="center", workdir="runs/vgg16_imagenet", checkpoint_every_steps=2000,
        log_every_steps=100)
