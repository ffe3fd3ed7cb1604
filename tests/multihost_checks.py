"""What a multi-host job relies on, checked inside one of its processes (run by
test_multihost.py as 2 processes of 2 CPU devices); prints OK.

Each process reads its own shard of a domain; together the shards must make the
global batch one process reads, a jitted step must reduce over all of it (a
softmax over the global batch, as JD-BW's batch weights), the state must be
replicated, checkpointed and restored on every device, and files written by
process 0 must be readable by all after a barrier.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from i2i_jax.data import domains, pipeline
from i2i_jax.training import hosts, runtime, sharding
from i2i_jax.training.checkpoint import Checkpointer

GLOBAL_BATCH = 8


def _domain():
  cfg = domains.default_domain_config()
  cfg.update(kind="embedded_mnist", split="test", augment="sr_mnist", channels=1)
  return cfg


def _loss(state, batch):
  """A softmax over the global batch weights each image's mean (global-batch coupling)."""
  means = batch["image"].mean(axis=(1, 2, 3)) * state["scale"]
  weights = jax.nn.softmax(means)
  return jnp.sum(weights * means), jax.random.fold_in(state["rng"], 1)


def main(workdir: str) -> None:
  flags.FLAGS.mark_as_parsed()  # grain reads absl flags
  runtime.initialize()
  assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
  mesh = sharding.make_data_mesh()
  local = sharding.per_host_batch_size(GLOBAL_BATCH)
  stream = iter(pipeline.make_domain_dataset(_domain(), batch_size=local, seed=3))
  whole = next(iter(pipeline.make_domain_dataset(_domain(), batch_size=GLOBAL_BATCH, seed=3,
                                                 shard_index=0, shard_count=1)))
  batch = sharding.shard_batch(next(stream), mesh)
  # The global batch, gathered back to every host, is the one-process batch.
  gathered = multihost_utils.process_allgather(batch["image"], tiled=True)
  np.testing.assert_array_equal(gathered, whole["image"])

  state = sharding.replicate({"scale": np.float32(2.0), "rng": jax.random.key(7)}, mesh)
  step = jax.jit(_loss, out_shardings=sharding.replicated_sharding(mesh))
  loss, rng = step(state, batch)
  expected, _ = _loss({"scale": 2.0, "rng": jax.random.key(7)},
                      {"image": jnp.asarray(whole["image"])})
  np.testing.assert_allclose(jax.device_get(loss), expected, rtol=1e-6)
  np.testing.assert_array_equal(jax.random.key_data(sharding.host_local(rng)),
                                jax.random.key_data(jax.random.fold_in(jax.random.key(7), 1)))

  # Checkpoints: saved by all, restored onto every device with the stream position.
  with Checkpointer(os.path.join(workdir, "checkpoints")) as checkpointer:
    checkpointer.save(1, state, {"data": stream}, force=True)
    checkpointer.wait_until_finished()
    after = next(stream)
    restored, step_number = checkpointer.restore(state, {"data": stream})
  assert step_number == 1 and restored["scale"].sharding == state["scale"].sharding
  np.testing.assert_array_equal(jax.device_get(restored["scale"]), 2.0)
  np.testing.assert_array_equal(next(stream)["image"], after["image"])

  # Process 0 writes, the others read after the barrier.
  shared = os.path.join(workdir, "shared.txt")
  if hosts.is_primary():
    with open(shared, "w") as f:
      f.write("written by process 0")
  hosts.barrier("shared.txt")
  with open(shared) as f:
    assert f.read() == "written by process 0"
  print("OK", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
