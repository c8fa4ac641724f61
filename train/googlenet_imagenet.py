"""GoogLeNet (Inception v1) on ImageNet-1k with its two auxiliary classifiers (loss weight 0.3 each).

Run:      jaxcnn train --config train/googlenet_imagenet.py data_dir=/path/to/tensorflow_datasets
Expected: about 69.8% top-1 / 89.5% top-5 (torchvision's googlenet weights).
Source:   Szegedy et al. 2014, sec. 6: asynchronous SGD, momentum 0.9, lr decreased by 4% every
          8 epochs, auxiliary losses weighted 0.3. Here: synchronous SGD, batch 256, lr 0.1 with the
          4%-per-8-epochs step schedule expressed as step decays, label smoothing off.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="googlenet", model_options={"aux_logits": True}, dataset="imagenet2012", image_size=224,
        batch_size=256, eval_batch_size=256, epochs=120,
        optimizer=OptimizerConfig(learning_rate=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
                                  decay_epochs=tuple(range(8, 120, 8)), decay_factor=0.96, warmup_epochs=1),
        augment="inception", eval_transform="center", workdir="runs/googlenet_imagenet", checkpoint_every_steps=2000,
        log_every_steps=100)
