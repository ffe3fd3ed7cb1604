"""The method-agnostic training loop: steps, periodic actions, checkpoints, preemption.

Both methods hand it a jitted step, a batch source and their periodic actions; the
loop keeps metrics on the device between reports (no host round-trip per step),
checkpoints on a fixed cadence and on SIGTERM, and resumes where a checkpoint left off.
"""

import dataclasses
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging

from i2i_jax import errors
from i2i_jax.training.checkpoint import Checkpointer
from i2i_jax.training.progress import ProgressReporter


class MetricAccumulator:
  """Holds per-step metric dicts as device arrays until they are fetched.

  Appending a device array does not block, so steps keep streaming; one transfer per
  report instead of one per step.
  """

  def __init__(self):
    self._pending: list[Mapping[str, jax.Array]] = []

  def __len__(self) -> int:
    return len(self._pending)

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._pending.append(metrics)

  def fetch(self) -> list[dict[str, np.ndarray]]:
    """The pending steps' metrics on the host, oldest first; clears them."""
    fetched = jax.device_get(self._pending)
    self._pending = []
    return fetched


def mean_metrics(per_step: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  if not per_step:
    return {}
  return {k: np.mean([np.asarray(m[k]) for m in per_step], axis=0) for k in per_step[0]}


def skipped_updates(per_step: list[Mapping[str, np.ndarray]],
                    first_step: int) -> list[tuple[int, list[str]]]:
  """(step, networks) of every step whose update the step function skipped.

  Step functions report `finite` (0 = update skipped) and `finite_<network>` for
  each network whose losses or gradients they checked.
  """
  skipped = []
  for offset, metrics in enumerate(per_step):
    if "finite" in metrics and float(metrics["finite"]) < 1:
      networks = [k[len("finite_"):] for k in metrics
                  if k.startswith("finite_") and float(metrics[k]) < 1]
      skipped.append((first_step + offset, networks))
  return skipped


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
    del exc
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


NONFINITE_POLICIES = ("skip", "restore", "stop")


def run(*, state, step_fn: Callable, batches: Iterator, start_step: int, num_steps: int,
        checkpointer: Checkpointer, data_iterators: Mapping[str, Any],
        on_metrics: Callable[[int, dict[str, np.ndarray]], None], log_every: int,
        actions: tuple[PeriodicAction, ...] = (), writer=None, nonfinite: str = "skip",
        max_restores: int = 3):
  """Trains from `start_step` to `num_steps`; returns the final state.

  `batches` yields device-ready batches, `step_fn(state, batch) -> (state, metrics)`.
  A checkpoint (state + data iterator positions) is written on the checkpointer's
  cadence and at the end. SIGTERM stops the loop after the step in flight: the host
  never runs more than one step ahead of the device, so the flag is read about once
  per step time; the state is saved and `errors.Preempted` raised.

  Step functions skip updates whose losses or gradients are not finite, so NaNs
  never reach the state. `nonfinite` says what else happens when one is skipped:
  "skip" logs the steps and networks and trains on; "stop" raises
  `errors.TrainingDiverged`; "restore" goes back to the last checkpoint's state (whose
  steps were all finite: with this policy metrics are checked before every save)
  and retries on the batches after the one that diverged, with a different random
  stream, at most `max_restores` times.
  """
  if nonfinite not in NONFINITE_POLICIES:
    raise errors.ConfigError(f"unknown config.nonfinite {nonfinite!r}; expected one of "
                             f"{NONFINITE_POLICIES}")
  progress = ProgressReporter(num_steps, every_steps=log_every, writer=writer,
                              start_step=start_step)
  accumulator = MetricAccumulator()
  step, restores = start_step, 0
  in_flight = None  # the previous step's metrics: ready once that step has run
  with PreemptionGuard() as guard:
    while step < num_steps:
      waited = time.monotonic()
      batch = next(batches)
      waited = time.monotonic() - waited
      state, metrics = step_fn(state, batch)
      # Dispatch is asynchronous: without this wait the host would queue steps up to
      # the next metrics fetch, and a SIGTERM would be served that many steps late.
      jax.block_until_ready(in_flight)
      in_flight = metrics
      step += 1
      accumulator.add(metrics)
      last = step == num_steps
      # Under "restore", metrics are checked before every save, so no checkpoint holds a
      # skipped step.
      check_before_save = nonfinite == "restore" and (guard.requested or
                                                      checkpointer.should_save(step))
      if step % log_every == 0 or last or check_before_save:
        per_step = accumulator.fetch()
        on_metrics(step, mean_metrics(per_step))
        skipped = skipped_updates(per_step, step - len(per_step) + 1)
        if skipped:
          _report_skipped(skipped, nonfinite)
          if nonfinite == "restore":
            restores += 1
            state, step = _restore_last_good(state, checkpointer, restores, max_restores)
            continue
      # The rate counts finished steps rather than dispatches: all but the step just
      # dispatched have finished (the wait above).
      progress(step, input_wait_s=waited)
      for action in actions:
        if action.due(step, last):
          action.fn(step, state)
      # Read the flag once: a signal arriving during the save is served next step.
      stop = guard.requested
      if checkpointer.save(step, state, data_iterators, force=last or stop) and writer is not None:
        writer.flush()  # the events of the checkpointed steps survive a kill too
      if stop:
        checkpointer.wait_until_finished()
        raise errors.Preempted(checkpointer.directory, step)
  checkpointer.wait_until_finished()
  return state


def _report_skipped(skipped: list[tuple[int, list[str]]], policy: str) -> None:
  shown = ", ".join(f"{step} ({'/'.join(nets) or '?'})" for step, nets in skipped[:10])
  more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
  message = (f"non-finite losses or gradients at step(s) {shown}{more} "
             "(networks in update order); those updates were skipped")
  if policy == "stop":
    raise errors.TrainingDiverged(f"{message}. Stopping (config.nonfinite='stop'); "
                                  "the last checkpoint holds only finite steps.")
  logging.warning("%s.", message[0].upper() + message[1:])


def _restore_last_good(state, checkpointer: Checkpointer, restores: int, max_restores: int):
  """The last checkpoint's state with its random stream re-seeded, and its step.

  The streams keep their positions: replaying the batches that diverged would
  usually diverge the same way, whatever the random stream (BalaGAN's step reads none).
  """
  if restores > max_restores:
    raise errors.TrainingDiverged(
        f"training diverged again after {max_restores} restores of the last good "
        f"checkpoint in {checkpointer.directory}; lower the learning rates or raise "
        "config.max_restores")
  restored = checkpointer.restore(state)
  if restored is None:
    raise errors.TrainingDiverged("training diverged before the first checkpoint; there is "
                                  "no good checkpoint to go back to")
  state, step = restored
  state = state.replace(rng=jax.random.fold_in(state.rng, restores))
  logging.warning("Restored the last good checkpoint (step %d), restore %d of %d.", step,
                  restores, max_restores)
  return state, step
