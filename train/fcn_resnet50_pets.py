"""FCN-ResNet50 on Oxford-IIIT Pets (pet / background), initialised from an ImageNet ResNet-50.

Run:      jaxcnn train --config train/fcn_resnet50_pets.py data_dir=/path/to/tensorflow_datasets \
              backbone_weights=/path/to/resnet50-0676ba61.pth
Expected: not yet measured here (2 classes: background, pet; the trimap's border is ignored).
Source:   torchvision's references/segmentation recipe for fcn_resnet50: SGD momentum 0.9, lr 0.02 at
          batch 32 (8 GPUs x 4), weight decay 1e-4, 30 epochs, auxiliary head on layer3 with loss
          weight 0.5, random resize 0.5-2.0, 480 px crops, flip (its "poly" schedule is replaced by
          cosine here). Backbone (conv1 .. layer4) from the ResNet-50 classifier, heads freshly initialised.
Data:     tfds `oxford_iiit_pet` (jaxcnn.data.tfds_sources: trimap -> 0 background, 1 pet, 255 border).
          Pet images are smaller than VOC's, so crops are 320 px; needs the segmentation transform policy.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="fcn_resnet50", model_options={"aux_loss": True}, dataset="oxford_iiit_pet", image_size=320,
        batch_size=32, eval_batch_size=32, epochs=30, dtype="bfloat16",
        optimizer=OptimizerConfig(learning_rate=0.02, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
        augment="segmentation", eval_transform="pad", workdir="runs/fcn_resnet50_pets", checkpoint_every_steps=500,
        log_every_steps=20)
