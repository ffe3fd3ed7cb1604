"""gs:// workdirs and data against a GCS emulator (the `gcs` fixture, conftest.py).

The training CLIs run as real subprocesses on a bucket: killed with SIGKILL mid-way
and restarted, a run ends equal to an uninterrupted local one; the evaluation and
translation CLIs then read the same bucket; training also reads an image folder and
a tfds data_dir (array_record) from one.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from PIL import Image

import balagan_tiny
import cli_runs
import gcs_emulator
import jdbw_tiny
import tiny_tfds_builder
from balagan_jax import modalities
from balagan_jax import train as balagan_train
from balagan_jax.method import BalaGAN
from configs import balagan_digits_demo
from i2i_jax.data import domains
from i2i_jax.training import checkpoint, writers
from jdbw_jax import train as jdbw_train
from jdbw_jax.method import JDBW

_JDBW = {"num_steps": 6, "checkpoint_every": 2, "log_every": 1, "sample_every": 3,
         "eval_every": 0, "eval.classifier_steps": 2}
_DEMO_TARGET = balagan_digits_demo.get_config().data.target
_BALAGAN = {"num_steps": 6, "checkpoint_every": 2, "sample_every": 3,
            "eval.classifier_steps": 2, "num_eval": 8,
            # The demo's amber-on-navy domain B (flags cannot unset it).
            "data.target.colorize_foreground": _DEMO_TARGET.colorize_foreground,
            "data.target.colorize_background": _DEMO_TARGET.colorize_background}


def _run(cmd) -> str:
  result = subprocess.run(cmd, cwd=cli_runs.ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stderr


def _kill_and_resume(gcs, main: str, config_file: str, config, workdir: epath.Path) -> None:
  """Runs training CLI `main` with `config_file` overridden to `config`, SIGKILLs it
  while its final checkpoint is being written to the bucket (held there by a
  HoldingProxy, so the kill cannot come too late), and runs it again to the end, which
  must resume from the checkpoint before."""
  cmd = cli_runs.command(main, config_file, workdir, config)
  prefix = str(workdir).removeprefix("gs://").split("/", 1)[1]  # the objects' names
  run = re.escape(prefix).replace("/", "(?:/|%2F)")
  final = re.compile(rf"{run}(?:/|%2F)checkpoints(?:/|%2F){config.num_steps}(?:[./]|%2F)".encode(),
                     re.IGNORECASE)
  proxy = gcs_emulator.HoldingProxy(gcs, final)
  try:
    with tempfile.TemporaryFile("w+") as log:
      process = subprocess.Popen(cmd, cwd=cli_runs.ROOT, env={**os.environ, **proxy.env},
                                 stdout=subprocess.DEVNULL, stderr=log, text=True)
      while not proxy.held.wait(timeout=1) and process.poll() is None:
        pass
      process.kill()
      process.wait(timeout=60)
      log.seek(0)
      assert proxy.held.is_set(), log.read()[-4000:]
  finally:
    proxy.close()
  log = _run(cmd)
  resumed = [int(w.split()[-1].rstrip(".")) for w in log.splitlines()
             if "Resumed from the checkpoint at step" in w]
  assert resumed == [config.num_steps - config.checkpoint_every], log[-4000:]


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _write_pngs(folder, count: int, size: int = 32):
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  for i in range(count):
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")


def test_event_files_on_gs_hold_every_flushed_event(gcs):
  logdir = epath.Path(gcs.create_bucket("events")) / "tensorboard"
  writer = writers.MetricWriter(logdir)
  writer.write_scalars(1, {"loss": 1.0})
  writer.flush()
  assert writers.read_event_scalars(logdir) == {"loss": [(1, 1.0)]}
  writer.write_scalars(2, {"loss": 2.0})
  writer.close()
  assert writers.read_event_scalars(logdir) == {"loss": [(1, 1.0), (2, 2.0)]}
  assert len(list(logdir.iterdir())) == 2  # one file per flush


def test_jdbw_gs_workdir_resumes_after_sigkill_and_serves_evaluate_and_translate(
    gcs, tmp_path):
  workdir = epath.Path(gcs.create_bucket("jdbw")) / "run"
  config = jdbw_tiny.tiny_config(**_JDBW)
  _kill_and_resume(gcs, "jdbw_jax.main", "configs/digits_demo.py", config, workdir)

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
  _upload(tmp_path / "inputs", workdir.parent / "inputs")
  _run([sys.executable, "-m", "jdbw_jax.translate", f"--workdir={workdir}",
        f"--input={workdir.parent / 'inputs'}", f"--output={tmp_path / 'out'}"])
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]


def test_balagan_gs_workdir_resumes_after_sigkill_and_serves_evaluate_and_translate(
    gcs, tmp_path):
  workdir = epath.Path(gcs.create_bucket("balagan")) / "run"
  config = balagan_tiny.tiny_config(**_BALAGAN)
  # Killed in stage 2: the encoder's checkpoints are under encoder/.
  _kill_and_resume(gcs, "balagan_jax.main", "configs/balagan_digits_demo.py", config, workdir)

  straight = jax.device_get(balagan_train.train_and_evaluate(config, str(tmp_path / "local")))
  mods = modalities.Modalities.load(modalities.assignment_path(workdir))
  local_mods = modalities.Modalities.load(modalities.assignment_path(tmp_path / "local"))
  np.testing.assert_array_equal(mods.source_labels, local_mods.source_labels)
  model = BalaGAN(config, modalities.num_training_modalities(config, mods), (32, 32, 3))
  resumed = checkpoint.restore_state(workdir, jax.eval_shape(model.init_state,
                                                             jax.random.key(config.seed)))
  _assert_trees_equal((straight.g, straight.d, straight.g_ema),
                      (resumed.g, resumed.d, resumed.g_ema))
  assert json.loads((workdir / "modalities" / "summary.json").read_text())["k_source"] == (
      mods.k_source)
  assert (workdir / "modalities" / "clusters.png").exists()
  assert (workdir / "encoder" / "checkpoints").exists()
  assert "translation_0000003.png" in {p.name for p in (workdir / "samples").iterdir()}
  steps = {step for step, _ in writers.read_event_scalars(workdir / "tensorboard")["g_loss"]}
  assert steps == set(range(1, _BALAGAN["num_steps"] + 1))

  _run([sys.executable, "-m", "balagan_jax.evaluate", f"--workdir={workdir}",
        "--inception_weights="])
  metrics = json.loads((workdir / "eval" / "step_0000006" / "metrics.json").read_text())
  assert metrics["step"] == _BALAGAN["num_steps"]

  _write_pngs(tmp_path / "refs", 2)
  _run([sys.executable, "-m", "balagan_jax.translate", f"--workdir={workdir}",
        f"--source={tmp_path / 'refs' / '0.png'}", f"--reference={tmp_path / 'refs'}",
        f"--output={workdir / 'translated'}"])
  assert (workdir / "translated" / "translations.png").exists()


def _files(directory: epath.Path) -> list[epath.Path]:
  """Every file under `directory` (epath refuses `**` on gs://)."""
  return [f for p in directory.iterdir() for f in (_files(p) if p.is_dir() else [p])]


def _upload(local, remote: epath.Path) -> None:
  for path in sorted(local.rglob("*")):
    if path.is_file():
      target = remote / path.relative_to(local).as_posix()
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(path.read_bytes())


def test_training_reads_an_image_folder_and_a_tfds_data_dir_from_a_bucket(gcs, tmp_path):
  """Domain x: class subfolders of PNGs; domain y: tiny_digits as array_record; both
  under gs:// read exactly as their local copies, and a JD-BW run trains on them."""
  bucket = epath.Path(gcs.create_bucket("data"))
  for label in (0, 1):
    _write_pngs(tmp_path / "folder" / str(label), 10, size=28)
  tiny_tfds_builder.prepare(str(tmp_path / "tfds"))
  _upload(tmp_path / "folder", bucket / "folder")
  _upload(tmp_path / "tfds", bucket / "tfds")

  config = jdbw_tiny.tiny_config(**{"num_steps": 2, "sample_every": 0, "eval_every": 0,
                                    "eval.classifier_steps": 0})
  config.data.source.update(kind="folder", path=str(bucket / "folder"), split="all")
  config.data.target.update(kind="tfds", name="tiny_digits", data_dir=str(bucket / "tfds"),
                            split="train", class_probs=None)
  for domain, local in ((config.data.source, {"path": str(tmp_path / "folder")}),
                        (config.data.target, {"data_dir": str(tmp_path / "tfds")})):
    remote_source = domains.build_source(domain)
    local_source = domains.build_source(ml_collections.ConfigDict(
        {**domain.to_dict(), **local}))
    assert len(remote_source) == len(local_source) > 0
    np.testing.assert_array_equal(remote_source.all_labels(), local_source.all_labels())
    np.testing.assert_array_equal(remote_source[len(remote_source) - 1]["image"],
                                  local_source[len(local_source) - 1]["image"])
  state = jdbw_train.train_and_evaluate(config, str(bucket / "run"))
  assert int(state.step) == 2


def test_a_damaged_checkpoint_in_a_bucket_is_set_aside(gcs):
  """The local damage test (test_checkpoint.py) on a bucket, where a step directory is
  only a name prefix: setting it aside moves every object under it."""
  directory = epath.Path(gcs.create_bucket("damaged")) / "checkpoints"

  def state(seed):
    return {"w": jnp.arange(4096, dtype=jnp.float32) + seed}

  with checkpoint.Checkpointer(directory) as ckpt:
    ckpt.save(1, state(1))
    ckpt.save(2, state(2))
  largest = max(_files(directory / "2" / "state"),
                key=lambda p: len(p.read_bytes()))  # the array's bytes; metadata is small
  data = bytearray(largest.read_bytes())
  data[len(data) // 2] ^= 0x01
  largest.write_bytes(bytes(data))
  with checkpoint.Checkpointer(directory) as ckpt:
    restored, step = ckpt.restore(state(0))
    assert step == 1 and ckpt.all_steps() == [1]
  np.testing.assert_array_equal(restored["w"], state(1)["w"])
  (aside,) = (directory / "corrupt").glob("2-*")
  assert (aside / "state").exists() and not (directory / "2").exists()
