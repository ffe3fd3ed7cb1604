"""End-to-end JD-BW training on the embedded digits: resume and the CLI."""

import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jdbw_tiny
from i2i_jax.training import writers
from jdbw_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # The default suite resumes a SIGKILLed run instead (test_preemption.py).
def test_resume_continues_bit_identically(tmp_path):
  """4 steps in one go == 2 steps, stop, resume in the same workdir, 2 more steps."""
  config = jdbw_tiny.tiny_config(**{"num_steps": 4, "checkpoint_every": 2,
                                    "eval.classifier_steps": 0, "sample_every": 0})
  straight = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "straight")))
  config.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.num_steps = 4
  resumed = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "resumed")))
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree_util.tree_leaves((straight.g, straight.d, straight.w)),
                  jax.tree_util.tree_leaves((resumed.g, resumed.d, resumed.w))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(jax.random.key_data(straight.rng),
                                jax.random.key_data(resumed.rng))


def test_cli_runs_and_writes_checkpoint_events_and_grids(tmp_path):
  workdir = tmp_path / "run"
  overrides = {
      "batch_size": 8, "d_steps": 1, "num_steps": 2, "log_every": 1, "sample_every": 2,
      "eval_every": 2, "checkpoint_every": 1, "num_samples": 4, "num_eval": 32,
      "model.g_features": 8, "model.w_features": 4, "eval.classifier_steps": 2,
      "eval.classifier_batch": 16,
  }
  cmd = [sys.executable, "-m", "jdbw_jax.main", "--config=configs/digits_demo.py",
         f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd.append("--config.model.d_levels=((4, 8), (8, 8), (8, 16))")
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert os.path.isdir(workdir / "checkpoints" / "2")
  scalars = writers.read_event_scalars(workdir / "tensorboard")
  for tag in ("g_loss", "d_loss", "w_loss", "gp", "weight_x_ratio", "class_share_y/0",
              "eval/class_match_x_to_y", "steps_per_sec", "input_wait_fraction"):
    assert tag in scalars, (tag, sorted(scalars))
  assert {"x_to_y", "y_to_x_fixed_noise"} <= writers.read_event_image_tags(
      workdir / "tensorboard")
  assert glob.glob(str(workdir / "samples" / "x_to_y_*.png"))
  assert "step 2/2" in result.stderr


def test_translate_folder_writes_one_png_per_input_and_the_cli_does_too(tmp_path):
  from PIL import Image

  from jdbw_jax import translate

  config = jdbw_tiny.tiny_config(**{"num_steps": 1, "eval.classifier_steps": 0,
                                    "sample_every": 0})
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  inputs = tmp_path / "inputs" / "sevens"
  inputs.mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(inputs / "a.png")
  Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(inputs / "b.jpg")
  model, state = translate.load_model(workdir)
  source, names = translate.input_source(config.data.source, str(tmp_path / "inputs"), None, "")
  count = translate.translate_all(model, state, source, names, direction="x_to_y",
                                  output=str(tmp_path / "out"), num_noise=3, batch_size=2,
                                  seed=0)
  assert count == 2
  grid = np.asarray(Image.open(tmp_path / "out" / "sevens" / "b.png"))
  assert grid.shape[1] > 4 * 32  # the input and three translations side by side

  # The CLI, the other way round with one noise vector: one translation per input.
  translate.translate_all(model, state, source, names, direction="y_to_x",
                          output=str(tmp_path / "expected"), num_noise=1, batch_size=2, seed=0)
  result = subprocess.run(
      [sys.executable, "-m", "jdbw_jax.translate", f"--workdir={workdir}",
       f"--input={tmp_path / 'inputs'}", "--direction=y_to_x", "--num_noise=1",
       f"--output={tmp_path / 'cli'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("a", "b"):
    written = np.asarray(Image.open(tmp_path / "cli" / "sevens" / f"{name}.png"))
    assert written.shape == (32, 32)  # domain X's size and channels
    np.testing.assert_array_equal(
        written, np.asarray(Image.open(tmp_path / "expected" / "sevens" / f"{name}.png")))
