"""``jaxcnn bench``: the throughput of a model's inference and training step on whatever JAX sees.

* ``timing``      repeats of a block of steps: the median and spread of images/s (standard library only,
                  shared with the PyTorch side)
* ``machine``     the CPU, its flags, the versions and the device a result records (standard library only)
* ``peak``        the device's peak FLOP/s, measured with a large matrix product of the run's dtype, cached
                  per device kind
* ``measure``     one model's inference and train step through the training path (placement, sharded
                  batch, donated state, the task's step, ``make_optimizer``); memory, out-of-memory retry
* ``pipeline``    the input pipeline alone (the training loop's stream), to tell step- from loader-bound
* ``torch_side``  torchvision's same model in a separate process (run as a file, it imports no jaxcnn)
* ``runner``      a run over models and modes, the PyTorch side and the pipeline: one result dict
* ``report``      the table, CSV and JSON
"""
