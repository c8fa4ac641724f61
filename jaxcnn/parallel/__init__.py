"""Parallelism: the placement protocol and its factory; data parallel over a device mesh (jit) or pmap; the
two-tower AlexNet over a ("data", "model") mesh; multi-host initialisation."""

from jaxcnn.parallel.data_parallel import PMAP_AXIS, DataParallel
from jaxcnn.parallel.data_parallel import STRATEGIES as DATA_STRATEGIES
from jaxcnn.parallel.model_parallel import TowerParallel, from_tower_layout, to_tower_layout, tower_mesh
from jaxcnn.parallel.multihost import initialize
from jaxcnn.parallel.placement import STRATEGIES, Placement, placement_for

__all__ = ["DATA_STRATEGIES", "PMAP_AXIS", "STRATEGIES", "DataParallel", "Placement", "TowerParallel",
           "from_tower_layout", "initialize", "placement_for", "to_tower_layout", "tower_mesh"]
