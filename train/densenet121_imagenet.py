"""DenseNet-121 on ImageNet-1k, Huang et al. 2017's schedule.

Run:      jaxcnn train --config train/densenet121_imagenet.py data_dir=/path/to/tensorflow_datasets
Expected: about 74.4% top-1 / 92.0% top-5 (torchvision's densenet121 weights, the authors' model).
Source:   Huang et al. 2017, "Densely Connected Convolutional Networks", sec. 4.2: SGD with Nesterov
          momentum 0.9 (no dampening), batch 256, 90 epochs, lr 0.1 divided by 10 at epochs 30 and 60,
          weight decay 1e-4 on every parameter (optim.sgd over getParameters(): decay="all"), the data
          augmentation of Gross & Wilber's fb.resnet.torch (scale and aspect ratio crops, flips, PCA lighting).
Differs:  fb.resnet.torch also jitters brightness, contrast and saturation; not here.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="densenet121", dataset="imagenet2012", image_size=224, batch_size=256, eval_batch_size=256,
        epochs=90, dtype="bfloat16",
        optimizer=OptimizerConfig(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, decay="all",
                                  schedule="step", decay_epochs=(30, 60), decay_factor=0.1),
        augment="inception", augment_options={"lighting_std": 0.1}, eval_transform="center",
        workdir="runs/densenet121_imagenet", checkpoint_every_steps=2000, log_every_steps=100)
