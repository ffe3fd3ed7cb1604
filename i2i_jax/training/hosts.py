"""Who writes and who waits in a multi-host job.

Every process runs the whole program, but files that all of them share (the config,
BalaGAN's modalities, metrics, samples) have one writer, process 0; a process that
reads such a file first waits at a barrier until it is written.
"""

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from i2i_jax.training import sharding


def is_primary() -> bool:
  """Whether this process writes the shared files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Returns once every process has called `barrier(name)`; at once in a 1-process job."""
  if jax.process_count() > 1:
    logging.info("Waiting for every process at %r.", name)
    multihost_utils.sync_global_devices(name)


def connect() -> None:
  """Runs one collective on each group of devices the job uses, right after joining.

  On CPU that matters: gloo gives a group of devices 30 s to meet at its first
  collective (then waits as long as it takes), and later the processes drift further
  apart than that: process 0 reads a compiled step from the compile cache while the
  others compile it (the cache keys differ by process on CPU). The groups are one
  device per process (barriers, orbax's included) and the data mesh (the steps).
  """
  if jax.process_count() == 1:
    return
  barrier("joined")
  mesh = sharding.make_data_mesh()
  ones = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh),
                                                np.ones(jax.local_device_count(), np.int32))
  jax.jit(lambda x: x.sum(), out_shardings=sharding.replicated_sharding(mesh))(
      ones).block_until_ready()
