"""Training: state, optimizer, steps, task objects, checkpoints, the loop and evaluation."""

from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.config import TrainConfig, load_config
from jaxcnn.training.loop import TrainingDiverged, train
from jaxcnn.training.optimizer import OptimizerConfig, PlateauControl, make_optimizer
from jaxcnn.training.state import TrainState, create_train_state
from jaxcnn.training.steps import cross_entropy, make_eval_step, make_train_step, topk_correct
from jaxcnn.training.tasks import Classification, Segmentation, task_for

__all__ = ["Checkpointer", "Classification", "OptimizerConfig", "PlateauControl", "Segmentation", "TrainConfig",
           "TrainState", "TrainingDiverged", "create_train_state", "cross_entropy", "load_config", "make_eval_step",
           "make_optimizer", "make_train_step", "task_for", "topk_correct", "train"]
