"""One process of the multi-host test: two train steps of the tiny CNN on real digits.

usage: multihost_worker.py PORT NUM_PROCESSES PROCESS_ID DEVICES_PER_PROCESS OUT.npz
"""

import os
import sys

port, nproc, pid, ndev, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxcnn.parallel import DataParallel, initialize  # noqa: E402

if nproc > 1:
    initialize(f"127.0.0.1:{port}", nproc, pid)

from jaxcnn.data.loader import train_batches  # noqa: E402
from jaxcnn.data.sources import digits  # noqa: E402
from jaxcnn.training import OptimizerConfig, create_train_state, make_optimizer, make_train_step  # noqa: E402
from tests.tiny_model import TinyCNN  # noqa: E402

assert jax.device_count() == nproc * ndev and jax.process_count() == nproc
tx = make_optimizer(OptimizerConfig(learning_rate=0.1, weight_decay=5e-4), 10, 100)
model = TinyCNN()
dp = DataParallel("jit")
state = dp.put_state(create_train_state(model, tx, (16, 16, 3), seed=0))
step = dp.compile_train_step(make_train_step(model, tx))
batches = train_batches(digits("train", size=16), global_batch=32, seed=0, process_index=jax.process_index(),
                        process_count=jax.process_count())
losses = []
for _ in range(2):
    state, metrics = step(state, dp.put_batch(next(batches)))
    losses.append(float(metrics["loss"]))
host = dp.host_state(state)
if jax.process_index() == 0:
    leaves = jax.tree_util.tree_leaves((host.params, host.batch_stats))
    np.savez(out, losses=np.array(losses), **{f"leaf{i}": a for i, a in enumerate(leaves)})
