"""Who writes and who waits in a multi-host job.

Every process runs the whole program, but files that all of them share (the config,
BalaGAN's modalities, metrics, samples) have one writer, process 0; a process that
reads such a file first waits at a barrier until it is written.
"""

import functools

import jax
import numpy as np
from absl import logging

from i2i_jax.training import sharding


def is_primary() -> bool:
  """Whether this process writes the shared files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Returns once every process has called `barrier`; at once in a 1-process job.

  It is a sum over the devices of the data mesh, in the mesh's order, so that the
  first barrier also opens the connections the training steps' collectives use. On
  CPU that matters: gloo gives a group of devices 30 s to meet at its first
  collective (then waits as long as it takes), and the processes reach their first
  step further apart than that when one of them compiles it while another reads it
  from the compile cache (whose keys differ by process on CPU).
  """
  if jax.process_count() == 1:
    return
  logging.info("Waiting for every process at %r.", name)
  mesh = sharding.make_data_mesh()
  ones = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh),
                                                np.ones(jax.local_device_count(), np.int32))
  _sum_on(sharding.replicated_sharding(mesh))(ones).block_until_ready()


@functools.cache
def _sum_on(out_sharding):
  return jax.jit(lambda x: x.sum(), out_shardings=out_sharding)
