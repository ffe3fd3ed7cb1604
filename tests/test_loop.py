"""The training loop's reaction to non-finite steps: skip, restore the last good
checkpoint, or stop; and that checkpoints only ever hold finite steps."""

import logging

import grain
import jax
import jax.numpy as jnp
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


def _run(tmp_path, step_fn, *, nonfinite, num_steps=12, log_every=100, max_restores=3):
  data = iter(grain.MapDataset.range(1000).batch(1).to_iter_dataset())
  with Checkpointer(tmp_path / "ckpt", save_interval_steps=5) as checkpointer:
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
