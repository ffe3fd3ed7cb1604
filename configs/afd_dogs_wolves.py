"""BalaGAN, Animal Face Dataset: dogs -> wolves (Section 4, the main imbalanced task).

10,000 images of 16 dog breeds (source A) and 1,000 of 3 wolf breeds (target B),
40 modalities (Table 1). AFD is FUNIT's animal faces (not in tfds): prepare
  data/afd/dogs/*.jpg    data/afd/wolves/*.jpg
(README: "BalaGAN data"). For the Table 2 sweep shrink B with
--config.data.target.max_records=500 (250, 125).
"""

from balagan_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "folder"
  src.path, tgt.path = "data/afd/dogs", "data/afd/wolves"
  src.split = tgt.split = "all"
  src.max_records, tgt.max_records = 10_000, 1_000
  config.modalities.k_source = 40
  return config
