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
    labels: the label of every record of `base` (see `datasets.source_labels`).
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


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Zero-pads `image` centred to (height, width)."""
  top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
  # A slice assignment: np.pad costs several times more per small image.
  out = np.zeros((height, width, image.shape[2]), image.dtype)
  out[top:top + image.shape[0], left:left + image.shape[1]] = image
  return out


@dataclasses.dataclass(frozen=True)
class SkewResize(grain.transforms.RandomMap):
  """SR-MNIST geometry: pad, rotate by a random angle, random crop, resize.

  "The images are then padded, randomly rotated by the angle in (-pi/12, pi/12)
  and randomly cropped. The resulting digits are slightly smaller than the
  original ones and not necessarily centered." E.g. a 28x28 digit padded by 8
  (44x44), rotated, cropped at a random 40x40 window and resized to 32 ends up
  at scale 32/40 = 0.8 and off-centre by up to 2 px.

  The three steps are one affine map, so the image is resampled once (bilinear;
  zeros outside the digit's image stand for the padding): several times faster per
  record than padding, rotating and resizing in turn, and one interpolation
  instead of two.
  """

  pad: int
  crop: int
  out_size: int
  max_angle: float = math.pi / 12  # radians

  def random_map(self, element, rng: np.random.Generator):
    image = element["image"]
    height, width = image.shape[0] + 2 * self.pad, image.shape[1] + 2 * self.pad
    if self.crop > min(height, width):
      raise ConfigError(f"SkewResize: crop {self.crop} exceeds the padded image "
                       f"{height}x{width} ({image.shape[:2]} + 2 * pad {self.pad})")
    # Counter-clockwise by `angle` about the padded image's centre, as PIL's rotate.
    angle = rng.uniform(-self.max_angle, self.max_angle)
    top = rng.integers(height - self.crop + 1)
    left = rng.integers(width - self.crop + 1)
    cos, sin = math.cos(-angle), math.sin(-angle)
    scale = self.crop / self.out_size
    cx, cy = width / 2, height / 2
    # Output pixel o -> crop window (scale * o + (left, top)) in the rotated padded
    # image -> padded image (rotation about its centre) -> the unpadded image.
    ox, oy = left - cx, top - cy
    matrix = (scale * cos, scale * sin, cos * ox + sin * oy + cx - self.pad,
              -scale * sin, scale * cos, -sin * ox + cos * oy + cy - self.pad)
    out = _to_pil(image).transform((self.out_size, self.out_size), Image.AFFINE, matrix,
                                   Image.BILINEAR)
    return {**element, "image": _from_pil(out, image.shape[-1])}


@dataclasses.dataclass(frozen=True)
class Pad(grain.transforms.Map):
  """Zero-pads centred to `to_size` x `to_size` (MNIST 28 -> 32, digits unchanged)."""

  to_size: int

  def map(self, element):
    image = element["image"]
    if max(image.shape[:2]) > self.to_size:
      raise ConfigError(f"Pad: image {image.shape[0]}x{image.shape[1]} is larger than "
                       f"{self.to_size}x{self.to_size}; use augment 'resize_crop' instead")
    return {**element, "image": _pad_to(image, self.to_size, self.to_size)}


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
