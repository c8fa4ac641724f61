"""Input optimisation: gradients with respect to the image, on the same models as training.

problem      what every method shares: checks, feature shapes, batch sharding, the compiled clean
             forward, fixed-weight transforms, the ascent loop (``Ascent``: the CPU loop rule)
objectives   per-image scores read from ``features`` (add, subtract, scale)
param        pixels or a decorrelated-colour Fourier space
transforms   jitter / scale / rotate applied at each step
optimize     ``InputOptimizer``: N optimiser steps on the image
dream        class visualization, DeepDream, feature inversion
style        Gatys et al.'s style transfer
attacks      FGSM, BIM, PGD, Carlini-Wagner, DeepFool; patch: the adversarial patch
fooling      fooling images (gradient, evolution); robustness: accuracy against the budget
apgd, fab,   AutoAttack's attacks (APGD-CE/-DLR/-T, FAB-T, Square) and its standard evaluation
square,      (``autoattack.autoattack``); passes: running attack passes on the still-robust
autoattack   examples in fixed-size padded batches, first success per example
attribution  saliency, deconvnet, guided backprop, IG, SmoothGrad, occlusion; inspection: units, filters
"""

from jaxcnn.inputopt import objectives
from jaxcnn.inputopt.objectives import Objective
from jaxcnn.inputopt.optimize import InputOptimizer, Result, evaluate
from jaxcnn.inputopt.param import Fourier, Pixels
from jaxcnn.inputopt.transforms import Jitter, RandomRotate, RandomScale, standard_transforms

__all__ = ["Fourier", "InputOptimizer", "Jitter", "Objective", "Pixels", "RandomRotate", "RandomScale", "Result",
           "evaluate", "objectives", "standard_transforms"]
