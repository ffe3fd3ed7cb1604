"""Checkpointer: bit-exact state round trips, grain positions, cadence, retention, errors."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

from i2i_jax.errors import CheckpointError
from i2i_jax.training.checkpoint import Checkpointer, save_config


class _State(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array


def _make_state(seed: int, width: int = 4) -> _State:
  """A TrainState with a few Adam steps taken, so opt_state is not all zeros."""
  key = jax.random.key(seed)
  params = {"dense": {"kernel": jax.random.normal(key, (3, width)), "bias": jnp.zeros(width)}}
  state = _State.create(apply_fn=None, params=params, tx=optax.adam(1e-2),
                        batch_stats={"SpectralNorm_0": {"Conv_0/kernel/u": jnp.ones((1, 3))}},
                        rng=jax.random.fold_in(key, 1))
  for _ in range(seed % 3 + 1):
    state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, state.params))
  return state


def _iterator():
  return iter(grain.MapDataset.range(100).shuffle(seed=0).repeat().batch(4).to_iter_dataset())


def _assert_bit_identical(a, b):
  """Same leaves at the same paths (static fields such as `tx` are not compared)."""
  (paths_a, leaves_a), (paths_b, leaves_b) = (
      zip(*jax.tree_util.tree_flatten_with_path(t)[0]) for t in (a, b))
  assert paths_a == paths_b
  for x, y in zip(leaves_a, leaves_b):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert y.dtype == x.dtype
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.asarray(x).dtype == np.asarray(y).dtype


def test_state_and_iterator_round_trip(tmp_path):
  state, it = _make_state(1), _iterator()
  for _ in range(3):
    next(it)
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.save(7, state, {"train": it})
    expected_batches = [next(it) for _ in range(3)]
  with Checkpointer(tmp_path / "ckpt") as ckpt:  # A fresh process would do this.
    fresh_it = _iterator()
    restored, step = ckpt.restore(_make_state(2), {"train": fresh_it})
  assert step == 7
  assert type(restored) is _State
  _assert_bit_identical(restored, state)
  assert restored.rng.sharding == state.rng.sharding
  for expected in expected_batches:
    np.testing.assert_array_equal(next(fresh_it), expected)


def test_async_save_survives_deleting_the_saved_arrays(tmp_path):
  """What donating the state to the next step does right after `save` returns."""
  state = _make_state(1)
  kernel = np.array(state.params["dense"]["kernel"])
  key_data = np.array(jax.random.key_data(state.rng))
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)
    for leaf in jax.tree.leaves(state):
      if isinstance(leaf, jax.Array):
        leaf.delete()
    restored, _ = ckpt.restore(_make_state(2))
  np.testing.assert_array_equal(restored.params["dense"]["kernel"], kernel)
  np.testing.assert_array_equal(jax.random.key_data(restored.rng), key_data)


def test_no_checkpoint_gives_none(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.restore(_make_state(0)) is None


def test_save_interval_and_force(tmp_path):
  state = _make_state(0)
  with Checkpointer(tmp_path, save_interval_steps=3, max_to_keep=10) as ckpt:
    saved = [step for step in range(1, 8) if ckpt.save(step, state)]
    assert saved == [3, 6]  # Not step 1: no "first save" exception to the cadence.
    assert ckpt.save(7, state, force=True)
    assert not ckpt.save(7, state, force=True)  # Already saved: skipped, no error.
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [3, 6, 7]
    assert ckpt.latest_step() == 7


def test_max_to_keep(tmp_path):
  state = _make_state(0)
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in range(1, 5):
      ckpt.save(step, state)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [3, 4]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]


def test_restore_given_step(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1))
    ckpt.save(2, _make_state(2))
    restored, step = ckpt.restore(_make_state(0), step=1)
    assert step == 1
    _assert_bit_identical(restored, _make_state(1))
    with pytest.raises(ValueError, match="no checkpoint for step 5"):
      ckpt.restore(_make_state(0), step=5)


def test_mismatched_shapes_name_the_keys(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(0, width=4))
    with pytest.raises(ValueError) as error:
      ckpt.restore(_make_state(0, width=5))
  message = str(error.value)
  assert "params/dense/kernel: checkpoint shape (3, 4) != target shape (3, 5)" in message
  assert "opt_state/0/mu/dense/bias: checkpoint shape (4,) != target shape (5,)" in message
  assert "batch_stats" not in message and "rng" not in message


def test_missing_and_extra_keys_are_named(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {"g": jnp.zeros(2), "d": jnp.zeros(3)})
    with pytest.raises(ValueError) as error:
      ckpt.restore({"g": jnp.zeros(2), "c": jnp.zeros(1)})
  assert "c: missing from the checkpoint" in str(error.value)
  assert "d: in the checkpoint (shape (3,)) but not in the target" in str(error.value)


def _truncate_files(directory):
  for path in directory.rglob("*"):
    if path.is_file():
      path.write_bytes(b"")


def test_unreadable_latest_falls_back_to_the_previous(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1), {"data": _iterator()})
    ckpt.save(2, _make_state(2), {"data": _iterator()})
  _truncate_files(tmp_path / "2")
  with Checkpointer(tmp_path) as ckpt:
    restored, step = ckpt.restore(_make_state(0), {"data": _iterator()})
    assert step == 1
    _assert_bit_identical(restored, _make_state(1))
    assert ckpt.all_steps() == [1]
    assert len(list((tmp_path / "corrupt").glob("2-*"))) == 1  # kept for inspection
    assert ckpt.save(2, _make_state(2), force=True)  # the step number is free again
    ckpt.wait_until_finished()
    assert ckpt.restore(_make_state(0))[1] == 2


def test_damaged_array_bytes_fall_back_to_the_previous(tmp_path):
  """Only the array data is damaged: tensorstore reads it without an error (its index
  is checksummed, the values are not), so the saved checksums must catch it."""
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1, width=4096))
    ckpt.save(2, _make_state(2, width=4096))
  largest = max((p for p in (tmp_path / "2" / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)  # the kernel's bytes; metadata is small
  data = bytearray(largest.read_bytes())
  data[len(data) // 2] ^= 0x01
  largest.write_bytes(bytes(data))
  with Checkpointer(tmp_path) as ckpt:
    restored, step = ckpt.restore(_make_state(0, width=4096))
  assert step == 1
  _assert_bit_identical(restored, _make_state(1, width=4096))
  assert len(list((tmp_path / "corrupt").glob("2-*"))) == 1


@pytest.mark.parametrize("error", [
    PermissionError(errno.EACCES, "Permission denied"),
    OSError(errno.ESTALE, "Stale file handle"),
    ValueError('PERMISSION_DENIED: Error reading local file "2/state/_METADATA"'),
], ids=["permission", "stale-nfs-handle", "tensorstore-permission"])
def test_an_access_error_fails_and_leaves_the_checkpoint_in_place(tmp_path, monkeypatch, error):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1))
    ckpt.save(2, _make_state(2))

  def unreadable(self, directory):
    raise error

  monkeypatch.setattr(ocp.StandardCheckpointHandler, "metadata", unreadable)
  with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match="left in place"):
    ckpt.restore(_make_state(0))
  assert not (tmp_path / "corrupt").exists()
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1, 2]


def test_a_vanished_mount_fails_and_leaves_the_checkpoint_in_place(tmp_path, monkeypatch):
  mount = tmp_path / "mount"
  with Checkpointer(mount) as ckpt:
    ckpt.save(1, _make_state(1))
    ckpt.save(2, _make_state(2))

  def vanish(self, directory):
    mount.rename(tmp_path / "unmounted")
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(directory))

  monkeypatch.setattr(ocp.StandardCheckpointHandler, "metadata", vanish)
  with Checkpointer(mount) as ckpt, pytest.raises(CheckpointError, match="left in place"):
    ckpt.restore(_make_state(0))
  monkeypatch.undo()
  (tmp_path / "unmounted").rename(mount)
  with Checkpointer(mount) as ckpt:
    assert ckpt.all_steps() == [1, 2]
    _assert_bit_identical(ckpt.restore(_make_state(0))[0], _make_state(2))


def test_no_readable_checkpoint_is_a_checkpoint_error(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1))
  _truncate_files(tmp_path / "1")
  with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError,
                                                     match="no readable checkpoint.*step 1"):
    ckpt.restore(_make_state(0))


def test_a_write_cut_short_is_invisible(tmp_path):
  """orbax writes into a temporary directory and renames it when complete, so a run
  killed mid-write leaves no step behind that restore would pick up."""
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _make_state(1))
  partial = tmp_path / "2.orbax-checkpoint-tmp-1700000000000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "_METADATA").write_text("{trunc")
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1]
    _assert_bit_identical(ckpt.restore(_make_state(0))[0], _make_state(1))


def test_reserved_iterator_name(tmp_path):
  with Checkpointer(tmp_path) as ckpt, pytest.raises(ValueError, match="reserved"):
    ckpt.save(1, _make_state(0), {"state": _iterator()})


def test_save_config(tmp_path):
  config = ml_collections.ConfigDict({"lr": 2e-4, "model": {"ch": 8}})
  save_config(tmp_path / "run", config)
  assert json.loads((tmp_path / "run" / "config.json").read_text()) == config.to_dict()


_SHARDED_RESTORE = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from i2i_jax.training.checkpoint import Checkpointer
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    repl, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = {"w": jax.device_put(jnp.arange(16.0).reshape(8, 2), split),
             "b": jax.device_put(jnp.ones(3), repl)}
    with Checkpointer(sys.argv[1]) as ckpt:
      ckpt.save(1, state)
      target = {"w": jax.device_put(jnp.zeros((8, 2)), repl),
                "b": jax.device_put(jnp.zeros(3), repl)}
      restored, _ = ckpt.restore(target)
    assert restored["w"].sharding == repl, restored["w"].sharding
    np.testing.assert_array_equal(restored["w"], np.arange(16.0).reshape(8, 2))
    print("OK")
""")


def test_restore_uses_the_targets_shardings(tmp_path):
  """Saved split over 8 devices, restored replicated: the target decides."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SHARDED_RESTORE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
