"""gs:// workdirs and data against a GCS emulator (the `gcs` fixture, conftest.py).

The training CLIs run as real subprocesses on a bucket: killed with SIGKILL mid-way
and restarted, a run ends equal to an uninterrupted local one; the evaluation and
translation CLIs then read the same bucket; training also reads an image folder and
a tfds data_dir from one.
"""

import json
import signal
import subprocess
import sys

import jax
import numpy as np
from etils import epath
from PIL import Image

import cli_runs
import jdbw_tiny
from configs import digits_demo
from i2i_jax.training import checkpoint, writers
from jdbw_jax import train as jdbw_train
from jdbw_jax.method import JDBW

_JDBW = {"num_steps": 6, "checkpoint_every": 2, "log_every": 1, "sample_every": 3,
         "eval_every": 0, "eval.classifier_steps": 2}


def _run(cmd) -> str:
  result = subprocess.run(cmd, cwd=cli_runs.ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stderr


def _kill_and_resume(cmd, kill_at: int) -> int:
  """Runs `cmd`, SIGKILLs it once it reports step `kill_at`, runs it again to the end;
  returns the step the second run resumed from."""
  returncode, log = cli_runs.run_until_step(cmd, kill_at, signal.SIGKILL)
  assert returncode == -signal.SIGKILL, log[-4000:]
  log = _run(cmd)
  resumed = [int(w.split()[-1].rstrip(".")) for w in log.splitlines()
             if "Resumed from the checkpoint at step" in w]
  assert resumed and 0 < resumed[0] <= kill_at, log[-4000:]
  return resumed[0]


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _write_pngs(folder, count: int, size: int = 32):
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  for i in range(count):
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")


def test_jdbw_gs_workdir_resumes_after_sigkill_and_serves_evaluate_and_translate(
    gcs, tmp_path):
  workdir = epath.Path(gcs.create_bucket("jdbw")) / "run"
  config = jdbw_tiny.tiny_config(**_JDBW)
  cmd = cli_runs.command("jdbw_jax.main", "configs/digits_demo.py", workdir,
                         digits_demo.get_config(), config)
  _kill_and_resume(cmd, kill_at=5)

  straight = jax.device_get(jdbw_train.train_and_evaluate(config, str(tmp_path / "local")))
  model = JDBW(config, (32, 32, 1), (32, 32, 1))
  resumed = checkpoint.restore_state(workdir, jax.eval_shape(model.init_state,
                                                             jax.random.key(0)))
  _assert_trees_equal((straight.g, straight.d, straight.w, jax.random.key_data(straight.rng)),
                      (resumed.g, resumed.d, resumed.w, jax.random.key_data(resumed.rng)))
  assert int(resumed.step) == _JDBW["num_steps"]
  assert checkpoint.load_config(workdir).num_steps == _JDBW["num_steps"]
  assert {"x_to_y_0000003.png", "x_to_y_0000006.png"} <= {
      p.name for p in (workdir / "samples").iterdir()}
  scalars = writers.read_event_scalars(workdir / "tensorboard")
  assert {step for step, _ in scalars["g_loss"]} == set(range(1, _JDBW["num_steps"] + 1))

  _run([sys.executable, "-m", "jdbw_jax.evaluate", f"--workdir={workdir}", "--num_eval=16",
        "--inception_weights="])
  metrics = json.loads((workdir / "eval" / "step_0000006" / "metrics.json").read_text())
  assert 0 <= metrics["metrics"]["class_match_x_to_y"] <= 1

  _write_pngs(tmp_path / "inputs", 3)
  _run([sys.executable, "-m", "jdbw_jax.translate", f"--workdir={workdir}",
        f"--input={tmp_path / 'inputs'}", f"--output={tmp_path / 'out'}"])
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
