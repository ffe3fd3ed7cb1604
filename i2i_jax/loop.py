"""The method-agnostic training loop: steps, periodic actions, checkpoints, preemption.

Both methods hand it a jitted step, a batch source and their periodic actions; the
loop keeps metrics on the device between reports (no host round-trip per step),
checkpoints on a fixed cadence and on SIGTERM, and resumes where a checkpoint left off.
"""

import dataclasses
import signal
import threading
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging

from i2i_jax.checkpoint import Checkpointer
from i2i_jax.progress import ProgressReporter


class MetricAccumulator:
  """Holds per-step metric dicts as device arrays; averages them when fetched.

  Appending a device array does not block, so steps keep streaming; one transfer per
  report instead of one per step.
  """

  def __init__(self):
    self._pending: list[Mapping[str, jax.Array]] = []

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._pending.append(metrics)

  def fetch_mean(self) -> dict[str, np.ndarray]:
    if not self._pending:
      return {}
    fetched = jax.device_get(self._pending)
    self._pending = []
    return {k: np.mean([np.asarray(m[k]) for m in fetched], axis=0) for k in fetched[0]}


@dataclasses.dataclass
class PeriodicAction:
  """Calls `fn(step, state)` every `every` steps (and after the last step if `at_end`)."""

  every: int
  fn: Callable[[int, Any], None]
  at_end: bool = True

  def due(self, step: int, last: bool) -> bool:
    return (self.every > 0 and step % self.every == 0) or (last and self.at_end)


class PreemptionGuard:
  """Turns SIGTERM (TPU/GCP preemption, `kill`) into a flag the loop checks per step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def run(*, state, step_fn: Callable, batches: Iterator, start_step: int, num_steps: int,
        checkpointer: Checkpointer, data_iterators: Mapping[str, Any],
        on_metrics: Callable[[int, dict[str, np.ndarray]], None], log_every: int,
        actions: tuple[PeriodicAction, ...] = (), writer=None):
  """Trains from `start_step` to `num_steps`; returns the final state.

  `batches` yields device-ready batches, `step_fn(state, batch) -> (state, metrics)`.
  A checkpoint (state + data iterator positions) is written on the checkpointer's
  cadence, at the end, and when SIGTERM arrives; then the loop returns early.
  """
  progress = ProgressReporter(num_steps, every_steps=log_every, writer=writer,
                              start_step=start_step)
  accumulator = MetricAccumulator()
  step = start_step
  with PreemptionGuard() as guard:
    while step < num_steps:
      state, metrics = step_fn(state, next(batches))
      step += 1
      accumulator.add(metrics)
      last = step == num_steps
      if step % log_every == 0 or last:
        on_metrics(step, accumulator.fetch_mean())
      # After the fetch: steps are dispatched asynchronously, and only the fetch waits
      # for them, so the rate then counts finished steps rather than dispatches.
      progress(step)
      for action in actions:
        if action.due(step, last):
          action.fn(step, state)
      checkpointer.save(step, state, data_iterators, force=last or guard.requested)
      if guard.requested:
        break
  checkpointer.wait_until_finished()
  return state
