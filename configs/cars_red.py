"""BalaGAN, Stanford Cars: cars of any colour -> red cars (Section 4, Figure 4).

7,500 non-red cars (A) and 500 red cars (B). Stanford Cars has no colour labels, so
the split is a folder layout (README: "BalaGAN data"):
  data/cars/other/*.jpg   data/cars/red/*.jpg
"""

from balagan_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "folder"
  src.path, tgt.path = "data/cars/other", "data/cars/red"
  src.split = tgt.split = "all"
  src.max_records, tgt.max_records = 7_500, 500
  return config
