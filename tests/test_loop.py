"""The training loop's reaction to non-finite steps: skip, restore the last good
checkpoint, or stop; that checkpoints only ever hold finite steps; and that SIGTERM
stops it after the step in flight."""

import logging
import os
import queue
import signal
import threading
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from i2i_jax import errors
from i2i_jax.training import loop
from i2i_jax.training.checkpoint import Checkpointer


@struct.dataclass
class _State:
  step: jax.Array
  updates: jax.Array  # how many updates were applied (skipped ones are not)
  rng: jax.Array


def _initial_state():
  return _State(step=jnp.int32(0), updates=jnp.int32(0), rng=jax.random.key(0))


def _step_fn(diverging_steps, *, once: bool):
  """A step that reports its update non-finite at `diverging_steps` (only the first
  time through each if `once`), like the methods' guarded steps do."""
  seen = set()

  def step_fn(state, batch):
    del batch
    step = int(state.step) + 1
    bad = step in diverging_steps and not (once and step in seen)
    seen.add(step)
    ok = jnp.float32(0.0 if bad else 1.0)
    new = state.replace(step=state.step + 1, updates=state.updates + (0 if bad else 1),
                        rng=jax.random.fold_in(state.rng, step))
    return new, {"loss": jnp.float32(step), "finite": ok, "finite_g": ok,
                 "finite_d": jnp.float32(1.0)}

  return step_fn


def _diverging_batch_fn(bad_value: int):
  """A step whose update is non-finite whenever its batch holds `bad_value`."""

  def step_fn(state, batch):
    ok = jnp.float32(0.0 if int(np.asarray(batch)[0]) == bad_value else 1.0)
    new = state.replace(step=state.step + 1, updates=state.updates + ok.astype(jnp.int32))
    return new, {"finite": ok, "finite_g": ok}

  return step_fn


def _run(tmp_path, step_fn, *, nonfinite, num_steps=12, log_every=100, max_restores=3,
         checkpoint_every=5):
  data = iter(grain.MapDataset.range(1000).batch(1).to_iter_dataset())
  with Checkpointer(tmp_path / "ckpt", save_interval_steps=checkpoint_every) as checkpointer:
    state = loop.run(state=_initial_state(), step_fn=step_fn, batches=data, start_step=0,
                     num_steps=num_steps, checkpointer=checkpointer,
                     data_iterators={"data": data}, on_metrics=lambda step, m: None,
                     log_every=log_every, nonfinite=nonfinite, max_restores=max_restores)
    return state, checkpointer.all_steps()


def test_skip_trains_on_and_names_the_step_and_network(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    state, _ = _run(tmp_path, _step_fn({7}, once=False), nonfinite="skip", log_every=4)
  assert (int(state.step), int(state.updates)) == (12, 11)
  assert "step(s) 7 (g)" in caplog.text


def test_stop_raises_naming_the_step_and_network(tmp_path):
  with pytest.raises(errors.TrainingDiverged, match=r"step\(s\) 7 \(g\).*nonfinite='stop'"):
    _run(tmp_path, _step_fn({7}, once=False), nonfinite="stop", log_every=4)


def test_restore_goes_back_to_the_last_good_checkpoint(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    state, saved = _run(tmp_path, _step_fn({7}, once=True), nonfinite="restore")
  # Steps 6-7 were replayed from the checkpoint at 5: every update applied once.
  assert (int(state.step), int(state.updates)) == (12, 12)
  assert "Restored the last good checkpoint (step 5)" in caplog.text
  assert 10 in saved and 12 in saved


def test_restore_retries_on_other_data_than_the_batch_that_diverged(tmp_path, caplog):
  """Batch 6 (step 7) always diverges: replaying it after the restore (the data
  positions of step 5) would diverge until max_restores ran out."""
  with caplog.at_level(logging.WARNING):
    state, _ = _run(tmp_path, _diverging_batch_fn(6), nonfinite="restore", max_restores=1)
  assert (int(state.step), int(state.updates)) == (12, 12)
  assert caplog.text.count("Restored the last good checkpoint") == 1


def test_restore_gives_up_and_never_saves_a_diverged_window(tmp_path):
  with pytest.raises(errors.TrainingDiverged, match="after 2 restores"):
    _run(tmp_path, _step_fn({7}, once=False), nonfinite="restore", max_restores=2)
  with Checkpointer(tmp_path / "ckpt") as checkpointer:
    assert checkpointer.all_steps() == [5]


def test_restore_before_any_checkpoint_says_so(tmp_path):
  with pytest.raises(errors.TrainingDiverged, match="before the first checkpoint"):
    _run(tmp_path, _step_fn({2}, once=True), nonfinite="restore", log_every=1)


def test_unknown_policy_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match="config.nonfinite 'ignore'"):
    _run(tmp_path, _step_fn(set(), once=True), nonfinite="ignore")


class _Device:
  """Runs steps on a thread, one after the other, as an accelerator runs dispatched
  programs; the step function returns at once with a future for each step's metrics."""

  def __init__(self, sigterm_after: int):
    self._queue = queue.Queue()
    self._sigterm_after = sigterm_after
    threading.Thread(target=self._work, daemon=True).start()

  def _work(self):
    while True:
      step, done = self._queue.get()
      time.sleep(0.01)
      if step == self._sigterm_after:
        os.kill(os.getpid(), signal.SIGTERM)
      done.set()

  def step_fn(self, state, batch):
    del batch
    done = _Future()
    self._queue.put((int(state.step) + 1, done))
    return state.replace(step=state.step + 1), {"finite": done}


class _Future(threading.Event):
  block_until_ready = threading.Event.wait  # what jax.block_until_ready calls


def test_sigterm_stops_after_the_step_in_flight(tmp_path):
  """With metrics fetched every 100 steps, a host that queued steps without waiting
  for the device would serve a SIGTERM sent during step 3 only at the end."""
  with pytest.raises(errors.Preempted) as stopped:
    _run(tmp_path, _Device(sigterm_after=3).step_fn, nonfinite="skip", num_steps=200,
         checkpoint_every=1000)
  assert stopped.value.step in (3, 4, 5)
  with Checkpointer(tmp_path / "ckpt") as checkpointer:
    assert checkpointer.all_steps() == [stopped.value.step]
