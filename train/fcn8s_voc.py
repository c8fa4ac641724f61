"""FCN-8s (VGG-16 backbone) on PASCAL VOC 2012 segmentation, initialised from an ImageNet VGG-16.

Run:      jaxcnn train --config train/fcn8s_voc.py data_dir=/path/to/VOCdevkit/VOC2012 \
              backbone_weights=/path/to/vgg16-397923af.pth
Expected: about 62-65% mean IoU on VOC 2012 val (Long et al. 2015 report 62.2% on VOC 2012 test,
          trained on the 11k SBD images; with VOC's 1,464 train images alone expect less). Not yet run here.
Source:   Long, Shelhamer & Darrell 2015, sec. 4.3: SGD momentum 0.9, weight decay 5e-4, batch 20,
          dropout 0.5 on fc6/fc7, backbone (and fc6/fc7 as convolutions) from the VGG-16 classifier
          (jaxcnn.models.fcn.fcn_from_vgg16), score layers zero-initialised, per-pixel softmax loss
          ignoring VOC's 255 borders. The paper sums the loss over pixels with lr 1e-4; jaxcnn averages it
          over the non-ignored pixels, so the learning rate is scaled up (to torchvision's 0.01 scale).
Data:     `voc2012` (jaxcnn.data.sources; masks 0..20, 255 = border). Training examples need the input
          pipeline's segmentation policy (random scale, 320 px crop, flip: jaxcnn.data.transforms);
          evaluation pads whole images (padding pixels are ignored).
"""

from jaxcnn.training import OptimizerConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="fcn8s", model_options={"dropout_rate": 0.5}, dataset="voc2012", image_size=320,
        batch_size=20, eval_batch_size=8, epochs=50,
        optimizer=OptimizerConfig(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
        augment="segmentation", eval_transform="pad", workdir="runs/fcn8s_voc", checkpoint_every_steps=500,
        log_every_steps=20)
