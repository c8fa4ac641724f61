"""AlexNet (torchvision's single tower) on ImageNet-1k, Krizhevsky et al. 2012's schedule.

Run:      jaxcnn train --config train/alexnet_imagenet.py data_dir=/path/to/tensorflow_datasets
Expected: about 56.5% top-1 / 79.1% top-5 (torchvision's alexnet weights); the paper's single
          net reached 59.3% top-1 (40.7% error) with 10-crop testing.
Source:   Krizhevsky, Sutskever, Hinton 2012, sec. 5: SGD batch 128, momentum 0.9, weight decay
          5e-4, lr 0.01 divided by 10 when the validation error stopped improving (3 times, ~90 epochs).
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="alexnet", model_options={"dropout_rate": 0.5}, dataset="imagenet2012", image_size=224,
        batch_size=128, eval_batch_size=256, epochs=90,
        optimizer=OptimizerConfig(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, schedule="plateau",
                                  decay_factor=0.1, plateau_patience=1),
        augment="alexnet", eval_transform="center", workdir="runs/alexnet_imagenet", checkpoint_every_steps=2000,
        log_every_steps=100)
