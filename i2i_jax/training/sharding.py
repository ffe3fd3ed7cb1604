"""Data parallelism: one mesh axis "data" over every device of every host.

The training state is replicated and each batch is split along its batch axis;
`jax.jit` then partitions the step and inserts the gradient all-reduces itself.
Every process runs the same program on its own devices: it can put data only
there, so global arrays are assembled from each process's part
(`jax.make_array_from_callback`, `jax.make_array_from_process_local_data`).
"""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from i2i_jax.errors import ConfigError

DATA_AXIS = "data"


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all devices, all hosts).

  The axis is `Auto`, not `jax.make_mesh`'s default `Explicit`: with Explicit
  axes shardings become part of array types and some ops (e.g. reshapes that
  merge a sharded dim) then demand explicit `out_sharding`s, whereas the steps
  here are plain `jax.jit` functions that rely on the compiler propagating the
  input shardings.

  The devices are ordered by process, so process i feeds block i of every global
  batch: with the pipeline's host shards (`pipeline.make_domain_dataset`) the
  global batch is the one a single process would read, whatever the process
  count. A 1-D mesh spans the whole all-reduce, so this order costs nothing.
  """
  devices = jax.devices() if devices is None else list(devices)
  devices = sorted(devices, key=lambda d: d.process_index)  # stable: keeps local order
  return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def per_host_batch_size(batch_size: int, field: str = "config.batch_size") -> int:
  """This host's share of a global batch, which must split evenly over all devices."""
  if batch_size % jax.device_count():
    raise ConfigError(f"{field}={batch_size} must be divisible by the number of devices "
                      f"({jax.device_count()})")
  return batch_size // jax.process_count()


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 0, ndim: int | None = None) -> NamedSharding:
  """Splits axis `batch_axis` over "data"; other axes are replicated.

  JD-BW feeds stacked batches (steps, B, H, W, C), hence `batch_axis=1` there.
  With `ndim` the spec names every axis, and a negative `batch_axis` counts
  from the end.
  """
  if ndim is None:
    if batch_axis < 0:
      raise ValueError(f"a negative batch_axis ({batch_axis}) needs ndim")
    return NamedSharding(mesh, PartitionSpec(*[None] * batch_axis, DATA_AXIS))
  if not -ndim <= batch_axis < ndim:
    raise ValueError(f"batch_axis {batch_axis} is out of range for {ndim} dims")
  spec = [None] * ndim
  spec[batch_axis] = DATA_AXIS
  return NamedSharding(mesh, PartitionSpec(*spec))


def replicate(tree, mesh: Mesh):
  """Copies a pytree onto every device of `mesh`, typed PRNG keys included.

  Multi-host: every process must pass the same values (e.g. parameters
  initialised from the same seed) and copies them onto its own devices. The
  result never aliases the input, so donating it to a jitted step cannot delete
  the caller's arrays.
  """
  target = replicated_sharding(mesh)

  def put(leaf):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(leaf)),
                                      impl=jax.random.key_impl(leaf))
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

  return jax.tree.map(put, tree)


def host_local(tree):
  """This process's own copy of a replicated pytree, on its first local device.

  Host-side work on a replicated state (sample grids, evaluation) runs on it:
  jitted functions mixing a global state with host numpy inputs would span
  every process, and the other processes are not calling them.
  """
  return jax.tree.map(lambda leaf: leaf.addressable_data(0), tree)


def shard_batch(tree, mesh: Mesh, batch_axis: int = 0):
  """Host-local numpy batches -> global arrays split along `batch_axis` over "data".

  Each process passes only its own part of the global batch (as a grain
  iterator on that host yields it); the global batch is the concatenation over
  processes. The local batch must divide evenly over this host's devices.
  """
  n_local = len(replicated_sharding(mesh).addressable_devices)

  def shard(path, leaf):
    x = np.asarray(leaf)
    if x.ndim <= batch_axis or x.shape[batch_axis] % n_local:
      raise ValueError(
          f"batch leaf {jax.tree_util.keystr(path) or '<root>'} with shape {x.shape} "
          f"cannot be split along axis {batch_axis} over {n_local} local devices; "
          f"make the per-host batch size a multiple of {n_local}")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, batch_axis, x.ndim), x)

  return jax.tree_util.tree_map_with_path(shard, tree)
