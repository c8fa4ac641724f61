"""Model families; importing this package registers every model."""

from jaxcnn.models import alexnet, densenet, googlenet, inception_v3, resnet, squeezenet, vgg  # noqa: F401
from jaxcnn.models import fcn  # noqa: F401  (after resnet and vgg, whose backbones it uses)
