"""Killing a real BalaGAN run in each stage: SIGTERM checkpoints and stops the run
(stage 1 is neither clustered nor followed by stage 2), SIGKILL loses only the steps
since the last checkpoint, and the re-runs continue the stage where it stopped. The
final encoder, modalities and translator equal an uninterrupted run's bit for bit."""

import logging
import re
import signal
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

import cli_runs
from balagan_jax import train
from balagan_jax.modalities import Modalities, assignment_path
from config_overrides import apply_overrides
from configs import balagan_digits_demo

ENCODER_STEPS, TRANSLATION_STEPS = 12, 8
# The offline demo, shrunk to seconds.
_OVERRIDES = {
    "data.source.split": "train[:200]", "data.target.split": "train[200:240]",
    "encoder.batch_size": 16, "encoder.width": 4, "encoder.stage_sizes": (1, 1),
    "encoder.projection_dim": 8, "encoder.num_steps": ENCODER_STEPS, "encoder.log_every": 1,
    "encoder.checkpoint_every": 3, "modalities.kmeans_iters": 5,
    "modalities.kmeans_restarts": 2, "modalities.grid_samples": 4, "model.nf": 4,
    "model.nf_mlp": 8, "model.latent_dim": 4, "model.num_res_blocks": 1, "model.d_nf": 4,
    "model.d_num_res_blocks": 2, "batch_size": 4, "num_steps": TRANSLATION_STEPS,
    "log_every": 1, "checkpoint_every": 3, "sample_every": 0, "eval_every": 0,
    "num_samples": 4,
}
# Progress lines of each stage, told apart by their totals.
_ENCODER_LINE = re.compile(rf"step (\d+)/{ENCODER_STEPS} ")
_TRANSLATION_LINE = re.compile(rf"step (\d+)/{TRANSLATION_STEPS} ")


def _command(workdir):
  cmd = [sys.executable, "-m", "balagan_jax.main", "--config=configs/balagan_digits_demo.py",
         f"--workdir={workdir}"]
  return cmd + [f"--config.{key}={value}" for key, value in _OVERRIDES.items()]


def _saved_steps(directory) -> list[int]:
  directory = epath.Path(directory)
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
      directory.exists()) else []


def _kill(cmd, line, step, sig, saved_dir):
  """Kills `cmd` at `step` of the stage `line` reports; returns (its last complete
  checkpoint's step or 0, log)."""
  returncode, log = cli_runs.run_until_step(cmd, step, sig, line)
  assert returncode == (0 if sig == signal.SIGTERM else -sig), log[-3000:]
  reached = max(cli_runs.reported_steps(log, line))
  saved = _saved_steps(saved_dir)
  if sig == signal.SIGTERM:
    assert "SIGTERM received" in log and reached <= saved[-1] <= reached + 1, (saved, log[-3000:])
  return (saved or [0])[-1], log


def _final_arrays(workdir) -> list[np.ndarray]:
  """The encoder's and the translator's last saved states, and the modalities."""
  workdir = epath.Path(workdir)
  leaves = []
  for directory, steps in ((workdir / "encoder" / "checkpoints", ENCODER_STEPS),
                           (workdir / "checkpoints", TRANSLATION_STEPS)):
    assert _saved_steps(directory)[-1] == steps
    with ocp.StandardCheckpointer() as checkpointer:
      leaves += jax.tree_util.tree_leaves(checkpointer.restore(directory / str(steps) / "state"))
  mods = Modalities.load(assignment_path(workdir))
  return [_key_data(leaf) for leaf in leaves] + [mods.source_labels, mods.target_labels]


def _key_data(leaf):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(leaf)
  return leaf


@pytest.mark.parametrize("stage1_signal, stage2_signal", [
    (signal.SIGTERM, signal.SIGKILL),
    pytest.param(signal.SIGKILL, signal.SIGTERM, marks=pytest.mark.slow),
])
def test_killed_in_each_stage_resumes_bit_identically(tmp_path, caplog, stage1_signal,
                                                      stage2_signal):
  workdir = tmp_path / "run"
  cmd = _command(workdir)
  rng = np.random.default_rng(int(time.time()))

  encoder_kept, log = _kill(cmd, _ENCODER_LINE, int(rng.integers(4, 10)), stage1_signal,
                            workdir / "encoder" / "checkpoints")
  assert encoder_kept < ENCODER_STEPS
  assert not assignment_path(workdir).exists()
  assert not _TRANSLATION_LINE.search(log)

  kept, log = _kill(cmd, _TRANSLATION_LINE, int(rng.integers(4, 7)), stage2_signal,
                    workdir / "checkpoints")
  if encoder_kept:
    assert f"Modality encoder: resumed from step {encoder_kept} " in log, log[-3000:]
  assert kept < TRANSLATION_STEPS

  # The last re-run, in this process: it shares the uninterrupted run's compilations.
  config = apply_overrides(balagan_digits_demo.get_config(), _OVERRIDES)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(workdir))
  if kept:
    assert f"Resumed from the checkpoint at step {kept}" in caplog.text
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  for a, b in zip(_final_arrays(tmp_path / "straight"), _final_arrays(workdir), strict=True):
    np.testing.assert_array_equal(a, b)
