"""BalaGAN entrypoint: modality discovery, then the translation network.

  python -m balagan_jax.main --config=configs/balagan_digits_demo.py --workdir=/tmp/balagan
  python -m balagan_jax.main --config=configs/afd_dogs_wolves.py --workdir=RUN \
      --config.stage=modalities

Re-using a workdir resumes: a finished stage is loaded, an unfinished one continues.
"""

from balagan_jax import train
from i2i_jax.training import cli

if __name__ == "__main__":
  cli.run_training(train.train_and_evaluate)
