"""Base JD-BW configuration; the files in configs/ start from it and change a few fields.

Numbers follow the paper (Section 4.3-4.4, Appendix B). Where the paper is silent the
upstream choice is taken and marked: learning rate 1e-4 and gradient-penalty weight 10
are WGAN-GP's (Gulrajani et al., 2017).
"""

import ml_collections

from i2i_jax.data.domains import default_domain_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.source = default_domain_config()  # domain X
  config.data.target = default_domain_config()  # domain Y
  config.data.num_classes = 10  # labels only monitor training (Figure 3); 0 = unlabelled

  # 32x32 models: batch 128 and 5 critic steps per generator step (Section 4.4).
  config.batch_size = 128  # global, split over all devices
  config.d_steps = 5
  # How the d critic steps run inside the one jitted step: "scan", "unrolled", or
  # "auto" (unrolled on CPU, where XLA runs convs in while loops slowly; else scan).
  config.critic_loop = "auto"
  config.num_steps = 50_000  # generator steps (50k for MNIST-SR, 250k for MNIST-SVHN)

  config.optim = ml_collections.ConfigDict()
  config.optim.lr_g = 1e-4  # not given in the paper: WGAN-GP's value
  config.optim.lr_d = 1e-4
  config.optim.lr_w = 1e-4
  config.optim.b1 = 0.5  # Section 4.4
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8  # not given in the paper: Adam's (and PyTorch's) default

  config.model = ml_collections.ConfigDict()
  config.model.generator = "table2"  # "table2" (32x32) or "residual" (128x128, MUNIT-style)
  config.model.g_kernel = 4  # Table 2: K=4, s=2 for MNIST-SR; K=1, s=1 for MNIST-SVHN
  config.model.g_stride = 2
  config.model.g_features = 64
  config.model.g_num_down = 2  # residual generator only
  config.model.g_num_res = 4  # residual generator only (MUNIT: 4 in encoder, 4 in decoder)
  config.model.noise_dim = 16  # d = 8 for MNIST-SR, 16 otherwise
  config.model.spectral_norm = True  # in G and D (Section 4.3)
  config.model.d_levels = ((32, 64), (64, 128), (128, 256))  # Table 1
  config.model.w_features = 64  # Appendix B.1: DCGAN discriminator, 64 first-layer features
  # Resampling layers: the paper's ("conv", "transpose") or CPU-friendly equivalents
  # ("space_to_depth", "pixel_shuffle"); see README "Speed".
  config.model.downsample = "conv"
  config.model.upsample = "transpose"

  config.batch_weight = ml_collections.ConfigDict()
  config.batch_weight.scheme = "two_sided"  # "two_sided" (Alg. 1), "one_sided" (Alg. 2), "none"
  config.batch_weight.variant = "composite"  # "composite" (default, B.1), "joint", "single"
  # two_sided: divide each side's pair weights by their batch mean, so the re-weighted
  # samples stay probability measures as Eqs. 10-12 assume; False is Algorithm 1 as
  # written, whose W scaled whole sides instead of re-weighting classes in the digits
  # demo (README "Results"; batch_weight.two_sided_weights).
  config.batch_weight.normalize = True
  config.batch_weight.clip = ml_collections.ConfigDict()
  # Highest/lowest weight ratio within a batch, relaxed geometrically from `start` to
  # `end` over `relax_steps` generator steps (Section 4.3: "gradually relax"); the
  # paper gives no numbers. start <= 0 disables clipping.
  config.batch_weight.clip.start = 2.0
  config.batch_weight.clip.end = 20.0
  config.batch_weight.clip.relax_steps = 20_000

  config.gp_weight = 10.0  # WGAN-GP's lambda
  config.gp_target = 1.0
  # "auto": bfloat16 compute on GPU/TPU, float32 on CPU; "float32"/"bfloat16" force one.
  # Parameters and optimizer state are float32 either way.
  config.compute_dtype = "auto"

  config.log_every = 50
  config.sample_every = 1000
  config.eval_every = 5000  # class matching and FID/KID (config.eval); 0 = off
  config.checkpoint_every = 1000
  config.max_to_keep = 3
  # A step with non-finite losses/gradients is always skipped; then "skip" trains on,
  # "restore" goes back to the last checkpoint (at most max_restores times), "stop" ends.
  config.nonfinite = "skip"
  config.max_restores = 3
  config.num_samples = 16  # images per row in the sample grids
  config.num_eval = 1000  # samples per direction for class matching and FID/KID

  config.eval = ml_collections.ConfigDict()
  # Classifiers of each domain's labels: they judge class matching and give the
  # "domain" features of FID/KID. 0 = off (as is any run with num_classes 0).
  config.eval.classifier_steps = 1500
  config.eval.classifier_batch = 128
  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or .npz): Inception FID/KID too.
  config.eval.inception_weights = ""
  config.eval.kid_subset_size = 1000  # torch-fidelity's; capped at the sample counts
  config.eval.batch_size = 250  # images per translation / feature-extraction call
  return config


def use_128x128_setting(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Section 4.4 for 128x128: batch 6, 2 D steps per G step, 300k G steps, and MUNIT
  generators without AdaIN (Section 4.3)."""
  config.batch_size = 6
  config.d_steps = 2
  config.num_steps = 300_000
  config.model.generator = "residual"
  config.model.upsample = "nearest"  # MUNIT's decoder: nearest upsampling + 5x5 conv
  config.model.noise_dim = 16
  # Table 1 extended by two levels so 128x128 inputs reach the same 2x2x256 = 1024 fc
  # input; the paper only says it used the same design.
  config.model.d_levels = ((32, 64), (64, 128), (128, 256), (128, 256), (128, 256))
  return config
