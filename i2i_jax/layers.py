"""Convolutional building blocks shared by the JD-BW and BalaGAN networks.

All layers are NHWC. Layers that may be spectrally normalised take `update_stats`
(flax's `nn.SpectralNorm` keeps its power-iteration vector in the `batch_stats`
collection and advances it only when asked), so callers thread that flag down.

Resampling layers come in two flavours: the papers' own (strided / transposed
convolutions) and CPU-friendly equivalents (space-to-depth, pixel shuffle), because
XLA:CPU is very slow at the kernel gradient of transposed convs and at the double
backward of strided convs that the gradient penalty needs (see README, "Speed").
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax

DOWNSAMPLE_MODES = ("conv", "space_to_depth", "avg_pool")
UPSAMPLE_MODES = ("transpose", "pixel_shuffle", "nearest")

Dtype = Any


def from_config(module: type[nn.Module], block, prefix: str = "", **fields) -> nn.Module:
  """`module(**fields)`, its other fields read from the config `block` by name.

  A field `f` takes `block[prefix + f]` where the block has it (one network's own
  setting, e.g. "g_features" for a generator's `features`), else `block[f]` (a
  setting the block's networks share, e.g. "spectral_norm"); fields found in
  neither keep their defaults. Lists (a config read back from JSON) become tuples.
  """
  for field in dataclasses.fields(module):
    if field.name in fields or field.name in ("parent", "name"):
      continue
    for key in (prefix + field.name, field.name):
      if key in block:
        fields[field.name] = _as_tuples(block[key])
        break
  return module(**fields)


def _as_tuples(value):
  return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """(B, H, W, C) -> (B, H/block, W/block, C*block^2)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // block, w // block, c * block * block)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """(B, H, W, C*block^2) -> (B, H*block, W*block, C); inverse of space_to_depth."""
  b, h, w, c = x.shape
  out_c = c // (block * block)
  x = x.reshape(b, h, w, block, block, out_c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * block, w * block, out_c)


def apply_maybe_sn(layer: nn.Module, x, *, use_sn: bool, update_stats: bool):
  """Applies `layer`, spectrally normalised when `use_sn` (Miyato et al., 2018).

  Call inside a compact method, with `layer` constructed there too.
  """
  if use_sn:
    return nn.SpectralNorm(layer)(x, update_stats=update_stats)
  return layer(x)


class Conv(nn.Module):
  """A square convolution, spectrally normalised by default."""

  features: int
  kernel: int = 3
  stride: int = 1
  use_sn: bool = True
  padding: str = "SAME"
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, update_stats: bool):
    layer = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                    padding=self.padding, dtype=self.dtype)
    return apply_maybe_sn(layer, x, use_sn=self.use_sn, update_stats=update_stats)


class Dense(nn.Module):
  """A fully connected layer, spectrally normalised by default."""

  features: int
  use_sn: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, update_stats: bool):
    layer = nn.Dense(self.features, dtype=self.dtype)
    return apply_maybe_sn(layer, x, use_sn=self.use_sn, update_stats=update_stats)


class Downsample(nn.Module):
  """Halves the resolution.

  mode "conv": a kernel x kernel stride-2 conv (the papers' layer);
  "space_to_depth": 2x2 blocks to channels then a kernel/2 x kernel/2 conv, which spans
  the same pixels as the strided conv (a re-parameterisation of it) and is far cheaper
  on XLA:CPU; "avg_pool": 3x3 conv then 2x2 average pool.
  """

  features: int
  kernel: int = 4
  mode: str = "conv"
  use_sn: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, update_stats: bool):
    if self.mode == "conv":
      return Conv(self.features, self.kernel, 2, self.use_sn, dtype=self.dtype)(x, update_stats)
    if self.mode == "space_to_depth":
      k = max(self.kernel // 2, 1)
      return Conv(self.features, k, 1, self.use_sn, dtype=self.dtype)(space_to_depth(x), update_stats)
    if self.mode == "avg_pool":
      x = Conv(self.features, 3, 1, self.use_sn, dtype=self.dtype)(x, update_stats)
      return nn.avg_pool(x, (2, 2), (2, 2))
    raise ValueError(f"unknown downsample mode {self.mode!r}; expected one of {DOWNSAMPLE_MODES}")


class Upsample(nn.Module):
  """Scales the resolution up by `factor` (1 = a plain conv).

  mode "transpose": kernel x kernel transposed conv with stride `factor` (the papers');
  "pixel_shuffle": 3x3 conv to C*factor^2 channels then depth-to-space (sub-pixel conv);
  "nearest": nearest-neighbour resize then a kernel x kernel conv (MUNIT's decoder).
  """

  features: int
  kernel: int = 4
  factor: int = 2
  mode: str = "transpose"
  use_sn: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, update_stats: bool):
    f = self.factor
    if f == 1:
      return Conv(self.features, self.kernel, 1, self.use_sn, dtype=self.dtype)(x, update_stats)
    if self.mode == "transpose":
      layer = nn.ConvTranspose(self.features, (self.kernel, self.kernel), strides=(f, f),
                               padding="SAME", dtype=self.dtype)
      return apply_maybe_sn(layer, x, use_sn=self.use_sn, update_stats=update_stats)
    if self.mode == "pixel_shuffle":
      x = Conv(self.features * f * f, 3, 1, self.use_sn, dtype=self.dtype)(x, update_stats)
      return depth_to_space(x, f)
    if self.mode == "nearest":
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, h * f, w * f, c), method="nearest")
      return Conv(self.features, self.kernel, 1, self.use_sn, dtype=self.dtype)(x, update_stats)
    raise ValueError(f"unknown upsample mode {self.mode!r}; expected one of {UPSAMPLE_MODES}")


class InstanceNorm(nn.Module):
  """Per-sample, per-channel normalisation over space, with affine (as in MUNIT)."""

  epsilon: float = 1e-5
  dtype: Dtype | None = None  # of the output; statistics are float32 regardless

  @nn.compact
  def __call__(self, x):
    return nn.GroupNorm(num_groups=None, group_size=1, epsilon=self.epsilon, dtype=self.dtype)(x)


class ResBlock(nn.Module):
  """Two 3x3 convolutions and an identity skip (He et al., 2016), as in both papers' tables.

  `norm` is "none" or "instance"; activation is applied after each norm, none after
  the second conv (the sum is the block's output), matching MUNIT/CycleGAN blocks.
  """

  features: int
  use_sn: bool = True
  norm: str = "none"
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x, update_stats: bool):
    if x.shape[-1] != self.features:
      raise ValueError(f"ResBlock({self.features}) got {x.shape[-1]} input channels")
    h = x
    for i in range(2):
      h = Conv(self.features, 3, 1, self.use_sn, dtype=self.dtype)(h, update_stats)
      if self.norm == "instance":
        h = InstanceNorm(dtype=self.dtype)(h)
      elif self.norm != "none":
        raise ValueError(f"unknown norm {self.norm!r}; expected 'none' or 'instance'")
      if i == 0:
        h = self.activation(h)
    return x + h
