"""The training entrypoints' shared command line: --config (ml_collections) and --workdir."""

from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from i2i_jax import platform

FLAGS = flags.FLAGS


def run_training(train_and_evaluate: Callable) -> None:
  """Defines --config/--workdir, then runs `train_and_evaluate(config, workdir)`.

  `lock_config` makes a misspelt override (--config.bach_size=8) fail at once.
  """
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and "
                      "samples; re-using it resumes the run.")
  config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    platform.initialize()
    logging.info("Config:\n%s", FLAGS.config)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)

  app.run(main)
