"""ResNet-50 on ImageNet-1k with torchvision's current recipe (the IMAGENET1K_V2 weights).

Run:      jaxcnn train --config train/resnet50_imagenet_torchvision.py data_dir=/path/to/tensorflow_datasets
Expected: 80.86% top-1 / 95.43% top-5 (torchvision's IMAGENET1K_V2 weights, evaluated as here: shorter
          side 232, centre crop 224); 76.13% for the classic recipe (train/resnet50_imagenet.py).
Source:   torchvision's classification references (references/classification/README.md, "ResNet-50 V2";
          V. Vryniotis, "How to Train State-Of-The-Art Models Using TorchVision's Latest Primitives", 2021):
          8 x 128 images a step, SGD momentum 0.9, lr 0.5, 5 linear warm-up epochs then cosine over 600
          epochs, weight decay 2e-5 (none on normalization layers: --norm-weight-decay 0), label smoothing
          0.1, mixup 0.2 and cutmix 1.0 (one of them on every batch), TrivialAugmentWide, random erasing 0.1,
          weight EMA (--model-ema: decay 0.99998 adjusted for the batch, updated every 32 steps), train crop
          176 px, evaluation at 224 px after a resize to 232.
Differs:  torchvision's warm-up starts at 0.01 x lr (here at 0); its EMA copies the weights during the
          warm-up epochs (here it averages from the start: with this decay the first epochs' share of the
          final average is negligible); it repeats each image 4 times per epoch with the repeated
          augmentation sampler (--ra-sampler), which jaxcnn's loader does not do; its warm-up and cosine
          change the learning rate once per epoch, here every step.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig
from jaxcnn.training.state import torchvision_ema_decay

BATCH = 1024        # torchvision: 8 GPUs x 128
EPOCHS = 600
EMA_EVERY = 32


def config() -> TrainConfig:
    return TrainConfig(
        model="resnet50", dataset="imagenet2012", image_size=176, eval_image_size=224, batch_size=BATCH,
        eval_batch_size=1024, epochs=EPOCHS, dtype="bfloat16", label_smoothing=0.1,
        optimizer=OptimizerConfig(learning_rate=0.5 * BATCH / 1024, momentum=0.9, weight_decay=2e-5,
                                  decay="kernels+biases", schedule="cosine", warmup_epochs=5),
        augment="inception", augment_options={"auto_augment": "ta_wide", "random_erase": 0.1},
        eval_transform="center", eval_options={"resize": 232},
        mixup_alpha=0.2, cutmix_alpha=1.0, mix_switch_prob=0.5, mix_prob=1.0,
        ema_decay=torchvision_ema_decay(0.99998, BATCH, EMA_EVERY, EPOCHS), ema_every=EMA_EVERY,
        workdir="runs/resnet50_imagenet_torchvision", checkpoint_every_steps=2000, log_every_steps=100)
