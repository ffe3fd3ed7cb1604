"""Keeps the next batches on the device while the current step runs, checkpointably.

`jax.jit` dispatches steps asynchronously, so when the loop asks for the next batch
the accelerator is still busy with the previous step. Putting batches on the device
`size - 1` steps early lets the host-to-device copy (and the host-side sharding)
overlap the running step instead of sitting between two steps, as flax's
`jax_utils.prefetch_to_device` does for pmap.

Prefetching moves the data iterators ahead of the step that is training, which
would make a checkpoint record a position past batches never trained on. So the
prefetcher remembers each iterator's state from before every batch it pulled, and
`positions` hands the checkpointer that state for the oldest batch not yet
consumed: a restored run sees exactly the batches an unprefetched run would.
"""

import collections
import copy
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any


class DevicePrefetcher:
  """Iterates `put({name: next(iterator)})`, `size - 1` batches ahead of the consumer.

  Args:
    iterators: named host iterators with `get_state()` / `set_state(state)`
      (grain DatasetIterators).
    put: host batch dict -> device batch (e.g. `sharding.shard_batch`).
    size: batches held on the device, counting the one being returned; 1 turns
      prefetching off.
  """

  def __init__(self, iterators: Mapping[str, Iterator], put: Callable[[dict], Any],
               size: int = 2):
    if size < 1:
      raise ValueError(f"prefetch size must be at least 1, got {size}")
    self._iterators = dict(iterators)
    self._put = put
    self._size = size
    # (iterator states before this batch was pulled, the batch on the device)
    self._queue: collections.deque[tuple[dict[str, Any], Any]] = collections.deque()
    self.positions = {name: _Position(self, name) for name in self._iterators}

  def __iter__(self):
    return self

  def __next__(self):
    while len(self._queue) < self._size:
      states = {name: copy.deepcopy(it.get_state()) for name, it in self._iterators.items()}
      host_batch = {name: next(it) for name, it in self._iterators.items()}
      self._queue.append((states, self._put(host_batch)))
    return self._queue.popleft()[1]

  def close(self) -> None:
    """Stops the host iterators' threads and worker processes (and their shared memory)."""
    self._queue.clear()
    for iterator in self._iterators.values():
      if hasattr(iterator, "close"):
        iterator.close()

  def __enter__(self) -> "DevicePrefetcher":
    return self

  def __exit__(self, *exc_info) -> None:
    del exc_info
    self.close()

  def _state(self, name: str):
    """Where `name` stands for the next batch the consumer will get."""
    if self._queue:
      return self._queue[0][0][name]
    return self._iterators[name].get_state()

  def _set_state(self, name: str, state) -> None:
    # Prefetched batches came from the old position: drop them all.
    self._queue.clear()
    self._iterators[name].set_state(state)

  def _start_prefetch(self, name: str) -> None:
    iterator = self._iterators[name]
    if hasattr(iterator, "start_prefetch"):
      iterator.start_prefetch()


class _Position:
  """One iterator's checkpointable position as the consumer sees it.

  grain's orbax handler saves a non-DatasetIterator's `get_state()` as text and
  hands it back encoded, so this speaks JSON bytes; the file is the same JSON a
  bare grain iterator writes, so checkpoints do not depend on prefetching.
  """

  def __init__(self, prefetcher: DevicePrefetcher, name: str):
    self._prefetcher = prefetcher
    self._name = name

  def get_state(self) -> bytes:
    return json.dumps(self._prefetcher._state(self._name), indent=4).encode()

  def set_state(self, state: bytes) -> None:
    self._prefetcher._set_state(self._name, json.loads(state))

  def start_prefetch(self) -> None:
    """Called by grain's restore: the host iterator starts reading ahead now."""
    self._prefetcher._start_prefetch(self._name)
