"""MNIST -> skewed & resized MNIST (Section 4.1, task 1), 32x32, greyscale.

SR-MNIST: half of the samples are zeros, the rest uniform over the other digits; digits
padded, rotated by a random angle in (-pi/12, pi/12) and randomly cropped (smaller,
off-centre). The two domains use disjoint halves of MNIST's training split.
"""

from i2i_jax.data.transforms import skewed_class_probs
from jdbw_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "tfds"
  src.name = tgt.name = "mnist"
  src.split, tgt.split = "train[:50%]", "train[50%:]"
  src.image_size = tgt.image_size = 32
  src.channels = tgt.channels = 1
  src.augment = "pad"  # 28 -> 32, digits unchanged
  tgt.augment = "sr_mnist"
  tgt.class_probs = skewed_class_probs(num_classes=10, skew_class=0, skew_prob=0.5)
  config.model.g_kernel, config.model.g_stride = 4, 2  # Table 2, MNIST-SR
  config.model.noise_dim = 8  # Section 4.3: d = 8 for MNIST-SR
  config.num_steps = 50_000  # Section 4.4
  return config
