"""BalaGAN, AFHQ: dogs -> cats, the balanced setting (Section 4.3).

All 4,739 dogs (A) and 5,153 cats (B) of AFHQ's training split; 30 modalities are
extracted in each domain, so the network trains on (30 + 30)^2 pairs. Folders:
  data/afhq/train/dog/*.jpg   data/afhq/train/cat/*.jpg
"""

from balagan_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "folder"
  src.path, tgt.path = "data/afhq/train/dog", "data/afhq/train/cat"
  src.split = tgt.split = "all"
  config.modalities.k_source = 30
  config.modalities.k_target = 30
  return config
