"""ProgressReporter with a fake clock."""

from absl import logging

from i2i_jax.progress import ProgressReporter


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
