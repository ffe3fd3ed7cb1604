"""Bad input ends the entrypoints with one line naming the problem, not a traceback."""

import os
import re
import subprocess
import sys

import jax

import jdbw_tiny
from i2i_jax.training.checkpoint import Checkpointer
from jdbw_jax.method import JDBW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TINY = ["--config.batch_size=8", "--config.model.g_features=8", "--config.model.w_features=4",
         "--config.model.d_levels=((4, 8), (8, 8), (8, 16))"]


def _cases(tmp_path):
  """(name, extra args, text the error line must hold) for each kind of bad input."""
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  folder = ["--config.data.source.kind=folder", "--config.data.source.channels=1"]
  return [
      ("unknown key", ["--config.bach_size=8"],
       """unknown config field 'bach_size' Did you mean "batch_size\""""),
      ("wrong type", ["--config.batch_size=eight"],
       "flag --config.batch_size=eight: invalid literal for int()"),
      ("missing config file", ["--config=configs/no_such_task.py"], "configs/no_such_task.py"),
      ("unprepared tfds dataset", ["--config=configs/mnist_svhn.py",
                                   f"--config.data.source.data_dir={empty}"],
       "tfds dataset 'mnist' is not prepared in"),
      ("missing folder", folder + [f"--config.data.source.path={tmp_path / 'nope'}"],
       f"image folder {tmp_path / 'nope'} does not exist"),
      ("empty folder", folder + [f"--config.data.source.path={empty}"],
       f"no image files (.png, .jpg, .jpeg, .bmp, .webp) in {empty}"),
      ("checkpoint from another config", ["--config.model.g_features=16"],
       "(was it written with another config?): "),
  ]


def _write_tiny_checkpoint(workdir):
  """A real JD-BW state of the tiny config (g_features 8), as a finished run leaves it."""
  config = jdbw_tiny.tiny_config()
  model = JDBW(config, (32, 32, 1), (32, 32, 1))
  with Checkpointer(workdir / "checkpoints") as checkpointer:
    checkpointer.save(1, jax.jit(model.init_state)(jax.random.key(0)), force=True)


def test_bad_input_gives_one_line_errors(tmp_path):
  cases = _cases(tmp_path)
  _write_tiny_checkpoint(tmp_path / "run")
  processes = []
  for name, args, _ in cases:
    config = [a for a in args if a.startswith("--config=")] or ["--config=configs/digits_demo.py"]
    cmd = [sys.executable, "-m", "jdbw_jax.main", f"--workdir={tmp_path / 'run'}", *config,
           *_TINY, *[a for a in args if not a.startswith("--config=")]]
    processes.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
  for (name, _, expected), process in zip(cases, processes):
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (name, stderr[-3000:])
    assert "Traceback" not in stderr, (name, stderr[-3000:])
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, (name, last)
  # The last case: the arrays whose width changed are named with both shapes.
  assert re.search(r"g/batch_stats/\S+: checkpoint shape \([\d, ]*8\) != target shape \([\d, ]*16\)",
                   last), last
