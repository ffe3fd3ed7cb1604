"""Periodic "step 120/1000 (12.0%), 3.41 steps/s, input wait 3%, ETA 0:04:18" lines and
steps/s and input-wait scalars."""

import datetime
import time
from collections.abc import Callable

from absl import logging

_DEFAULT_EVERY_SECS = 60.0


class ProgressReporter:
  """Call as `reporter(step)` after every training step.

  The rate is measured over the steps since the previous report. The clock
  starts at the first call, not at construction, so the first step (which
  includes jit compilation) does not drag the rate down. Without `every_steps`
  or `every_secs` it reports once a minute. `writer` (a MetricWriter) receives a
  `steps_per_sec` scalar with every report.

  Callers that pass `input_wait_s` (the time the step waited for its batch) also
  get the share of the interval spent waiting, logged and as `input_wait_fraction`.
  Steps are dispatched asynchronously, so a host that keeps up waits for the device
  elsewhere and this share stays near 0; near 1, the input pipeline is the limit.
  """

  def __init__(self, total_steps: int, *, every_steps: int | None = None,
               every_secs: float | None = None, writer=None, start_step: int = 0,
               time_fn: Callable[[], float] = time.monotonic):
    if every_steps is None and every_secs is None:
      every_secs = _DEFAULT_EVERY_SECS
    self.total_steps = total_steps
    self.every_steps = every_steps
    self.every_secs = every_secs
    self._writer = writer
    self._time_fn = time_fn
    self._last_step = start_step
    self._last_time = None  # Set by the first call.
    self._rate = None
    self._input_wait = None  # Seconds waited for input since the last report.
    self._input_wait_fraction = None

  @property
  def rate(self) -> float | None:
    """Steps per second over the last reported interval; None before the first report."""
    return self._rate

  @property
  def input_wait_fraction(self) -> float | None:
    """Share of the last reported interval spent waiting for input, if tracked."""
    return self._input_wait_fraction

  def __call__(self, step: int, input_wait_s: float | None = None) -> bool:
    """Notes that `step` is done; logs and returns True when a report is due."""
    now = self._time_fn()
    if self._last_time is None:
      self._last_step, self._last_time = step, now
      self._input_wait = None if input_wait_s is None else 0.0
      return False
    if input_wait_s is not None:
      self._input_wait = (self._input_wait or 0.0) + input_wait_s
    if step <= self._last_step or not self._due(step, now):
      return False
    interval = max(now - self._last_time, 1e-9)
    self._rate = (step - self._last_step) / interval
    if self._input_wait is not None:
      self._input_wait_fraction = min(self._input_wait / interval, 1.0)
      self._input_wait = 0.0
    self._last_step, self._last_time = step, now
    self._report(step)
    return True

  def _due(self, step: int, now: float) -> bool:
    return (step >= self.total_steps
            or (self.every_steps is not None and step % self.every_steps == 0)
            or (self.every_secs is not None and now - self._last_time >= self.every_secs))

  def _report(self, step: int):
    eta = datetime.timedelta(seconds=round(max(self.total_steps - step, 0) / self._rate))
    wait = self._input_wait_fraction
    logging.info("step %d/%d (%.1f%%), %.2f steps/s, %sETA %s", step, self.total_steps,
                 100.0 * step / self.total_steps, self._rate,
                 "" if wait is None else f"input wait {100 * wait:.0f}%, ", eta)
    if self._writer is not None:
      scalars = {"steps_per_sec": self._rate}
      if wait is not None:
        scalars["input_wait_fraction"] = wait
      self._writer.write_scalars(step, scalars)
