"""BalaGAN entrypoint: modality discovery, then the translation network.

  python -m balagan_jax.main --config=configs/balagan_digits_demo.py --workdir=/tmp/balagan
  python -m balagan_jax.main --config=configs/afd_dogs_wolves.py --workdir=RUN \
      --config.stage=modalities

Re-using a workdir resumes: a finished stage is loaded, an unfinished one continues.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from balagan_jax import train
from i2i_jax import platform

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, modalities, events, samples.")
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
