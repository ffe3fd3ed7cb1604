"""Edges -> Shoes&Bags (Section 4.1, task 3), 128x128.

edges2shoes and edges2handbags (pix2pix datasets) are combined into two-class domains;
the photo domain is re-sampled so 90% are shoes, the edge domain keeps its natural mix
(50k of 188k are shoes). tfds has no unpaired split of these: prepare folders
  DATA/edges/{bags,shoes}/*.jpg   DATA/photos/{bags,shoes}/*.jpg
(README: "Paper tasks") and pass --config.data.source.path / target.path.
Class subfolders are sorted, so label 0 = bags, 1 = shoes.
"""

from jdbw_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "folder"
  src.path, tgt.path = "data/edges_shoesbags/edges", "data/edges_shoesbags/photos"
  src.split = tgt.split = "all"
  src.image_size = tgt.image_size = 128
  src.channels = tgt.channels = 3
  src.augment = tgt.augment = "resize_crop"
  src.resize = tgt.resize = 128
  tgt.class_probs = [0.1, 0.9]  # 90% shoes among the photos
  config.data.num_classes = 2
  return default_config.use_128x128_setting(config)
