"""Input optimisation: gradients with respect to the image, on the same models as training.

objectives   per-image scores read from ``features`` (add, subtract, scale)
param        pixels or a decorrelated-colour Fourier space
transforms   jitter / scale / rotate applied at each step
optimize     ``InputOptimizer``: the whole ascent as one compiled ``lax.scan``
dream        class visualization, DeepDream, feature inversion
style        Gatys et al.'s style transfer
"""

from jaxcnn.inputopt import objectives
from jaxcnn.inputopt.objectives import Objective
from jaxcnn.inputopt.optimize import InputOptimizer, Result, evaluate
from jaxcnn.inputopt.param import Fourier, Pixels
from jaxcnn.inputopt.transforms import Jitter, RandomRotate, RandomScale, standard_transforms

__all__ = ["Fourier", "InputOptimizer", "Jitter", "Objective", "Pixels", "RandomRotate", "RandomScale", "Result",
           "evaluate", "objectives", "standard_transforms"]
