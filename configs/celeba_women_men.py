"""BalaGAN, CelebA: women -> men (Section 4, Table 2), 10,000 women and 1,000 men.

Read from tfds `celeb_a` (array_record; README "Paper tasks" says how to prepare it),
split by the `Male` attribute. k by the paper's rule |B| >= |A| / k (k = 10).
"""

from balagan_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "tfds"
  src.name = tgt.name = "celeb_a"
  src.split = tgt.split = "train"
  src.label_key = tgt.label_key = "attributes/Male"
  src.keep_label, tgt.keep_label = 0, 1
  src.max_records, tgt.max_records = 10_000, 1_000
  # Aligned 178x218 faces: shorter side to 140, crop 128 around the face.
  return config
