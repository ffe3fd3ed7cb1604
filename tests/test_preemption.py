"""Killing a training run: SIGTERM checkpoints and exits cleanly; SIGKILL at a random
step loses at most the steps since the last checkpoint; restarted, the run ends
bit-identical to one that was never interrupted."""

import os
import signal
import subprocess
import time

import jax
import numpy as np

import cli_runs
import jdbw_tiny
from i2i_jax.training.checkpoint import Checkpointer
from jdbw_jax import train
from jdbw_jax.method import JDBW

_OVERRIDES = {"num_steps": 16, "checkpoint_every": 4, "log_every": 1, "sample_every": 0,
              "eval_every": 0, "eval.classifier_steps": 0}


def _command(workdir, overrides):
  return cli_runs.command("jdbw_jax.main", "configs/digits_demo.py", workdir,
                          jdbw_tiny.tiny_config(**overrides))


def _final_state(workdir, config):
  model = JDBW(config, (32, 32, 1), (32, 32, 1))
  with Checkpointer(os.path.join(workdir, "checkpoints")) as checkpointer:
    return checkpointer.restore(jax.eval_shape(model.init_state, jax.random.key(0)))


def test_sigterm_then_sigkill_at_a_random_step_resume_bit_identically(tmp_path):
  """A run stopped by SIGTERM, restarted, SIGKILLed at a random step, restarted again
  and finished ends bit-identical to a run that was never interrupted."""
  workdir = tmp_path / "run"
  cmd = _command(workdir, _OVERRIDES)
  num_steps = _OVERRIDES["num_steps"]

  # SIGTERM: the step that was running when the signal came is saved; a clean exit.
  returncode, log = cli_runs.run_until_step(cmd, 3, signal.SIGTERM)
  assert returncode == 0, log[-3000:]
  assert "SIGTERM received" in log
  stopped_at = max(cli_runs.reported_steps(log))
  with Checkpointer(workdir / "checkpoints") as checkpointer:
    saved = checkpointer.all_steps()
  assert stopped_at <= max(saved) <= stopped_at + 1 < num_steps, (saved, stopped_at,
                                                                 log[-6000:])

  # SIGKILL, at a random later step: only complete checkpoints count (a write cut
  # short is invisible), so what is lost is the steps since the newest one.
  kill_at = int(np.random.default_rng(int(time.time())).integers(max(saved) + 2, num_steps - 2))
  returncode, log = cli_runs.run_until_step(cmd, kill_at, signal.SIGKILL)
  assert returncode == -signal.SIGKILL, log[-3000:]
  assert f"Resumed from the checkpoint at step {max(saved)}" in log
  reached = max(cli_runs.reported_steps(log))
  with Checkpointer(workdir / "checkpoints") as checkpointer:
    last_saved = checkpointer.latest_step()
  assert max(saved) <= last_saved <= reached, (kill_at, reached, last_saved)

  result = subprocess.run(cmd, cwd=cli_runs.ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resumed from the checkpoint at step {last_saved}" in result.stderr

  config = jdbw_tiny.tiny_config(**_OVERRIDES)
  straight = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "straight")))
  resumed, step = _final_state(workdir, config)
  assert step == num_steps
  for a, b in zip(jax.tree_util.tree_leaves((straight.g, straight.d, straight.w)),
                  jax.tree_util.tree_leaves(jax.device_get((resumed.g, resumed.d, resumed.w)))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(jax.random.key_data(straight.rng),
                                jax.random.key_data(resumed.rng))
