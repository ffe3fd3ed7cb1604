"""BalaGAN training throughput on whatever device is present.

Times the real jitted steps on synthetic batches after warm-up:

  python benchmarks/balagan_throughput.py --config=configs/afd_dogs_wolves.py            # translation, 128x128, B=10
  python benchmarks/balagan_throughput.py --config=configs/afd_dogs_wolves.py --part=encoder  # SimCLR step, B=256
  python benchmarks/balagan_throughput.py --config=configs/balagan_digits_demo.py --steps=3    # CPU-sized

The translation step is one D update, one G update and the EMA (the authors' order);
images/s counts the batch's source images per step.
"""

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from balagan_jax import modalities
from balagan_jax.steps import BalaGAN
from i2i_jax import benchmark, sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/afd_dogs_wolves.py", "BalaGAN config.")
flags.DEFINE_enum("part", "translation", ["translation", "encoder"], "Which step to time.")
flags.DEFINE_integer("num_classes", 41, "Modalities k + 1 (AFD: 40 + 1).")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")


def main(argv):
  del argv
  config = FLAGS.config
  size, channels = config.data.source.image_size, config.data.source.channels
  rng = np.random.default_rng(0)
  if FLAGS.part == "translation":
    model = BalaGAN(config, FLAGS.num_classes, (size, size, channels))
    state = jax.jit(model.init_state)(jax.random.key(0))
    domain = lambda: {
        "image": rng.uniform(-1, 1, (config.batch_size, size, size, channels)).astype(np.float32),
        "label": rng.integers(0, FLAGS.num_classes, config.batch_size).astype(np.int32)}
    batch, step_fn, images = {"content": domain(), "reference": domain()}, model.train_step, \
        config.batch_size
    title = (f"BalaGAN translation step {size}x{size}, batch {config.batch_size}, "
             f"{FLAGS.num_classes} modalities, {config.compute_dtype}")
  else:
    mesh = sharding.make_data_mesh()
    state = modalities.init_encoder_state(config, (size, size, channels))
    batch = {"image": rng.uniform(-1, 1, (config.encoder.batch_size, size, size, 3)).astype(
        np.float32)}
    step_fn, images = modalities.make_encoder_step(config, mesh), config.encoder.batch_size
    title = f"BalaGAN contrastive encoder step {size}x{size}, batch {images} (two views each)"
  figures = benchmark.time_step(step_fn, state, batch, steps=FLAGS.steps, warmup=FLAGS.warmup)
  print(benchmark.format_results(title, figures, images_per_step=images))


if __name__ == "__main__":
  app.run(main)
