"""A tiny BalaGAN configuration on the embedded digits for fast CPU tests."""

from config_overrides import apply_overrides
from balagan_jax import default_config

NUM_SOURCE, NUM_TARGET = 200, 40


def tiny_config(**overrides):
  """Digits 0-9 (200) as A, 40 other digits as B; a two-block encoder of width 4."""
  config = default_config.get_config()
  for domain, split in ((config.data.source, f"train[:{NUM_SOURCE}]"),
                        (config.data.target, f"train[{NUM_SOURCE}:{NUM_SOURCE + NUM_TARGET}]")):
    domain.kind = "embedded_mnist"
    domain.split = split
    domain.augment = "pad"
    domain.flip = False
    domain.channels = 3
    domain.image_size = 32
    domain.label_key = "label"
  enc = config.encoder
  enc.batch_size = 16
  enc.width = 4
  enc.stem = "cifar"
  enc.stage_sizes = (1, 1)
  enc.projection_dim = 8
  enc.augmentations = ("crop", "horizontal_flip")
  enc.num_steps = 3
  enc.log_every = 1
  enc.checkpoint_every = 2
  config.modalities.kmeans_iters = 5
  config.modalities.kmeans_restarts = 2
  config.modalities.grid_samples = 4
  model = config.model
  model.nf, model.nf_mlp, model.latent_dim, model.num_res_blocks = 4, 8, 4, 1
  model.num_downsamples_content = 2
  model.d_nf, model.d_num_res_blocks = 4, 2
  config.batch_size = 4
  config.num_steps = 2
  config.log_every = 1
  config.sample_every = 2
  config.checkpoint_every = 1
  config.num_samples = 4
  config.eval_every = 0  # evaluation has its own tests (test_evaluate.py)
  return apply_overrides(config, overrides)
