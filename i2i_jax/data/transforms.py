"""Grain transforms and class re-sampling for the papers' domains (numpy + PIL only).

Transforms map a record `{"image": uint8 (H, W, C), "label": int32}` to a new
record with the same keys. They are small frozen dataclasses, so they pickle into
grain's spawned workers; random ones draw only from the generator grain passes
in, which grain derives from the seed and the element index, so a pipeline is
reproducible and resumable.
"""

import dataclasses
import math
from collections.abc import Sequence

import grain
import numpy as np
from PIL import Image

from i2i_jax.errors import ConfigError


class ClassResampledSource:
  """`base` re-sampled to the class frequencies `class_probs` (random access).

  Item i is a class c drawn with probability `class_probs[c]`, then a uniform
  sample of that class. This is how the papers build imbalanced domains from
  balanced data: SR-MNIST (half zeros, the rest uniform) and the "90% shoes" photo
  domain. All draws are made up front from `seed` into an index table, so the
  re-sampled set is fixed, like a dataset built once, and reading an item costs a
  lookup.

  Args:
    base: random-access source of records.
    labels: the label of every record of `base` (see `sources.source_labels`).
    class_probs: probability of each class 0..K-1; labels >= K are never drawn.
    length: number of items; defaults to len(base).
    seed: selects the re-sampled set.
  """

  def __init__(self, base, labels: Sequence[int], class_probs: Sequence[float],
               length: int | None = None, seed: int = 0):
    probs = np.asarray(class_probs, np.float64)
    if probs.ndim != 1 or (probs < 0).any() or not np.isclose(probs.sum(), 1.0, atol=1e-6):
      raise ConfigError(f"class_probs must be non-negative and sum to 1, got {list(class_probs)}")
    labels = np.asarray(labels)
    if len(labels) != len(base):
      raise ConfigError(f"got {len(labels)} labels for a source of {len(base)} records")
    members = [np.flatnonzero(labels == c) for c in range(len(probs))]
    for c, (p, of_class) in enumerate(zip(probs, members)):
      if p > 0 and not len(of_class):
        raise ConfigError(f"class {c} has probability {p:g} but no samples in the source")
    self._base = base
    self._labels = labels.astype(np.int32)
    self.num_classes = len(probs)
    length = len(base) if length is None else int(length)
    rng = np.random.default_rng(seed)
    classes = rng.choice(len(probs), size=length, p=probs / probs.sum())
    sizes = np.array([len(m) for m in members])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.minimum((rng.random(length) * sizes[classes]).astype(np.int64),
                        sizes[classes] - 1)
    all_members = np.concatenate(members + [np.zeros(0, np.int64)])
    self._table = all_members[starts[classes] + within]

  def __len__(self) -> int:
    return len(self._table)

  def __getitem__(self, index: int):
    return self._base[int(self._table[index])]

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """A batch of items, for a `base` that reads batches (`sources.ArraySource`)."""
    return self._base.read_batch(self._table[indices])

  def all_labels(self) -> np.ndarray:
    return self._labels[self._table]


def skewed_class_probs(num_classes: int = 10, skew_class: int = 0,
                       skew_prob: float = 0.5) -> list[float]:
  """`skew_class` gets `skew_prob`, the other classes share the rest equally.

  The default is SR-MNIST's digit distribution: half zeros, the rest uniform.
  """
  if num_classes < 2 or not 0 <= skew_class < num_classes or not 0 <= skew_prob <= 1:
    raise ConfigError(f"need num_classes >= 2, 0 <= skew_class < num_classes and "
                     f"0 <= skew_prob <= 1; got {num_classes}, {skew_class}, {skew_prob}")
  rest = (1.0 - skew_prob) / (num_classes - 1)
  return [skew_prob if c == skew_class else rest for c in range(num_classes)]


def _to_pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64's output function: a bijective 64-bit mix (uint64 arithmetic wraps)."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def record_uniforms(seed: int, positions: np.ndarray, count: int) -> np.ndarray:
  """`count` uniforms in [0, 1) for each stream position: float64 (len(positions), count).

  A counter-based generator: the numbers depend only on (seed, position, k), so a
  batch of records gets its random geometry in a few vectorised operations (a
  numpy Generator per record costs ~90 us), and the values do not depend on how the
  stream is batched or split over hosts.
  """
  positions = np.asarray(positions, np.uint64).reshape(-1, 1)
  with np.errstate(over="ignore"):
    key = _splitmix64(np.array([seed % 2**64], np.uint64))
    counters = positions * np.uint64(count) + np.arange(count, dtype=np.uint64)
    bits = _splitmix64(_splitmix64(counters ^ key))
  return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _affine_bilinear(images: np.ndarray, matrices: np.ndarray, out_size: int) -> np.ndarray:
  """Resamples uint8 images (N, H, W, C) through per-image affine maps, bilinearly.

  `matrices` (N, 6) are PIL AFFINE coefficients (a, b, c, d, e, f): output pixel
  (x, y) samples the input at (a x + b y + c, d x + e y + f), both in continuous
  coordinates where pixel i spans [i, i + 1). Outside the image counts as zero.
  """
  n, height, width, channels = images.shape
  centres = np.arange(out_size, dtype=np.float32) + 0.5
  m = matrices.astype(np.float32)[:, :, None, None]
  ox, oy = centres[None, None, :], centres[None, :, None]
  xs = m[:, 0] * ox + m[:, 1] * oy + (m[:, 2] - 0.5)  # (N, S, S) in pixel-index units
  ys = m[:, 3] * ox + m[:, 4] * oy + (m[:, 5] - 0.5)
  x0, y0 = np.floor(xs), np.floor(ys)
  fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
  # A two-pixel zero border; clipping the top-left neighbour into [-2, size] keeps
  # all four in it, and makes samples beyond it zero.
  row_len = width + 4
  padded = np.zeros((n, height + 4, row_len, channels), np.float32)
  padded[:, 2:-2, 2:-2] = images
  flat = padded.reshape(-1)
  col = np.clip(x0.astype(np.int32), -2, width) + 2
  row = np.clip(y0.astype(np.int32), -2, height) + 2
  image_start = np.arange(n, dtype=np.int32) * (height + 4) * row_len
  top_left = ((row * row_len + col + image_start[:, None, None])[..., None] * channels
              + np.arange(channels, dtype=np.int32))  # (N, S, S, C) into `flat`
  below = row_len * channels
  v00, v01 = flat[top_left], flat[top_left + channels]
  v10, v11 = flat[top_left + below], flat[top_left + below + channels]
  upper = v00 + (v01 - v00) * fx
  out = upper + (v10 + (v11 - v10) * fx - upper) * fy
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class SkewResize(grain.transforms.RandomMap):
  """SR-MNIST geometry: pad, rotate by a random angle, random crop, resize.

  "The images are then padded, randomly rotated by the angle in (-pi/12, pi/12)
  and randomly cropped. The resulting digits are slightly smaller than the
  original ones and not necessarily centered." E.g. a 28x28 digit padded by 8
  (44x44), rotated, cropped at a random 40x40 window and resized to 32 ends up
  at scale 32/40 = 0.8 and off-centre by up to 2 px.

  The three steps are one affine map, so each image is resampled once (bilinear;
  zeros outside the digit's image stand for the padding), and a whole batch at a
  time with numpy (`batch_map`): one interpolation instead of two, and far cheaper
  per record than padding, rotating and resizing in turn.
  """

  pad: int
  crop: int
  out_size: int
  max_angle: float = math.pi / 12  # radians

  uniforms_per_record = 3  # angle, crop top, crop left

  def random_map(self, element, rng: np.random.Generator):
    image = self.batch_map(element["image"][None],
                           rng.random((1, self.uniforms_per_record)))[0]
    return {**element, "image": image}

  def batch_map(self, images: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Transforms uint8 images (N, H, W, C), drawing from `uniforms` (N, 3) in [0, 1)."""
    height, width = images.shape[1] + 2 * self.pad, images.shape[2] + 2 * self.pad
    if self.crop > min(height, width):
      raise ConfigError(f"SkewResize: crop {self.crop} exceeds the padded image "
                       f"{height}x{width} ({images.shape[1:3]} + 2 * pad {self.pad})")
    # Counter-clockwise by `angle` about the padded image's centre, as PIL's rotate.
    angle = (2 * uniforms[:, 0] - 1) * self.max_angle
    top = np.floor(uniforms[:, 1] * (height - self.crop + 1))
    left = np.floor(uniforms[:, 2] * (width - self.crop + 1))
    cos, sin = np.cos(-angle), np.sin(-angle)
    scale = self.crop / self.out_size
    cx, cy = width / 2, height / 2
    # Output pixel o -> crop window (scale * o + (left, top)) in the rotated padded
    # image -> padded image (rotation about its centre) -> the unpadded image.
    ox, oy = left - cx, top - cy
    matrices = np.stack([scale * cos, scale * sin, cos * ox + sin * oy + cx - self.pad,
                         -scale * sin, scale * cos, -sin * ox + cos * oy + cy - self.pad], -1)
    return _affine_bilinear(images, matrices, self.out_size)


@dataclasses.dataclass(frozen=True)
class Pad(grain.transforms.Map):
  """Zero-pads centred to `to_size` x `to_size` (MNIST 28 -> 32, digits unchanged)."""

  to_size: int

  uniforms_per_record = 0

  def map(self, element):
    return {**element, "image": self.batch_map(element["image"][None])[0]}

  def batch_map(self, images: np.ndarray, uniforms=None) -> np.ndarray:
    """Pads uint8 images (N, H, W, C); `uniforms` is unused (the map is not random)."""
    del uniforms
    height, width = images.shape[1:3]
    if max(height, width) > self.to_size:
      raise ConfigError(f"Pad: image {height}x{width} is larger than "
                       f"{self.to_size}x{self.to_size}; use augment 'resize_crop' instead")
    top, left = (self.to_size - height) // 2, (self.to_size - width) // 2
    # A slice assignment: np.pad costs several times more per small image.
    out = np.zeros((len(images), self.to_size, self.to_size, images.shape[3]), images.dtype)
    out[:, top:top + height, left:left + width] = images
    return out


@dataclasses.dataclass(frozen=True)
class ResizeCrop(grain.transforms.RandomMap):
  """Resizes the shorter side to `resize`, then crops `crop` x `crop`.

  The crop is uniformly placed when `random` (training), else centred
  (evaluation); `flip` mirrors horizontally with probability 1/2.
  """

  resize: int
  crop: int
  random: bool = True
  flip: bool = False

  def __post_init__(self):
    if self.resize < self.crop:
      raise ConfigError(f"ResizeCrop: resize {self.resize} must be >= crop {self.crop}")

  def random_map(self, element, rng: np.random.Generator):
    image = element["image"]
    height, width = image.shape[:2]
    scale = self.resize / min(height, width)
    # The shorter side becomes exactly `resize`; rounding can't take the other below it.
    size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
    resized = _from_pil(_to_pil(image).resize(size, Image.BILINEAR), image.shape[-1])
    top, left = ((rng.integers(size[1] - self.crop + 1), rng.integers(size[0] - self.crop + 1))
                 if self.random else
                 ((size[1] - self.crop) // 2, (size[0] - self.crop) // 2))
    out = resized[top:top + self.crop, left:left + self.crop]
    if self.flip and rng.random() < 0.5:
      out = out[:, ::-1]
    return {**element, "image": np.ascontiguousarray(out)}


# ITU-R 601-2 luma, as PIL's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class ToChannels(grain.transforms.Map):
  """Makes images have `channels` channels: grey -> RGB repeats, RGB -> grey is luma.

  A 4th (alpha) channel is dropped.
  """

  channels: int

  def map(self, element):
    image = element["image"]
    if image.shape[-1] == 4:
      image = image[..., :3]
    have = image.shape[-1]
    if have == self.channels:
      return {**element, "image": image}
    if have == 1 and self.channels == 3:
      image = np.repeat(image, 3, axis=-1)
    elif have == 3 and self.channels == 1:
      image = np.round(image.astype(np.float32) @ _LUMA)[..., None].astype(np.uint8)
    else:
      raise ConfigError(f"ToChannels: cannot turn {have} channels into {self.channels}")
    return {**element, "image": image}


class MappedSource:
  """A random-access source whose records pass through a deterministic `transform`.

  Domain-defining transforms (e.g. Colorize) belong to the source, so every consumer
  of the domain (training streams, evaluation batches, BalaGAN's union of domains)
  sees the same images.
  """

  def __init__(self, base, transform: grain.transforms.Map):
    self._base, self._transform = base, transform
    self.num_classes = getattr(base, "num_classes", None)

  def __len__(self) -> int:
    return len(self._base)

  def __getitem__(self, index: int):
    return self._transform.map(self._base[index])

  def all_labels(self):
    return self._base.all_labels()


@dataclasses.dataclass(frozen=True)
class Colorize(grain.transforms.Map):
  """Paints a grey image: black becomes `background`, white `foreground` (RGB).

  Gives the embedded digits a second, differently styled domain without downloads.
  """

  foreground: tuple[int, int, int]
  background: tuple[int, int, int]

  def map(self, element):
    image = element["image"]
    grey = image.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    fg, bg = np.asarray(self.foreground, np.float32), np.asarray(self.background, np.float32)
    return {**element, "image": np.round(bg + (fg - bg) * grey).astype(np.uint8)}


@dataclasses.dataclass(frozen=True)
class ExpectShape(grain.transforms.Map):
  """Fails with `context` in the message unless the image has shape `shape`.

  Models are built for one input shape; this turns a mismatching source into an
  error that names the domain instead of a failed batch stack or a shape error
  deep inside the jitted step.
  """

  shape: tuple[int, ...]
  context: str

  def map(self, element):
    if tuple(element["image"].shape) != tuple(self.shape):
      raise ConfigError(f"{self.context}: got an image of shape {element['image'].shape}, "
                       f"expected {tuple(self.shape)}")
    return element


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
  """uint8 [0, 255] -> float32 [-1, 1], the range of the generators' tanh outputs."""

  def map(self, element):
    return {**element, "image": element["image"].astype(np.float32) / 127.5 - 1.0}
