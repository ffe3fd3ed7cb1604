"""DevicePrefetcher: same batches as without it, and checkpoints at the consumer's position."""

import grain
import jax
import jax.numpy as jnp
import pytest

from i2i_jax.data.prefetch import DevicePrefetcher
from i2i_jax.training.checkpoint import Checkpointer


def streams():
  """Two shuffled grain streams whose elements say where they came from."""
  def stream(offset):
    return iter(grain.MapDataset.range(100).shuffle(seed=offset).map(
        lambda i, o=offset: i + 1000 * o).to_iter_dataset())
  return {"x": stream(0), "y": stream(1)}


def put_counting(calls):
  def put(batch):
    calls.append(batch)
    return jax.tree.map(jnp.asarray, batch)
  return put


def take(batches, n):
  return [jax.tree.map(int, next(batches)) for _ in range(n)]


def test_yields_the_stream_in_order_while_putting_ahead():
  expected = take(iter(lambda s=streams(): {k: next(v) for k, v in s.items()}, None), 6)
  calls = []
  prefetcher = DevicePrefetcher(streams(), put_counting(calls), size=3)
  assert take(prefetcher, 1) == expected[:1]
  assert len(calls) == 3  # two batches already on the device behind the one returned
  assert take(prefetcher, 5) == expected[1:]
  assert len(calls) == 8


def test_size_one_puts_nothing_ahead():
  calls = []
  prefetcher = DevicePrefetcher(streams(), put_counting(calls), size=1)
  take(prefetcher, 4)
  assert len(calls) == 4
  with pytest.raises(ValueError, match="at least 1"):
    DevicePrefetcher(streams(), put_counting([]), size=0)


def test_checkpoint_records_the_next_unconsumed_batch(tmp_path):
  reference = DevicePrefetcher(streams(), put_counting([]), size=1)
  expected = take(reference, 10)

  prefetcher = DevicePrefetcher(streams(), put_counting([]), size=3)
  assert take(prefetcher, 4) == expected[:4]  # and batches 5, 6 are on the device
  state = {"w": jnp.zeros(2)}
  with Checkpointer(tmp_path / "ckpt") as checkpointer:
    checkpointer.save(4, state, prefetcher.positions, force=True)
    checkpointer.wait_until_finished()
    # The file is what a bare grain iterator at the same position writes.
    bare = streams()
    for _ in range(4):
      for it in bare.values():
        next(it)
    checkpointer.save(5, state, bare, force=True)
    checkpointer.wait_until_finished()
    for name in ("x", "y"):
      files = [tmp_path / "ckpt" / str(step) / name / "process_0-of-1.json" for step in (4, 5)]
      assert files[0].read_text() == files[1].read_text()

    resumed = DevicePrefetcher(streams(), put_counting([]), size=3)
    checkpointer.restore(state, resumed.positions, step=4)
    assert take(resumed, 6) == expected[4:]

    # Restoring into a prefetcher that is mid-stream drops what it had prefetched.
    take(prefetcher, 3)
    checkpointer.restore(state, prefetcher.positions, step=4)
    assert take(prefetcher, 6) == expected[4:]


def test_positions_track_consumption_not_prefetching():
  prefetcher = DevicePrefetcher(streams(), put_counting([]), size=4)
  bare = streams()
  for _ in range(3):
    next(prefetcher)
    for it in bare.values():
      next(it)
    for name in ("x", "y"):
      assert (prefetcher.positions[name].get_state().decode()
              == DevicePrefetcher({name: bare[name]}, put_counting([]), size=1)
              .positions[name].get_state().decode())


def test_positions_of_worker_process_streams_resume_exactly(tmp_path):
  """GPU/TPU hosts read with grain workers (num_workers auto): same contract."""
  from i2i_jax.data import domains, pipeline

  def worker_streams():
    cfg = domains.default_domain_config()
    cfg.augment, cfg.num_workers = "sr_mnist", 2
    return {"x": iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=0))}

  def seen(batches, n):
    """Labels and per-image ink: the random geometry tells batches apart too."""
    return [(b["x"]["label"].tolist(), b["x"]["image"].sum(axis=(1, 2, 3)).round(2).tolist())
            for b in (next(batches) for _ in range(n))]

  put = lambda batch: batch
  with DevicePrefetcher(worker_streams(), put, size=1) as reference:
    expected = seen(reference, 6)
  with (DevicePrefetcher(worker_streams(), put, size=3) as prefetcher,
        DevicePrefetcher(worker_streams(), put, size=3) as resumed,
        Checkpointer(tmp_path / "ckpt") as checkpointer):
    assert seen(prefetcher, 2) == expected[:2]
    checkpointer.save(2, {"w": jnp.zeros(2)}, prefetcher.positions, force=True)
    checkpointer.wait_until_finished()
    checkpointer.restore({"w": jnp.zeros(2)}, resumed.positions)
    assert seen(resumed, 4) == expected[2:]


def test_close_closes_the_host_iterators():
  closed = []

  class Stream:
    def __init__(self, name):
      self.name = name

    def __next__(self):
      return 0

    def get_state(self):
      return {}

    def close(self):
      closed.append(self.name)

  with DevicePrefetcher({"x": Stream("x"), "y": Stream("y")}, lambda b: b) as prefetcher:
    next(prefetcher)
  assert sorted(closed) == ["x", "y"]
