"""Parallelism: data parallel over a device mesh (jit) or pmap; multi-host initialisation."""

from jaxcnn.parallel.data_parallel import PMAP_AXIS, STRATEGIES, DataParallel
from jaxcnn.parallel.multihost import initialize

__all__ = ["PMAP_AXIS", "STRATEGIES", "DataParallel", "initialize"]
