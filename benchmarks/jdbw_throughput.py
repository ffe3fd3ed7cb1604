"""JD-BW training throughput on whatever device is present.

Times the real jitted train step (one generator step with its d scanned critic steps)
on synthetic batches after warm-up.

  python benchmarks/jdbw_throughput.py --config=configs/mnist_srmnist.py        # 32x32, B=128, d=5
  python benchmarks/jdbw_throughput.py --config=configs/edges_shoesbags.py      # 128x128, B=6, d=2
  python benchmarks/jdbw_throughput.py --config=configs/digits_demo.py --steps=3   # CPU-sized

Images/s counts the source images of the generator step; the d critic steps consume
d more batches per domain, so data throughput is (d + 1) times higher.
"""

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from i2i_jax import benchmark
from jdbw_jax.steps import JDBW

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/mnist_srmnist.py", "JD-BW config.")
flags.DEFINE_integer("steps", 10, "Timed generator steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")


def synthetic_batch(config, shape, channels_y):
  rng = np.random.default_rng(0)
  lead = (config.d_steps + 1, config.batch_size)

  def domain(c):
    return {"image": rng.uniform(-1, 1, lead + shape + (c,)).astype(np.float32),
            "label": rng.integers(0, max(config.data.num_classes, 1), lead).astype(np.int32)}

  return {"x": domain(config.data.source.channels), "y": domain(channels_y)}


def main(argv):
  del argv
  config = FLAGS.config
  size = config.data.source.image_size
  model = JDBW(config, (size, size, config.data.source.channels),
               (size, size, config.data.target.channels))
  state = model.init_state(jax.random.key(0))
  batch = synthetic_batch(config, (size, size), config.data.target.channels)
  figures = benchmark.time_step(model.train_step, state, batch, steps=FLAGS.steps,
                                warmup=FLAGS.warmup)
  title = (f"JD-BW {size}x{size}, batch {config.batch_size}, {config.d_steps} critic steps per "
           f"generator step, {config.compute_dtype}")
  print(benchmark.format_results(title, figures, images_per_step=config.batch_size))


if __name__ == "__main__":
  app.run(main)
