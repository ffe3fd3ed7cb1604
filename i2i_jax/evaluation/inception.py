"""The FID Inception-v3 in Flax, loading pytorch-fid's weights without PyTorch.

FID numbers are only comparable when computed with one exact network: the
Inception-v3 graph of TensorFlow's FID code (weights of 2015-12-05). pytorch-fid
ported it as `FIDInceptionA/C/E_1/E_2` on top of torchvision's Inception-v3;
this module mirrors that port layer by layer (same module names, so its state
dict maps one to one) and returns the 2048-d pool3 features.

Weights: download pytorch-fid's file (about 91 MiB)

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

and pass its path to `inception_feature_extractor`. It is read without torch
(`torch_checkpoint`); an `.npz` with the same keys works too.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from i2i_jax.errors import CheckpointError
from i2i_jax.evaluation import metrics, torch_checkpoint

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FEATURE_DIM = 2048
MIN_SIZE = 75  # the smallest input that survives Inception-v3's strided layers

# ----------------------------------------------------------------------------
# Network (pytorch-fid's fid_inception_v3 up to pool3).
# ----------------------------------------------------------------------------

Padding = tuple[tuple[int, int], tuple[int, int]]


def _pad(h: int, w: int) -> Padding:
  return ((h, h), (w, w))


def resize_bilinear(images, size: int):
  """(N, H, W, C) -> (N, size, size, C) as pytorch-fid resizes.

  That is F.interpolate(mode="bilinear", align_corners=False): half-pixel
  centres and, unlike jax.image.resize's default, no antialiasing.
  """
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "linear",
                          antialias=False)


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: bias-free conv, BatchNorm(eps=1e-3) at inference, ReLU."""

  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: Padding = _pad(0, 0)

  @nn.compact
  def __call__(self, x):
    # HIGHEST: no TF32 on GPUs, so features match the float32 reference.
    x = nn.Conv(self.features, self.kernel, self.strides, self.padding, use_bias=False,
                precision=jax.lax.Precision.HIGHEST, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TensorFlow's average pool leaves the padding out of the mean (pytorch-fid's patch).
  return nn.avg_pool(x, (3, 3), (1, 1), _pad(1, 1), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class _Block(nn.Module):
  """An Inception block; `conv` builds its BasicConv2d at the network's width."""

  width_divisor: int

  def conv(self, name: str, features: int, kernel, strides: int = 1, padding=_pad(0, 0)):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return BasicConv2d(features // self.width_divisor, kernel, strides, padding, name=name)


class FIDInceptionA(_Block):
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 64, 1)(x)
    b5 = self.conv("branch5x5_1", 48, 1)(x)
    b5 = self.conv("branch5x5_2", 64, 5, padding=_pad(2, 2))(b5)
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
    b3 = self.conv("branch3x3dbl_2", 96, 3, padding=_pad(1, 1))(b3)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=_pad(1, 1))(b3)
    bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(_Block):
  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3", 384, 3, strides=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x)
    bd = self.conv("branch3x3dbl_2", 96, 3, padding=_pad(1, 1))(bd)
    bd = self.conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], -1)


class FIDInceptionC(_Block):
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x)
    b7 = self.conv("branch7x7_1", c7, 1)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=_pad(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=_pad(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=_pad(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=_pad(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=_pad(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=_pad(0, 3))(bd)
    bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(_Block):
  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3_1", 192, 1)(x)
    b3 = self.conv("branch3x3_2", 320, 3, strides=2)(b3)
    b7 = self.conv("branch7x7x3_1", 192, 1)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=_pad(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=_pad(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], -1)


class FIDInceptionE(_Block):
  """FIDInceptionE_1 (average pool) or, with max_pool, FIDInceptionE_2.

  The TF FID graph max-pools in its last block, most likely a bug there; FID
  must keep it to stay comparable.
  """

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 320, 1)(x)
    b3 = self.conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=_pad(0, 1))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1), padding=_pad(1, 0))(b3)], -1)
    bd = self.conv("branch3x3dbl_1", 448, 1)(x)
    bd = self.conv("branch3x3dbl_2", 384, 3, padding=_pad(1, 1))(bd)
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=_pad(0, 1))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1), padding=_pad(1, 0))(bd)], -1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), _pad(1, 1))
    else:
      pooled = _avg_pool_3x3(x)
    bp = self.conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's InceptionV3(output_blocks=[3]): images in [-1, 1] -> pool3 features.

  width_divisor divides every channel count (1 = the real network; tests use
  small models); resize_to is the side images are bilinearly resized to.
  """

  width_divisor: int = 1
  resize_to: int = 299

  @nn.compact
  def __call__(self, images):
    if images.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3 needs RGB (N, H, W, 3) images, got {images.shape}")
    if self.resize_to < MIN_SIZE:
      raise ValueError(f"resize_to={self.resize_to}: Inception-v3 needs at least {MIN_SIZE}")
    # pytorch-fid's 2x - 1 maps [0, 1] to [-1, 1], where our images already are.
    x = resize_bilinear(images, self.resize_to)
    w = self.width_divisor

    def stem(name, features, kernel, strides=1, padding=_pad(0, 0)):
      return BasicConv2d(features // w, (kernel, kernel), strides, padding, name=name)

    x = stem("Conv2d_1a_3x3", 32, 3, strides=2)(x)
    x = stem("Conv2d_2a_3x3", 32, 3)(x)
    x = stem("Conv2d_2b_3x3", 64, 3, padding=_pad(1, 1))(x)
    x = _max_pool_3x3_stride2(x)
    x = stem("Conv2d_3b_1x1", 80, 1)(x)
    x = stem("Conv2d_4a_3x3", 192, 3)(x)
    x = _max_pool_3x3_stride2(x)
    x = FIDInceptionA(w, pool_features=32, name="Mixed_5b")(x)
    x = FIDInceptionA(w, pool_features=64, name="Mixed_5c")(x)
    x = FIDInceptionA(w, pool_features=64, name="Mixed_5d")(x)
    x = InceptionB(w, name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(w, channels_7x7=c7, name=name)(x)
    x = InceptionD(w, name="Mixed_7a")(x)
    x = FIDInceptionE(w, name="Mixed_7b")(x)
    x = FIDInceptionE(w, max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, (1, 2))


# ----------------------------------------------------------------------------
# Mapping pytorch-fid's state_dict onto the Flax variables.
# ----------------------------------------------------------------------------

# (collection, flax module, flax leaf) -> torch suffix.
_LEAF_NAMES = {
    ("params", "conv", "kernel"): "conv.weight",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
}


def _ignored(torch_name: str) -> bool:
  """The classifier head and BatchNorm's step counter play no part in pool3 features."""
  return torch_name.startswith("fc.") or torch_name.endswith(".num_batches_tracked")


def _list(names: Sequence[str], limit: int = 8) -> str:
  shown = ", ".join(sorted(names)[:limit])
  return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_fid_inception_params(path, *, width_divisor: int = 1) -> dict[str, Any]:
  """pytorch-fid's weights file -> {"params": ..., "batch_stats": ...} for FIDInceptionV3.

  Conv weights go from torch's OIHW to Flax's HWIO. Raises CheckpointError naming
  the file and every missing or unexpected key and mismatched shape.
  """
  if not epath.Path(path).exists():
    raise CheckpointError(f"{path}: no such file (FID Inception weights: {FID_WEIGHTS_URL})")
  arrays = torch_checkpoint.read_state_dict(path)
  model = FIDInceptionV3(width_divisor, resize_to=MIN_SIZE)
  template = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3)))
  flat = {}
  missing, mismatched, used = [], [], set()
  for key, leaf in traverse_util.flatten_dict(template).items():
    torch_name = ".".join(key[1:-2] + (_LEAF_NAMES[key[:1] + key[-2:]],))
    if torch_name not in arrays:
      missing.append(torch_name)
      continue
    used.add(torch_name)
    value = arrays[torch_name]
    if key[-1] == "kernel" and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    if value.shape != leaf.shape:
      expected = leaf.shape[::-1][:2] + leaf.shape[:2] if key[-1] == "kernel" else leaf.shape
      mismatched.append(f"{torch_name}: {arrays[torch_name].shape} (expected {expected})")
      continue
    flat[key] = jnp.asarray(value, jnp.float32)
  unexpected = [n for n in arrays if n not in used and not _ignored(n)]
  if missing or unexpected or mismatched:
    problems = [f"missing keys: {_list(missing)}" if missing else "",
                f"unexpected keys: {_list(unexpected)}" if unexpected else "",
                f"shape mismatches: {_list(mismatched)}" if mismatched else ""]
    raise CheckpointError(
        f"{path} does not hold pytorch-fid's FID Inception weights (width_divisor="
        f"{width_divisor}): " + "; ".join(p for p in problems if p))
  return traverse_util.unflatten_dict(flat)


def inception_feature_extractor(path, batch_size: int = 50, *, width_divisor: int = 1,
                                resize_to: int = 299) -> metrics.FeatureExtractor:
  """Pool3 features of the FID Inception (weights from `path`), as pytorch-fid computes them.

  Images are float NHWC in [-1, 1]; grey (C = 1) images are repeated to RGB, as
  pytorch-fid's loader converts them. batch_size bounds memory (pytorch-fid: 50).
  """
  variables = load_fid_inception_params(path, width_divisor=width_divisor)
  apply = jax.jit(FIDInceptionV3(width_divisor, resize_to).apply)

  def features(batch):
    batch = jnp.asarray(batch, jnp.float32)
    if batch.shape[-1] == 1:
      batch = jnp.repeat(batch, 3, -1)
    return np.asarray(apply(variables, batch))

  return lambda images: metrics.extract_features(features, images, batch_size)
