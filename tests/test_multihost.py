"""Multi-host training for real: 2 JAX processes on this machine (2 CPU devices each,
joined through a coordinator on 127.0.0.1, gloo collectives) train exactly what 1
process with 4 devices trains, resume from their checkpoints, and share one set of
BalaGAN modalities.

The default suite runs the mechanics in two processes (`multihost_checks.py`); the
end-to-end runs of both methods compile their steps in every process and take
minutes on 2 cores (-m slow).
"""

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import balagan_tiny
import jdbw_tiny
import multihost_launch
from balagan_jax import default_config as balagan_default_config
from config_overrides import command_line
from configs import digits_demo
from i2i_jax.training.writers import read_event_scalars

_TIMING_TAGS = ("steps_per_sec", "input_wait_fraction")


def test_two_processes_shard_reduce_checkpoint_and_share_files(tmp_path):
  outputs = multihost_launch.run(
      [sys.executable, os.path.join(multihost_launch.ROOT, "tests", "multihost_checks.py"),
       str(tmp_path)], processes=2, log_dir=str(tmp_path))
  assert [out.split()[-1:] for out in outputs] == [["OK"], ["OK"]]


def _train(module, config_file, config, base, workdir, processes):
  command = [sys.executable, *module, f"--config={config_file}", f"--workdir={workdir}",
             *command_line(config, base)]
  # Every process but 0 compiles each step anew (on CPU the compile cache's keys
  # differ by process): minutes on 2 busy cores.
  multihost_launch.run(command, processes, log_dir=str(workdir.parent), timeout=1800)


def _saved_state(directory, step):
  path = os.path.join(directory, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  return ocp.tree.to_flat_dict(checkpointer.restore(path, restore_args=as_numpy))


# Adam and RMSprop divide each gradient by its running scale, so a gradient that is
# zero but for round-off (a bias the loss does not depend on: the critic's output
# bias under a WGAN loss, a dead unit) moves its parameter by a full +-lr step whose
# sign is the round-off's; the all-reduces sum in another order across processes, so
# those signs differ. A larger eps makes every update depend continuously on its
# gradient; a real difference in the gradients (a shard missing or read twice, a
# reduction over one host's batch only) still moves the parameters at full size.
_CONTINUOUS_UPDATES = {"optim.eps": 1e-3}


def _assert_same_training(one, two, step):
  """Equal losses at every step and equal states at `step`, to float tolerance (the
  all-reduces sum in another order across processes)."""
  scalars_one, scalars_two = read_event_scalars(one / "tensorboard"), read_event_scalars(
      two / "tensorboard")
  tags = sorted(set(scalars_one) - set(_TIMING_TAGS))
  assert tags and set(tags) <= set(scalars_two)
  for tag in tags:
    assert [s for s, _ in scalars_two[tag]] == [s for s, _ in scalars_one[tag]], tag
    np.testing.assert_allclose([v for _, v in scalars_two[tag]],
                               [v for _, v in scalars_one[tag]], rtol=1e-4, atol=1e-5,
                               err_msg=tag)
  state_one, state_two = _saved_state(one, step), _saved_state(two, step)
  assert state_one.keys() == state_two.keys()
  for key in state_one:
    np.testing.assert_allclose(state_two[key], state_one[key], rtol=1e-4, atol=1e-5,
                               err_msg="/".join(key))


@pytest.mark.slow
def test_jdbw_two_processes_train_and_resume_as_one(tmp_path):
  # One-sided weights: a softmax over the global batch, split over both processes.
  def config(num_steps):
    return jdbw_tiny.tiny_config(**{"num_steps": num_steps, "batch_weight.scheme": "one_sided",
                                    "eval_every": 0, "sample_every": 2, "log_every": 1,
                                    **_CONTINUOUS_UPDATES})

  train = lambda num_steps, workdir, processes: _train(
      ["-m", "jdbw_jax.main"], "configs/digits_demo.py", config(num_steps),
      digits_demo.get_config(), workdir, processes)
  train(4, tmp_path / "one", processes=1)
  train(2, tmp_path / "two", processes=2)
  train(4, tmp_path / "two", processes=2)  # resumes from step 2
  _assert_same_training(tmp_path / "one", tmp_path / "two", step=4)
  assert sorted(os.listdir(tmp_path / "two" / "samples")) == sorted(
      os.listdir(tmp_path / "one" / "samples"))


@pytest.mark.slow
def test_balagan_two_processes_train_and_resume_as_one(tmp_path):
  # k-means differs by process here (balagan_multihost_main.py): equal training shows
  # that every host took process 0's modalities.
  train = lambda num_steps, workdir, processes: _train(
      [os.path.join(multihost_launch.ROOT, "tests", "balagan_multihost_main.py")],
      "balagan_jax/default_config.py",
      balagan_tiny.tiny_config(num_steps=num_steps, **_CONTINUOUS_UPDATES),
      balagan_default_config.get_config(), workdir, processes)
  train(4, tmp_path / "one", processes=1)
  train(2, tmp_path / "two", processes=2)
  train(4, tmp_path / "two", processes=2)  # encoder and modalities done: resumes stage 2
  with np.load(tmp_path / "one" / "modalities" / "assignment.npz") as one, \
      np.load(tmp_path / "two" / "modalities" / "assignment.npz") as two:
    np.testing.assert_array_equal(two["source_labels"], one["source_labels"])
  _assert_same_training(tmp_path / "one" / "encoder", tmp_path / "two" / "encoder",
                        step=balagan_tiny.tiny_config().encoder.num_steps)
  _assert_same_training(tmp_path / "one", tmp_path / "two", step=4)
