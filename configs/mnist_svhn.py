"""MNIST -> SVHN (Section 4.1, task 2), 32x32; MNIST is turned to 3 channels.

SVHN (cropped digits, tfds `svhn_cropped`) keeps its natural, non-uniform digit
frequencies; that imbalance is what batch weight corrects.
"""

from jdbw_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "tfds"
  src.name, tgt.name = "mnist", "svhn_cropped"
  src.split = tgt.split = "train"
  src.image_size = tgt.image_size = 32
  src.channels = tgt.channels = 3
  src.augment = "pad"
  tgt.augment = "none"
  config.model.g_kernel, config.model.g_stride = 1, 1  # Table 2, MNIST-SVHN
  config.model.noise_dim = 16
  config.num_steps = 250_000  # Section 4.4
  return config
