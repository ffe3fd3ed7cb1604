"""SimCLR augmentations for BalaGAN's modality encoder, on device (Section 3.1).

The encoder is trained contrastively on two random views of each image; what the
views may differ in decides what the learned representation ignores (Appendix B):
distorting colour gives content clusters, shuffling patches gives style clusters.
Every image gets its own random parameters (per-sample keys, `jax.vmap`).

The operations and their parameters follow the authors' `data.py`
(`EncoderDataSetWrapper`), which is SimCLR's recipe (Chen et al., 2020):
  crop            RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)), bilinear
  horizontal_flip p = 0.5
  shuffle         8 x 8 grid of patches randomly permuted, p = 0.6
  color_jitter    ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) in random order, p = 0.8
  grayscale       p = 0.2
  blur            Gaussian, sigma ~ U(0.1, 2), kernel ~10% of the image side, p = 0.5
They run in that fixed order whatever the order of `names` (as `data.py` does).
"""

import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from i2i_jax.errors import ConfigError

AUGMENTATIONS = ("crop", "horizontal_flip", "shuffle", "color_jitter", "grayscale", "blur")

# Appendix B. "afd": AFD, AFHQ and CelebA (and configs/dog2wolf.yaml). For Stanford
# Cars, "style" clusters come from {crop, flip, shuffle, gray-scale, blur} and
# "content" clusters from {crop, color-distortion, gray-scale, blur}. (The released
# dog2wolf.yaml says "grayscale" while data.py tests for "gray_scale", so the authors'
# code skipped it there; the paper lists gray-scale, so it is applied here.)
AUGMENTATION_SETS: dict[str, tuple[str, ...]] = {
    "afd": ("crop", "horizontal_flip", "color_jitter", "grayscale", "blur"),
    "style": ("crop", "horizontal_flip", "shuffle", "grayscale", "blur"),
    "content": ("crop", "color_jitter", "grayscale", "blur"),
}

PROBABILITIES: dict[str, float] = {
    "horizontal_flip": 0.5, "shuffle": 0.6, "color_jitter": 0.8, "grayscale": 0.2, "blur": 0.5,
}

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes, then centre-crops
SHUFFLE_GRID = 8  # authors' ShufflePatches(8)
BLUR_SIGMA = (0.1, 2.0)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") and torchvision


def augment_batch(key: jax.Array, images: jax.Array, names: Sequence[str], *,
                  jitter_strength: float = 1.0,
                  probabilities: Mapping[str, float] | None = None,
                  crop_scale: tuple[float, float] = CROP_SCALE) -> jax.Array:
  """Applies the named augmentations to each image with its own randomness.

  Args:
    key: PRNG key; each image and each operation gets a key derived from it.
    images: (B, H, W, 3) float images in [-1, 1].
    names: operations from AUGMENTATIONS, e.g. AUGMENTATION_SETS["afd"].
    jitter_strength: SimCLR's colour-distortion strength s (config: 1).
    probabilities: overrides of PROBABILITIES, e.g. {"grayscale": 1.0}.
    crop_scale: the range of the crop's area fraction (SimCLR's (0.08, 1)).

  Returns:
    Augmented images, same shape and dtype, in [-1, 1].
  """
  unknown = sorted(set(names) - set(AUGMENTATIONS))
  if unknown:
    raise ConfigError(f"unknown augmentations {unknown}; expected names from {AUGMENTATIONS}")
  probs = dict(PROBABILITIES)
  for name, p in (probabilities or {}).items():
    if name not in PROBABILITIES:
      raise ConfigError(
          f"no probability for {name!r}; randomly applied ops are {tuple(PROBABILITIES)}")
    probs[name] = float(p)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ConfigError(f"expected (B, H, W, 3) images, got {images.shape}")
  if "shuffle" in names and (images.shape[1] % SHUFFLE_GRID or images.shape[2] % SHUFFLE_GRID):
    raise ConfigError(f"shuffle needs sides divisible by {SHUFFLE_GRID}, got {images.shape[1:3]}")
  if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
    raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
  ops = tuple(name for name in AUGMENTATIONS if name in names)
  return _augment(key, images, ops, jnp.asarray(jitter_strength, jnp.float32),
                  tuple(sorted(probs.items())), tuple(float(c) for c in crop_scale))


@functools.partial(jax.jit, static_argnums=(2, 4, 5))
def _augment(key, images, ops, strength, probs, crop_scale):
  probs = dict(probs)
  keys = jax.random.split(key, images.shape[0])

  def one(k, img):
    img = (img.astype(jnp.float32) + 1.0) / 2.0  # the colour ops are defined on [0, 1]
    for name in ops:
      op_key = jax.random.fold_in(k, AUGMENTATIONS.index(name))  # independent of the op set
      if name == "crop":
        img = random_resized_crop(op_key, img, crop_scale)
      else:
        apply_key, op_key = jax.random.split(op_key)
        fn = functools.partial(_OPS[name], op_key, strength=strength)
        img = lax.cond(jax.random.uniform(apply_key) < probs[name], fn, lambda x: x, img)
    return (img * 2.0 - 1.0).astype(images.dtype)

  return jax.vmap(one)(keys, images)


def random_resized_crop(key: jax.Array, img: jax.Array,
                        scale: tuple[float, float] = CROP_SCALE) -> jax.Array:
  """torchvision's RandomResizedCrop to the input size, for one (H, W, C) image.

  Up to 10 boxes with area fraction ~ U(scale) (SimCLR: U(0.08, 1)) and log-uniform aspect ratio in
  [3/4, 4/3] are drawn; the first that fits is used, else a centre crop (the whole
  image for ratios in range). The box is resized with antialiased bilinear (PIL-like).
  """
  h_img, w_img = img.shape[0], img.shape[1]
  k_area, k_ratio, k_i, k_j = jax.random.split(key, 4)
  area = h_img * w_img * jax.random.uniform(k_area, (CROP_ATTEMPTS,), minval=scale[0],
                                            maxval=scale[1])
  log_ratio = jax.random.uniform(k_ratio, (CROP_ATTEMPTS,), minval=math.log(CROP_RATIO[0]),
                                 maxval=math.log(CROP_RATIO[1]))
  ratio = jnp.exp(log_ratio)
  ws = jnp.round(jnp.sqrt(area * ratio))
  hs = jnp.round(jnp.sqrt(area / ratio))
  fits = (ws > 0) & (ws <= w_img) & (hs > 0) & (hs <= h_img)
  first = jnp.argmax(fits)
  fallback_h, fallback_w = _centre_crop_size(h_img, w_img)
  h = jnp.where(fits.any(), hs[first], fallback_h)
  w = jnp.where(fits.any(), ws[first], fallback_w)
  top = jnp.where(fits.any(), jax.random.randint(k_i, (), 0, h_img - h.astype(jnp.int32) + 1),
                  (h_img - fallback_h) // 2)
  left = jnp.where(fits.any(), jax.random.randint(k_j, (), 0, w_img - w.astype(jnp.int32) + 1),
                   (w_img - fallback_w) // 2)
  scale = jnp.stack([h_img / h, w_img / w])
  translation = -jnp.stack([top, left]).astype(jnp.float32) * scale
  out = jax.image.scale_and_translate(img, img.shape, (0, 1), scale, translation, "linear",
                                      antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def _centre_crop_size(h_img: int, w_img: int) -> tuple[int, int]:
  """RandomResizedCrop's fallback box: the largest centred box with a ratio in range."""
  in_ratio = w_img / h_img
  if in_ratio < CROP_RATIO[0]:
    return int(round(w_img / CROP_RATIO[0])), w_img
  if in_ratio > CROP_RATIO[1]:
    return h_img, int(round(h_img * CROP_RATIO[1]))
  return h_img, w_img


def horizontal_flip(key: jax.Array, img: jax.Array, *, strength: float) -> jax.Array:
  """Mirrors the image (its probability is applied by the caller)."""
  del key, strength
  return img[:, ::-1]


def shuffle_patches(key: jax.Array, img: jax.Array, *, strength: float) -> jax.Array:
  """Cuts the image into an 8 x 8 grid and permutes the patches (authors' ShufflePatches).

  The authors' PIL version pastes 1-pixel-overlapping tiles; this is the exact
  permutation of non-overlapping tiles it approximates. Destroys layout, keeps colour.
  """
  del strength
  g = SHUFFLE_GRID
  h, w, c = img.shape
  tiles = img.reshape(g, h // g, g, w // g, c).transpose(0, 2, 1, 3, 4)
  tiles = tiles.reshape(g * g, h // g, w // g, c)
  tiles = tiles[jax.random.permutation(key, g * g)]
  return tiles.reshape(g, g, h // g, w // g, c).transpose(0, 2, 1, 3, 4).reshape(h, w, c)


def color_jitter(key: jax.Array, img: jax.Array, *, strength: float) -> jax.Array:
  """torchvision ColorJitter(0.8s, 0.8s, 0.8s, 0.2s): four distortions in random order.

  Brightness, contrast and saturation factors ~ U[max(0, 1 - 0.8s), 1 + 0.8s]; hue shift
  ~ U[-0.2s, 0.2s] (capped at 0.5). The order is a random permutation, as torchvision's.
  """
  k_perm, k_b, k_c, k_s, k_h = jax.random.split(key, 5)
  lo, hi = jnp.maximum(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
  b, c, s = (jax.random.uniform(k, (), minval=lo, maxval=hi) for k in (k_b, k_c, k_s))
  hue = jnp.minimum(0.2 * strength, 0.5)
  h = jax.random.uniform(k_h, (), minval=-hue, maxval=hue)
  branches = (
      lambda x: jnp.clip(x * b, 0.0, 1.0),
      lambda x: _blend(x, grayscale_image(x).mean(), c),
      lambda x: _blend(x, grayscale_image(x)[..., None], s),
      lambda x: adjust_hue(x, h),
  )
  order = jax.random.permutation(k_perm, 4)
  return lax.fori_loop(0, 4, lambda t, x: lax.switch(order[t], branches, x), img)


def _blend(img: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's `_blend`: factor * img + (1 - factor) * other, clipped to [0, 1]."""
  return jnp.clip(factor * img + (1.0 - factor) * other, 0.0, 1.0)


def grayscale_image(img: jax.Array) -> jax.Array:
  """Luma (H, W) of an RGB image in [0, 1]."""
  return img @ jnp.asarray(LUMA, img.dtype)


def to_grayscale(key: jax.Array, img: jax.Array, *, strength: float) -> jax.Array:
  """RandomGrayscale's op: the luma replicated to 3 channels."""
  del key, strength
  return jnp.repeat(grayscale_image(img)[..., None], 3, axis=-1)


def adjust_hue(img: jax.Array, shift: jax.Array) -> jax.Array:
  """Rotates hue by `shift` (fraction of a turn) in HSV space, as torchvision."""
  hsv = rgb_to_hsv(img)
  return hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + shift) % 1.0))


def rgb_to_hsv(img: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> HSV with all channels in [0, 1] (torchvision's `_rgb2hsv`)."""
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  maxc, minc = img.max(axis=-1), img.min(axis=-1)
  delta = maxc - minc
  s = delta / jnp.where(maxc == 0, 1.0, maxc)
  safe = jnp.where(delta == 0, 1.0, delta)
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(delta == 0, 0.0, (h / 6.0) % 1.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """Inverse of `rgb_to_hsv` (torchvision's `_hsv2rgb`)."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(jnp.int32) % 6
  p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
  r = jnp.choose(i, [v, q, p, p, t, v], mode="clip")
  g = jnp.choose(i, [t, v, v, q, p, p], mode="clip")
  b = jnp.choose(i, [p, p, t, v, v, q], mode="clip")
  return jnp.stack([r, g, b], axis=-1)


def blur_kernel_size(side: int) -> int:
  """The authors' `int(0.1 * side - 1)` (11 at 128px), made odd and at least 3."""
  k = max(int(0.1 * side - 1), 3)
  return k if k % 2 else k + 1


def gaussian_blur(key: jax.Array, img: jax.Array, *, strength: float) -> jax.Array:
  """Separable Gaussian blur, sigma ~ U(0.1, 2), kernel ~10% of the image height.

  As cv2.GaussianBlur in the authors' `GaussianBlur`: the same square kernel on both
  axes and reflect-101 borders (numpy's "reflect").
  """
  del strength
  size = blur_kernel_size(img.shape[0])
  sigma = jax.random.uniform(key, (), minval=BLUR_SIGMA[0], maxval=BLUR_SIGMA[1])
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  weights = jnp.exp(-0.5 * jnp.square(x / sigma))
  weights = weights / weights.sum()
  r = size // 2
  padded = jnp.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")
  h, w = img.shape[0], img.shape[1]
  rows = sum(weights[i] * padded[i:i + h] for i in range(size))
  return sum(weights[j] * rows[:, j:j + w] for j in range(size))


_OPS = {
    "horizontal_flip": horizontal_flip,
    "shuffle": shuffle_patches,
    "color_jitter": color_jitter,
    "grayscale": to_grayscale,
    "blur": gaussian_blur,
}
