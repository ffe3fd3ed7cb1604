"""BalaGAN end to end on the embedded digits: both stages, resume, the CLI."""

import glob
import os
import subprocess
import sys

import jax
import numpy as np

from balagan_jax import train
from balagan_tiny import tiny_config
from i2i_jax.training import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_both_stages_then_resume_bit_identically(tmp_path):
  """2 steps in one go == 1 step, stop, resume, 1 more (modalities are reused)."""
  config = tiny_config(num_steps=2, sample_every=0)
  straight = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "a")))
  assert os.path.exists(tmp_path / "a" / "modalities" / "assignment.npz")
  config.num_steps = 1
  train.train_and_evaluate(config, str(tmp_path / "b"))
  config.num_steps = 2
  resumed = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "b")))
  assert int(resumed.step) == 2
  for a, b in zip(jax.tree_util.tree_leaves((straight.g, straight.d, straight.g_ema)),
                  jax.tree_util.tree_leaves((resumed.g, resumed.d, resumed.g_ema))):
    np.testing.assert_array_equal(a, b)


def test_cli_runs_both_stages_and_writes_outputs(tmp_path):
  workdir = tmp_path / "run"
  # The CLI with the tiny test configuration (a config file wrapping balagan_tiny).
  cmd = [sys.executable, "-m", "balagan_jax.main", "--config=tests/balagan_tiny_config.py",
         f"--workdir={workdir}"]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert os.path.isdir(workdir / "checkpoints" / "2")
  assert os.path.exists(workdir / "modalities" / "clusters.png")
  assert glob.glob(str(workdir / "samples" / "translation_*.png"))
  scalars = writers.read_event_scalars(workdir / "tensorboard")
  for tag in ("d_loss", "g_loss", "r1", "d_cls", "g_rec", "g_fm", "steps_per_sec"):
    assert tag in scalars, (tag, sorted(scalars))
  assert "translation" in writers.read_event_image_tags(workdir / "tensorboard")


def test_translate_reference_grid_and_interpolation(tmp_path):
  from PIL import Image

  from balagan_jax import translate

  config = tiny_config(num_steps=1, sample_every=0)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  rng = np.random.default_rng(0)
  refs = tmp_path / "refs"
  refs.mkdir()
  for i in range(3):
    Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(refs / f"{i}.png")
  model, state = translate.load_model(workdir)
  domain = model.config.data.source
  sources = translate.load_images(str(refs / "0.png"), domain, 4)
  references = translate.load_images(str(refs), domain, 4)
  assert references.shape == (3, 32, 32, 3)
  grid = translate.reference_grid(model, state, sources, references)
  # (1 + 1 sources) rows x (1 + 3 references) columns of 32 px cells with 2 px padding.
  assert grid.shape == (2 * 34 + 2, 4 * 34 + 2, 3)
  walk = translate.interpolation_grid(model, state, sources, references[0], references[1], 5)
  assert walk.shape == (2 * 34 + 2, 6 * 34 + 2, 3)

  # The CLI: the same grids, from the files, interpolating towards a second reference.
  result = subprocess.run(
      [sys.executable, "-m", "balagan_jax.translate", f"--workdir={workdir}",
       f"--source={refs / '0.png'}", f"--reference={refs}", f"--reference2={refs / '1.png'}",
       "--interpolate=5", f"--output={tmp_path / 'out'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "translations.png")),
                                grid)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "interpolation.png")),
                                walk)
