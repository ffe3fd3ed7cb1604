"""CelebA -> portraits (Section 4.1, task 4), 128x128.

CelebA comes from tfds (`celeb_a`, prepared as array_record); the 1,714 WikiArt
portraits of Lee et al. (DRIT) come as a folder: DATA/portraits/*.jpg
(README: "Paper tasks"). Images are cropped around the face and resized to 128.
Neither domain carries labels for the imbalance, so no class monitoring.
"""

from jdbw_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind, tgt.kind = "tfds", "folder"
  src.name, src.split = "celeb_a", "train"
  src.label_key = ""
  tgt.path, tgt.split = "data/portraits", "all"
  src.image_size = tgt.image_size = 128
  src.channels = tgt.channels = 3
  src.augment = tgt.augment = "resize_crop"
  # Aligned 178x218 faces: shorter side to 150, then a 128 crop around the face.
  src.resize, tgt.resize = 150, 140
  config.data.num_classes = 0
  config.eval.classifier_steps = 0
  return default_config.use_128x128_setting(config)
