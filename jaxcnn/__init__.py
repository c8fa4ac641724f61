"""jaxcnn: the CNNs that defined ImageNet, as pure Flax modules.

Public API:
  create_model(name, **options) -> flax Module; apply(variables, x, train=False) -> (logits, features)
  list_models(family=None, task=None), model_info(name), model_options(name)
  load_pretrained(name, path, **options) -> (model, variables) from a torchvision state dict (also RobustBench-
    wrapped ones, and BVLC's GoogLeNet as ONNX for inception_v1)
  init_variables(model, resolution, seed=0) -> variables
  preprocess / deprocess: pixels in [0, 1] <-> normalized model input
  class_names() -> the 1000 ImageNet class names
  count_params(variables), count_flops(model, variables, resolution)
"""

import os

from jaxcnn.cpu import host_memory

if os.environ.get("JAXCNN_KEEP_HEAP") == "1":
    host_memory.keep_freed_memory()   # before XLA starts its threads: see jaxcnn/cpu/host_memory.py

from jaxcnn.imagenet import MEAN, STD, class_names, deprocess, preprocess
from jaxcnn.model_stats import count_flops, count_params, init_variables
from jaxcnn.models import create_model, list_models, model_info, model_options
from jaxcnn.weights import load_pretrained, read_state_dict, write_state_dict

__all__ = [
    "MEAN", "STD", "class_names", "count_flops", "count_params", "create_model", "deprocess", "init_variables",
    "list_models", "load_pretrained", "model_info", "model_options", "preprocess", "read_state_dict",
    "write_state_dict",
]
__version__ = "0.1.0"
