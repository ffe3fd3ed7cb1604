"""Input pipeline throughput: can the data keep a training step fed?

Times the streams training reads (grain: read and decode, re-sample, augment, batch)
through the device prefetcher (shard, put on the device), exactly as `jdbw_jax.train`
and `balagan_jax.train` build them, and prints how many training steps per second
they sustain, to set beside the step benchmarks' figures:

  python benchmarks/input_throughput.py --method=balagan --config=configs/afd_dogs_wolves.py
  python benchmarks/input_throughput.py --method=jdbw --config=configs/digits_demo.py
  # Offline: both domains replaced by folders of generated 512x512 JPEGs
  python benchmarks/input_throughput.py --method=balagan --config=configs/afd_dogs_wolves.py \\
      --fake_images=2000 --config.data.source.num_workers=4

BalaGAN's translation stage reads a modality-labelled union of both domains; here
the source images get random modalities (the pipeline's cost does not depend on
which). If the pipeline's steps/s are below the step benchmark's, raise
`--config.data.source.read_threads` or `num_workers` (the target's for JD-BW too).
"""

import json
import os
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from balagan_jax import clustering, modalities
from balagan_jax import train as balagan_train
from i2i_jax.data import domains, pipeline
from i2i_jax.training import sharding, trainer
from jdbw_jax import train as jdbw_train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "JD-BW or BalaGAN config.")
flags.mark_flag_as_required("config")
flags.DEFINE_enum("method", "balagan", ["jdbw", "balagan"], "Whose training streams.")
flags.DEFINE_integer("steps", 50, "Timed steps' worth of batches.")
flags.DEFINE_integer("warmup", 5, "Untimed batches first (threads and workers start).")
flags.DEFINE_integer("fake_images", 0,
                     "If > 0, read both domains from folders of this many generated JPEGs.")
flags.DEFINE_integer("fake_size", 512, "Side of the generated JPEGs (AFHQ's is 512).")
flags.DEFINE_string("output", None, "Also write the figures here, as JSON.")


def write_fake_folder(root: str, count: int, size: int, seed: int) -> str:
  """`count` smooth random colour JPEGs (photo-like file sizes, unlike white noise)."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    coarse = rng.integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    image.save(os.path.join(root, f"{i:06d}.jpg"), quality=90)
  return root


def use_fake_folders(config, tmp: str) -> None:
  for offset, domain in enumerate((config.data.source, config.data.target)):
    domain.kind, domain.split, domain.max_records = "folder", "all", 0
    domain.path = write_fake_folder(os.path.join(tmp, f"domain{offset}"), FLAGS.fake_images,
                                    FLAGS.fake_size, seed=offset)


def jdbw_batches(config, mesh):
  """(batches, images per step as the step benchmark counts them, images read per step)."""
  batches = trainer.device_batches(jdbw_train.make_streams(config), jdbw_train.put_batch, mesh)
  return batches, config.batch_size, 2 * (config.d_steps + 1) * config.batch_size


def balagan_batches(config, mesh):
  num_source = len(domains.build_source(config.data.source))
  num_target = len(domains.build_source(config.data.target))
  k_source = int(config.modalities.k_source) or clustering.choose_k(num_source, num_target)
  k_source = min(k_source, num_source)
  # Every modality non-empty, as k-means leaves them.
  labels = np.random.default_rng(0).permutation(np.arange(num_source) % k_source)
  mods = modalities.Modalities(labels, np.full(num_target, k_source), k_source, 1, "random")
  num_modalities = modalities.num_training_modalities(config, mods)
  union = balagan_train.modality_union(config, mods)
  streams = balagan_train.make_streams(config, union, num_modalities)
  batches = trainer.device_batches(streams, balagan_train.put_batch, mesh)
  return batches, config.batch_size, 2 * config.batch_size


def main(argv):
  del argv
  config = FLAGS.config
  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.fake_images:
      t = time.perf_counter()
      use_fake_folders(config, tmp)
      print(f"wrote 2 x {FLAGS.fake_images} {FLAGS.fake_size}x{FLAGS.fake_size} JPEGs in "
            f"{time.perf_counter() - t:.1f} s")
    mesh = sharding.make_data_mesh()
    t = time.perf_counter()
    build = jdbw_batches if FLAGS.method == "jdbw" else balagan_batches
    batches, images_per_step, read_per_step = build(config, mesh)
    with batches:
      jax.block_until_ready(next(batches))
      first_s = time.perf_counter() - t
      for _ in range(FLAGS.warmup):
        jax.block_until_ready(next(batches))
      t = time.perf_counter()
      for _ in range(FLAGS.steps):
        jax.block_until_ready(next(batches))
      step_s = (time.perf_counter() - t) / FLAGS.steps
  source = config.data.source
  in_memory = pipeline.held_in_memory(source)
  print("\n".join([
      f"== {FLAGS.method} input pipeline: {domains.describe_domain(source)} -> "
      f"{source.image_size}x{source.image_size}, augment {source.augment!r}, batch "
      f"{config.batch_size}, "
      + ("held in memory, read by batch" if in_memory else "read record by record")
      + f", read_threads {pipeline.read_threads(source)}, num_workers "
      f"{pipeline.num_workers(source, in_memory=in_memory)}",
      f"device            {jax.devices()[0].platform} x{jax.device_count()}",
      f"first batch       {first_s:.2f} s (sources listed and checked, streams started)",
      f"per step          {1e3 * step_s:.2f} ms ({read_per_step} images read and put on "
      "the device)",
      f"sustains          {1 / step_s:.2f} steps/s = {images_per_step / step_s:.1f} images/s "
      "as the step benchmark counts them",
      f"decode rate       {read_per_step / step_s:.1f} images/s",
  ]))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"device": f"{jax.devices()[0].platform} x{jax.device_count()}",
                 "first_batch_s": first_s, "ms_per_step": 1e3 * step_s,
                 "steps_per_s": 1 / step_s, "images_per_s": images_per_step / step_s,
                 "decode_images_per_s": read_per_step / step_s}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
