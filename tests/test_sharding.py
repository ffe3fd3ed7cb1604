"""Data-parallel helpers on 8 fake CPU devices.

The checks run in a subprocess: the device count is fixed when jax starts, and
this pytest process must keep its single device for the other tests.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from i2i_jax.training import sharding

_EIGHT_DEVICE_CHECKS = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from i2i_jax.training import sharding

    assert jax.device_count() == 8
    mesh = sharding.make_data_mesh()
    assert mesh.shape == {"data": 8}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)

    rng = np.random.default_rng(0)
    batch = {"a": rng.random((16, 4, 4, 3), dtype=np.float32),
             "label": np.arange(16, dtype=np.int32)}
    sharded = sharding.shard_batch(batch, mesh)
    assert sharded["a"].shape == (16, 4, 4, 3)
    assert sharded["a"].sharding.spec == P("data", None, None, None)
    assert sharded["a"].addressable_shards[3].data.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(sharded["a"].addressable_shards[3].data, batch["a"][6:8])
    np.testing.assert_array_equal(sharded["label"], batch["label"])

    # JD-BW's stacked batches (steps, B, H, W, C) split along B.
    stacked = sharding.shard_batch(rng.random((3, 8, 2, 2, 1)), mesh, batch_axis=1)
    assert stacked.sharding.spec == P(None, "data", None, None, None)
    assert stacked.addressable_shards[0].data.shape == (3, 1, 2, 2, 1)

    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    replicated = sharding.replicate(params, mesh)
    assert replicated["w"].sharding.is_fully_replicated
    assert len(replicated["w"].addressable_shards) == 8
    params["w"].block_until_ready()  # Not aliased: the input is still alive.

    @jax.jit
    def weighted_mean(p, x):
      return jnp.mean(x["a"]) * p["w"].sum()
    expected = np.mean(batch["a"], dtype=np.float64) * 15.0
    np.testing.assert_allclose(weighted_mean(replicated, sharded), expected, rtol=1e-5)

    try:
      sharding.shard_batch({"images": {"b": np.zeros((12, 2))}}, mesh)
    except ValueError as e:
      assert "['images']['b']" in str(e) and "(12, 2)" in str(e), e
    else:
      raise AssertionError("indivisible batch accepted")
    print("OK")
""")


def test_eight_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_CHECKS], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_batch_sharding_specs():
  mesh = sharding.make_data_mesh()
  assert sharding.batch_sharding(mesh).spec == P("data")
  assert sharding.batch_sharding(mesh, batch_axis=1).spec == P(None, "data")
  assert sharding.batch_sharding(mesh, batch_axis=1, ndim=3).spec == P(None, "data", None)
  assert sharding.batch_sharding(mesh, batch_axis=-1, ndim=2).spec == P(None, "data")
  assert sharding.replicated_sharding(mesh).spec == P()
  with pytest.raises(ValueError, match="out of range"):
    sharding.batch_sharding(mesh, batch_axis=3, ndim=3)
  with pytest.raises(ValueError, match="needs ndim"):
    sharding.batch_sharding(mesh, batch_axis=-1)


def test_single_device_round_trip():
  mesh = sharding.make_data_mesh()
  batch = np.arange(12.0).reshape(4, 3)
  np.testing.assert_array_equal(sharding.shard_batch(batch, mesh), batch)
  with pytest.raises(ValueError, match="<root>"):
    sharding.shard_batch(np.float32(1.0), mesh)


def test_replicate_does_not_alias_its_input():
  """Donating the replicated state must not delete the caller's arrays (1-device mesh)."""
  params = {"w": jnp.ones(3)}
  replicated = sharding.replicate(params, sharding.make_data_mesh())
  jax.jit(lambda p: jax.tree.map(lambda x: x + 1, p), donate_argnums=0)(replicated)
  np.testing.assert_array_equal(params["w"], np.ones(3))
