"""JD-BW networks: noisy generators, the joint discriminator and the weighting networks.

Architectures follow Appendix B of "Batch weight for domain adaptation with mass
shift": Table 2 (32x32 generator), Table 1 (joint discriminator), B.1 (weighting
networks) and Section 4.3 (128x128: MUNIT generators without AdaIN, spectral norm).
Every module is NHWC and takes `update_stats` for its spectral-norm power iteration.
Module fields carry the `model` config block's names, without the "g_" / "d_" / "w_"
prefix of one network's own settings, so `build_*` map the block onto them.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from i2i_jax import layers

Dtype = Any


def tile_noise(z: jax.Array, height: int, width: int) -> jax.Array:
  """Repeats a noise vector (B, d) over space: (B, height, width, d) (Section 4.3)."""
  return jnp.broadcast_to(z[:, None, None, :], (z.shape[0], height, width, z.shape[-1]))


class Generator32(nn.Module):
  """Table 2: conv, 2 res blocks, noise joined by 1x1 convs, 2 res blocks, transposed conv.

  MNIST-SR uses kernel 4, stride 2; MNIST-SVHN kernel 1, stride 1. Noise is joined
  "halfway through the depth of the network". Output is tanh, images in [-1, 1].
  """

  out_channels: int
  kernel: int = 4
  stride: int = 2
  features: int = 64
  upsample: str = "transpose"
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, z, update_stats: bool):
    f, sn, dt = self.features, self.spectral_norm, self.dtype
    if self.stride == 1:
      h = layers.Conv(f, self.kernel, 1, sn, dtype=dt)(x, update_stats)
    else:
      h = layers.Downsample(f, self.kernel, "conv", sn, dtype=dt)(x, update_stats)
    h = nn.relu(h)
    for _ in range(2):
      h = layers.ResBlock(f, sn, dtype=dt)(h, update_stats)
    h = layers.Conv(f, 1, 1, sn, dtype=dt)(h, update_stats)
    h = jnp.concatenate([h, tile_noise(z.astype(h.dtype), h.shape[1], h.shape[2])], axis=-1)
    h = nn.relu(layers.Conv(f, 1, 1, sn, dtype=dt)(h, update_stats))
    for _ in range(2):
      h = layers.ResBlock(f, sn, dtype=dt)(h, update_stats)
    h = nn.relu(h)
    h = layers.Upsample(self.out_channels, self.kernel, self.stride, self.upsample, sn,
                        dtype=dt)(h, update_stats)
    return jnp.tanh(h.astype(jnp.float32))


class ResidualGenerator(nn.Module):
  """128x128 generator: MUNIT's content encoder + decoder without AdaIN (Section 4.3).

  7x7 conv, `num_down` stride-2 4x4 convs, noise tiled and joined "before the first
  residual block" by a 1x1 conv, 2 x `num_res` residual blocks with instance norm
  (MUNIT's encoder and decoder each have `num_res`), then `num_down` x (nearest
  upsample, 5x5 conv, layer norm, relu) as MUNIT's decoder, and a 7x7 conv + tanh.
  """

  out_channels: int
  features: int = 64
  num_down: int = 2
  num_res: int = 4
  downsample: str = "conv"
  upsample: str = "nearest"
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, z, update_stats: bool):
    sn, dt = self.spectral_norm, self.dtype
    f = self.features
    h = nn.relu(layers.InstanceNorm(dtype=dt)(layers.Conv(f, 7, 1, sn, dtype=dt)(x, update_stats)))
    for _ in range(self.num_down):
      f *= 2
      h = layers.Downsample(f, 4, self.downsample, sn, dtype=dt)(h, update_stats)
      h = nn.relu(layers.InstanceNorm(dtype=dt)(h))
    h = jnp.concatenate([h, tile_noise(z.astype(h.dtype), h.shape[1], h.shape[2])], axis=-1)
    h = nn.relu(layers.Conv(f, 1, 1, sn, dtype=dt)(h, update_stats))
    for _ in range(2 * self.num_res):
      h = layers.ResBlock(f, sn, norm="instance", dtype=dt)(h, update_stats)
    for _ in range(self.num_down):
      f //= 2
      h = layers.Upsample(f, 5, 2, self.upsample, sn, dtype=dt)(h, update_stats)
      h = nn.relu(nn.GroupNorm(num_groups=1, dtype=dt)(h))  # MUNIT's LayerNorm over (H, W, C).
    h = layers.Conv(self.out_channels, 7, 1, sn, dtype=dt)(h, update_stats)
    return jnp.tanh(h.astype(jnp.float32))


class JointDiscriminator(nn.Module):
  """Table 1: D(x, y) with x, y and joint streams merged at every level.

  Level i: x_i = conv(x_{i-1}), y_i = conv(y_{i-1}), xy_i = conv(concat(x_{i-1},
  xy_{i-1}, y_{i-1})), all 4x4 stride 2. Two residual blocks follow the joint stream
  after level `res_after_level` (Table 1 puts them after the second level), then a
  4x4 stride-2 conv on concat(x_L, xy_L, y_L), fc 1024 -> 256 -> 1. For 32x32 input
  the three levels of Table 1 leave 2x2x256 = 1024 features; 128x128 adds two levels
  (our choice: the paper only says it used "the same" design) to keep the fc sizes.
  """

  levels: Sequence[tuple[int, int]] = ((32, 64), (64, 128), (128, 256))
  res_after_level: int = 2
  final_features: int = 256
  hidden: int = 256
  downsample: str = "conv"
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, y, update_stats: bool):
    sn, dt = self.spectral_norm, self.dtype

    def down(features, h):
      return nn.leaky_relu(
          layers.Downsample(features, 4, self.downsample, sn, dtype=dt)(h, update_stats), 0.2)

    hx, hy = x.astype(dt or x.dtype), y.astype(dt or y.dtype)
    hxy = jnp.concatenate([hx, hy], axis=-1)
    for level, (single, joint) in enumerate(self.levels, start=1):
      joint_in = hxy if level == 1 else jnp.concatenate([hx, hxy, hy], axis=-1)
      hx, hxy, hy = down(single, hx), down(joint, joint_in), down(single, hy)
      if level == self.res_after_level:
        for _ in range(2):
          hxy = layers.ResBlock(joint, sn, activation=lambda a: nn.leaky_relu(a, 0.2),
                                dtype=dt)(hxy, update_stats)
    h = down(self.final_features, jnp.concatenate([hx, hxy, hy], axis=-1))
    h = h.reshape(h.shape[0], -1)
    h = nn.leaky_relu(layers.Dense(self.hidden, sn, dtype=dt)(h, update_stats), 0.2)
    return layers.Dense(1, sn, dtype=dt)(h, update_stats)[:, 0].astype(jnp.float32)


class WeightNet(nn.Module):
  """Appendix B.1: "the same as DCGAN discriminator with four convolutional layers and
  64 features in the first layer". One scalar logit per sample.

  DCGAN's batch norm is left out on purpose: it would couple the samples of the
  batch whose relative weights this network is meant to express.
  """

  features: int = 64
  num_layers: int = 4
  downsample: str = "conv"
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, *images):
    h = jnp.concatenate([im.astype(self.dtype or im.dtype) for im in images], axis=-1)
    for i in range(self.num_layers):
      h = layers.Downsample(self.features * 2**i, 4, self.downsample, use_sn=False,
                            dtype=self.dtype)(h, update_stats=False)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)


WEIGHT_VARIANTS = ("composite", "joint", "single")


class WeightNetworks(nn.Module):
  """The weighting network(s) of Appendix B.1, returning raw logits for both pair sets.

  Given pairs (x, Gxy(x)) and (Gyx(y), y), returns (logits_x, logits_y) such that the
  two-sided weights are sigmoids of them (batch_weight.two_sided_weights):
    joint:     wx = s(W(x, Gxy x)),                  wy = s(-W(Gyx y, y))
    single:    wx = s(W(x)),                         wy = s(-W(Gyx y))
    composite: wx = (s(Wx x) + s(-Wy(Gxy x))) / 2,   wy = (s(-Wx(Gyx y)) + s(Wy y)) / 2
  For "composite" each logit array has a trailing axis of 2 (one per sigmoid).
  The signs are folded into the logits so that every weight is mean(sigmoid(logits)).
  """

  variant: str = "composite"
  features: int = 64
  downsample: str = "conv"
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, x_translated, y_translated, y):
    net = lambda name: WeightNet(self.features, downsample=self.downsample, dtype=self.dtype,
                                 name=name)
    if self.variant == "joint":
      w = net("w")
      return w(x, x_translated), -w(y_translated, y)
    if self.variant == "single":
      w = net("w")
      return w(x), -w(y_translated)
    if self.variant == "composite":
      wx, wy = net("wx"), net("wy")
      logits_x = jnp.stack([wx(x), -wy(x_translated)], axis=-1)
      logits_y = jnp.stack([-wx(y_translated), wy(y)], axis=-1)
      return logits_x, logits_y
    raise ValueError(f"unknown weight network variant {self.variant!r}; expected one of "
                     f"{WEIGHT_VARIANTS}")


GENERATORS = {"table2": Generator32, "residual": ResidualGenerator}


def build_generator(model_cfg, out_channels: int, dtype=None) -> nn.Module:
  """The generator `model_cfg.generator` names ("table2" at 32x32, "residual" at
  128x128), its fields from the `model` config block ("g_" + field, or shared)."""
  if model_cfg.generator not in GENERATORS:
    raise ValueError(f"unknown config.model.generator {model_cfg.generator!r}; "
                     "expected 'table2' or 'residual'")
  return layers.from_config(GENERATORS[model_cfg.generator], model_cfg, "g_",
                            out_channels=out_channels, dtype=dtype)


def build_discriminator(model_cfg, dtype=None) -> JointDiscriminator:
  return layers.from_config(JointDiscriminator, model_cfg, "d_", dtype=dtype)


def build_weight_networks(model_cfg, variant: str, dtype=None) -> WeightNetworks:
  return layers.from_config(WeightNetworks, model_cfg, "w_", variant=variant, dtype=dtype)
