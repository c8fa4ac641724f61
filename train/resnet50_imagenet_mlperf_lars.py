"""ResNet-50 v1.5 on ImageNet-1k in MLPerf Training's time-to-accuracy setting, with LARS.

Run:      jaxcnn train --config train/resnet50_imagenet_mlperf_lars.py data_dir=/path/to/tensorflow_datasets
Expected: 75.9% top-1 (MLPerf's quality target for this benchmark, reached in about 35 epochs).
Source:   MLPerf Training's ResNet-50 rules (LARS: polynomial decay of power 2 to 1e-4 after a linear
          warm-up, eta 0.001, epsilon 0, batch norm and biases excluded from decay and adaptation, label
          smoothing 0.1) with the hyperparameters of NVIDIA's 8-GPU submission
          (mlcommons/training_results_v2.0, NVIDIA/benchmarks/resnet/implementations/mxnet/config_DGXA100.sh):
          global batch 3264 (8 x 408), base learning rate 10.5, 2 warm-up epochs, weight decay 5e-5,
          momentum 0.9, 37 epochs.
Differs:  MLPerf evaluates every few epochs and stops at the target; this recipe runs the 37 epochs and
          evaluates after each.
"""

from jaxcnn.training import OptimizerConfig, TrainConfig

BATCH = 3264


def config() -> TrainConfig:
    return TrainConfig(
        model="resnet50", dataset="imagenet2012", image_size=224, batch_size=BATCH, eval_batch_size=1024,
        epochs=37, dtype="bfloat16", label_smoothing=0.1,
        optimizer=OptimizerConfig(name="lars", learning_rate=10.5, momentum=0.9, weight_decay=5e-5,
                                  trust_coefficient=0.001, eps=0.0, decay="kernels", schedule="poly",
                                  warmup_epochs=2, end_learning_rate=1e-4, poly_power=2.0),
        augment="inception", eval_transform="center",
        workdir="runs/resnet50_imagenet_mlperf_lars", checkpoint_every_steps=1000, log_every_steps=50)
