"""Translates a folder of images or a tfds split with a trained JD-BW run.

  python -m jdbw_jax.translate --workdir=/tmp/jdbw_demo --input=photos/ --output=out/
  python -m jdbw_jax.translate --workdir=RUN --tfds=mnist:test --direction=x_to_y \
      --output=out/ --num_noise=8 --max_images=64

Images are resized (shorter side) and centre-cropped to the run's image size. With
--num_noise=1 each input gives one PNG of the same name; with more, one PNG row per
input: the input, then one translation per noise vector (the same vectors for all).
"""

import os

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

from i2i_jax import images
from i2i_jax.data import folders, sources, transforms
from i2i_jax.training import checkpoint, cli, runtime
from jdbw_jax.method import JDBW

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand: jdbw_jax and balagan_jax translate share flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
  flags.DEFINE_string("input", None, "Image file or folder of images to translate.")
  flags.DEFINE_string("tfds", None, "Instead of --input: a tfds dataset as NAME:SPLIT.")
  flags.DEFINE_string("data_dir", "", "tfds data_dir for --tfds.")
  flags.DEFINE_enum("direction", "x_to_y", ["x_to_y", "y_to_x"], "Translation direction.")
  flags.DEFINE_string("output", None, "Output folder.")
  flags.DEFINE_integer("num_noise", 1, "Translations per input, one per noise vector.")
  flags.DEFINE_integer("max_images", 0, "Translate at most this many inputs (0 = all).")
  flags.DEFINE_integer("batch_size", 64, "Inputs per jitted call.")
  flags.DEFINE_integer("seed", 0, "Seed of the noise vectors.")
  flags.DEFINE_integer("step", 0, "Checkpoint step to use (0 = latest).")
  flags.mark_flags_as_required(["workdir", "output"])


def load_model(workdir: str, step: int = 0):
  """(model, state) restored from the run's checkpoint (latest unless `step`)."""
  config = checkpoint.load_config(workdir)
  shape = lambda d: (d.image_size, d.image_size, d.channels)
  model = JDBW(config, shape(config.data.source), shape(config.data.target))
  return model, checkpoint.restore_state(
      workdir, jax.eval_shape(model.init_state, jax.random.key(0)), step)


def input_source(domain: ml_collections.ConfigDict, input_path, tfds_spec, data_dir):
  """A random-access source of the images to translate, and a name per record."""
  if bool(input_path) == bool(tfds_spec):
    raise app.UsageError("give exactly one of --input and --tfds")
  if tfds_spec:
    name, _, split = tfds_spec.partition(":")
    source = sources.TfdsSource(name, split or "test", data_dir=data_dir or None,
                                image_key=domain.image_key, label_key="")
    return source, [f"{i:06d}" for i in range(len(source))]
  if epath.Path(input_path).is_file():
    return (sources.ArraySource(folders.decode_image(input_path, domain.channels)[None]),
            [os.path.splitext(os.path.basename(input_path))[0]])
  source = folders.ImageFolderSource(input_path, channels=domain.channels)
  # Relative paths keep class subfolders apart (bags/1.jpg vs shoes/1.jpg).
  return source, [os.path.splitext(os.path.relpath(p, input_path))[0] for p in source.paths]


def preprocess(record, domain) -> np.ndarray:
  """Resize + centre crop to the model's size, the domain's channels, floats in [-1, 1]."""
  size = domain.image_size
  record = transforms.ToChannels(domain.channels).map(record)
  # A centred crop draws nothing from the generator; it is there for the signature.
  record = transforms.ResizeCrop(resize=size, crop=size, random=False).random_map(
      record, np.random.default_rng(0))
  return transforms.ToFloat().map(record)["image"]


def translate_all(model: JDBW, state, source, names, *, direction, output, num_noise,
                  batch_size, seed, max_images=0):
  """Writes one PNG per input; returns the number of inputs translated."""
  config = model.config
  domain = config.data.source if direction == "x_to_y" else config.data.target
  noise = np.asarray(model.sample_noise(jax.random.key(seed), num_noise))
  params, stats = state.g.params, state.g.batch_stats
  gen, key = (model.gen_xy, "xy") if direction == "x_to_y" else (model.gen_yx, "yx")
  apply = jax.jit(lambda x, z: gen.apply({"params": params[key], "batch_stats": stats[key]},
                                         x, z, update_stats=False))
  count = min(len(source), max_images) if max_images else len(source)
  for start in range(0, count, batch_size):
    idx = range(start, min(start + batch_size, count))
    x = np.stack([preprocess(source[i], domain) for i in idx])
    outs = [np.asarray(apply(x, np.repeat(noise[j:j + 1], len(x), 0)))
            for j in range(num_noise)]
    for row, i in enumerate(idx):
      if num_noise == 1:
        image = images.to_uint8(outs[0][row])
      else:
        image = images.make_grid([np.stack([x[row]] + [o[row] for o in outs])])
      images.save_png(epath.Path(output) / f"{names[i]}.png", image)  # creates `output`
  return count


def main(argv):
  del argv
  runtime.initialize()
  model, state = load_model(FLAGS.workdir, FLAGS.step)
  domain = (model.config.data.source if FLAGS.direction == "x_to_y"
            else model.config.data.target)
  source, names = input_source(domain, FLAGS.input, FLAGS.tfds, FLAGS.data_dir)
  count = translate_all(model, state, source, names, direction=FLAGS.direction,
                        output=FLAGS.output, num_noise=FLAGS.num_noise,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                        max_images=FLAGS.max_images)
  logging.info("Wrote %d translations to %s", count, FLAGS.output)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
