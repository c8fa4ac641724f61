"""Model families; importing this package registers every model and gives the registry's API."""

from jaxcnn.models import alexnet, densenet, googlenet, inception_v1, inception_v3, linear  # noqa: F401
from jaxcnn.models import resnet, squeezenet, vgg  # noqa: F401
from jaxcnn.models import fcn  # noqa: F401  (after resnet and vgg, whose backbones it uses)
from jaxcnn.models.registry import ModelInfo, create_model, list_models, model_info, model_options

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "model_options"]
