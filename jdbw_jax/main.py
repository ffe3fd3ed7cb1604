"""JD-BW entrypoint.

  python -m jdbw_jax.main --config=configs/digits_demo.py --workdir=/tmp/jdbw
  python -m jdbw_jax.main --config=configs/mnist_svhn.py --workdir=gs://bucket/run \
      --config.batch_size=256

Re-using a workdir resumes the run from its latest checkpoint.
"""

from i2i_jax.training import cli
from jdbw_jax import train

if __name__ == "__main__":
  cli.run_training(train.train_and_evaluate)
