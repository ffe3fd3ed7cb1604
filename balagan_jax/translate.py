"""Reference-guided BalaGAN inference: translate sources in the style of references.

  python -m balagan_jax.translate --workdir=RUN --source=dog.jpg --reference=wolves/ \
      --output=out/
  python -m balagan_jax.translate --workdir=RUN --source=dogs/ --reference=wolf1.jpg \
      --reference2=wolf2.jpg --interpolate=8 --output=out/

Writes grids: the first row holds the references, the first column the sources, each
cell G(source, reference) with the EMA generator. With --reference2 and --interpolate,
each row instead walks the style code from reference to reference2 in N steps
(Figure 14). Images are resized (shorter side) and centre-cropped to the run's size.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from etils import epath

from balagan_jax import modalities as modalities_lib
from balagan_jax.method import BalaGAN
from i2i_jax import images
from i2i_jax.data import folders, sources, transforms
from i2i_jax.training import checkpoint, cli, runtime

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand: jdbw_jax and balagan_jax translate share flag names."""
  flags.DEFINE_string("workdir", None, "BalaGAN training workdir.")
  flags.DEFINE_string("source", None, "Source image or folder.")
  flags.DEFINE_string("reference", None, "Reference (style) image or folder.")
  flags.DEFINE_string("reference2", None, "Second reference for style interpolation.")
  flags.DEFINE_integer("interpolate", 0, "Interpolation steps between the two references.")
  flags.DEFINE_string("output", None, "Output folder.")
  flags.DEFINE_integer("max_images", 8, "At most this many sources and references.")
  flags.mark_flags_as_required(["workdir", "source", "reference", "output"])


def load_model(workdir: str, step: int = 0):
  """(model, state) of a run: its config, modality count and checkpoint (latest unless
  `step`)."""
  config = checkpoint.load_config(workdir)
  mods = modalities_lib.Modalities.load(modalities_lib.assignment_path(workdir))
  domain = config.data.source
  model = BalaGAN(config, modalities_lib.num_training_modalities(config, mods),
                  (domain.image_size, domain.image_size, domain.channels))
  return model, checkpoint.restore_state(
      workdir, jax.eval_shape(model.init_state, jax.random.key(config.seed)), step)


def load_images(path: str, domain, limit: int) -> np.ndarray:
  """Up to `limit` images of a file or folder, as floats in [-1, 1] at the model's size."""
  if epath.Path(path).is_file():
    source = sources.ArraySource(folders.decode_image(path, domain.channels)[None])
  else:
    source = folders.ImageFolderSource(path, channels=domain.channels)
  size = domain.image_size
  crop = transforms.ResizeCrop(resize=size, crop=size, random=False)
  out = []
  for i in range(min(len(source), limit)):
    record = transforms.ToChannels(domain.channels).map(source[i])
    record = crop.random_map(record, np.random.default_rng(0))  # centred: no draws
    out.append(transforms.ToFloat().map(record)["image"])
  return np.stack(out)


def reference_grid(model: BalaGAN, state, sources, references) -> np.ndarray:
  """Row 0: a blank cell then the references; row i: source i then its translations."""
  params = state.g_ema
  translate = jax.jit(lambda x, y: model.translate(params, x, y))
  rows = [np.concatenate([np.ones_like(references[:1]), references])]
  for x in sources:
    out = translate(np.repeat(x[None], len(references), 0), references)
    rows.append(np.concatenate([x[None], np.asarray(out)]))
  return images.make_grid(rows)


def interpolation_grid(model: BalaGAN, state, sources, ref_a, ref_b, steps: int) -> np.ndarray:
  """Row 0: the two references above the ends; then per source: the source and
  decode(content, (1 - t) s_a + t s_b) for t from 0 to 1 (Figure 14)."""
  gen, params = model.gen, state.g_ema

  @jax.jit
  def walk(x):
    content = gen.apply({"params": params}, x[None], method=gen.encode_content)
    s_a = gen.apply({"params": params}, ref_a[None], method=gen.encode_style)
    s_b = gen.apply({"params": params}, ref_b[None], method=gen.encode_style)
    t = jnp.linspace(0.0, 1.0, steps)[:, None]
    styles = (1 - t) * s_a + t * s_b
    return gen.apply({"params": params}, jnp.repeat(content, steps, 0), styles,
                     method=gen.decode)

  if steps < 2:
    raise ValueError(f"--interpolate needs at least 2 steps, got {steps}")
  blank = np.ones_like(ref_a)[None]
  header = np.concatenate([blank, ref_a[None], np.repeat(blank, steps - 2, 0), ref_b[None]])
  return images.make_grid([header] + [np.concatenate([x[None], np.asarray(walk(x))])
                                      for x in sources])


def main(argv):
  del argv
  runtime.initialize()
  model, state = load_model(FLAGS.workdir)
  domain = model.config.data.source
  sources = load_images(FLAGS.source, domain, FLAGS.max_images)
  references = load_images(FLAGS.reference, domain, FLAGS.max_images)
  output = epath.Path(FLAGS.output)  # save_png creates it, local or gs://
  images.save_png(output / "translations.png",
                  reference_grid(model, state, sources, references))
  if FLAGS.reference2 and FLAGS.interpolate:
    ref_b = load_images(FLAGS.reference2, domain, 1)[0]
    images.save_png(output / "interpolation.png",
                    interpolation_grid(model, state, sources, references[0], ref_b,
                                       FLAGS.interpolate))
  logging.info("Wrote grids to %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
