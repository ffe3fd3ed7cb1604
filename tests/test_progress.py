"""ProgressReporter with a fake clock."""

import pytest
from absl import logging

from i2i_jax.training.progress import ProgressReporter


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _Writer:

  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


def test_rate_eta_and_scalar_every_steps(monkeypatch):
  clock, writer, lines = _Clock(), _Writer(), []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: lines.append(fmt % args))
  reporter = ProgressReporter(1000, every_steps=100, writer=writer, time_fn=clock)
  clock.now += 30.0  # Compiling the first step: must not count.
  assert not reporter(1)
  assert reporter.rate is None
  for step in range(2, 121):
    clock.now += 0.5
    assert reporter(step) == (step in (100, 200))
  assert lines == ["step 100/1000 (10.0%), 2.00 steps/s, ETA 0:07:30"]
  assert writer.scalars == [(100, {"steps_per_sec": 2.0})]
  assert reporter.rate == 2.0


def test_rate_is_measured_since_the_last_report():
  clock = _Clock()
  reporter = ProgressReporter(100, every_steps=10, time_fn=clock)
  reporter(0)
  clock.now += 10.0
  reporter(10)  # 1 step/s
  clock.now += 2.0
  reporter(20)
  assert reporter.rate == 5.0


def test_every_secs_and_final_step():
  clock = _Clock()
  reporter = ProgressReporter(10, every_secs=5.0, start_step=4, time_fn=clock)
  reports = []
  for step in range(5, 11):
    reports.append(reporter(step))
    clock.now += 2.0
  # Clock starts at step 5; 6 s have passed by step 8; step 10 is the last one.
  assert reports == [False, False, False, True, False, True]
  assert reporter.rate == 1.0 / 2.0


def test_input_wait_share_of_each_interval(monkeypatch):
  clock, writer, lines = _Clock(), _Writer(), []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: lines.append(fmt % args))
  reporter = ProgressReporter(100, every_steps=10, writer=writer, time_fn=clock)
  reporter(0, input_wait_s=30.0)  # before the clock starts: not counted
  for step in range(1, 21):
    clock.now += 1.0
    # Input-bound for the first ten steps (0.8 s of each 1 s), then the device is.
    reporter(step, input_wait_s=0.8 if step <= 10 else 0.05)
  assert lines[0] == "step 10/100 (10.0%), 1.00 steps/s, input wait 80%, ETA 0:01:30"
  assert lines[1].startswith("step 20/100 (20.0%), 1.00 steps/s, input wait 5%, ")
  step, scalars = writer.scalars[1]
  assert step == 20 and scalars == {"steps_per_sec": 1.0,
                                    "input_wait_fraction": pytest.approx(0.05)}
  assert reporter.input_wait_fraction == pytest.approx(0.05)
