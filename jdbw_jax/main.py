"""JD-BW entrypoint.

  python -m jdbw_jax.main --config=configs/digits_demo.py --workdir=/tmp/jdbw
  python -m jdbw_jax.main --config=configs/mnist_svhn.py --workdir=gs://bucket/run \
      --config.batch_size=256

Re-using a workdir resumes the run from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from i2i_jax import platform
from jdbw_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  platform.initialize()
  logging.info("Config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
