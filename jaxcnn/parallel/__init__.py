"""Parallelism: data parallel over a device mesh (jit) or pmap; the two-tower AlexNet over a ("data", "model")
mesh; multi-host initialisation."""

from jaxcnn.parallel.data_parallel import PMAP_AXIS, STRATEGIES, DataParallel
from jaxcnn.parallel.model_parallel import TowerParallel, from_tower_layout, to_tower_layout, tower_mesh
from jaxcnn.parallel.multihost import initialize

__all__ = ["PMAP_AXIS", "STRATEGIES", "DataParallel", "TowerParallel", "from_tower_layout", "initialize",
           "to_tower_layout", "tower_mesh"]
