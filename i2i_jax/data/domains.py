"""Domain configs: the fields that describe one domain, and the source they name.

A "domain config" (`default_domain_config`) says where one domain's images come from
(embedded MNIST, a tfds dataset, an image folder), which records to keep, and how
they are shaped and augmented; `domain_source` builds the records it names, before
augmentation. `pipeline` turns a domain config into batches.
"""

import math

import ml_collections
import numpy as np
from ml_collections.config_dict import placeholder

from i2i_jax.data import folders, sources, transforms
from i2i_jax.errors import DataError


def default_domain_config() -> ml_collections.ConfigDict:
  """Every field a domain config has, with defaults for the embedded MNIST digits.

  Optional values use "" or 0 for "unset" (rather than None) so that they can be
  overridden from the command line, e.g. --config.data.source.data_dir=/data.
  """
  cfg = ml_collections.ConfigDict()
  cfg.kind = "embedded_mnist"  # "embedded_mnist" | "tfds" | "folder"
  cfg.name = ""  # tfds dataset name, e.g. "mnist", "svhn_cropped", "celeb_a"
  cfg.split = "train"  # tfds-style: "train", "test", "all", "train[:50%]", "all[10:]"
  cfg.data_dir = ""  # tfds data_dir holding array_record data; "" = tfds' default
  cfg.path = ""  # image folder (kind "folder"); class subfolders give labels
  # Unreadable files in a folder: "skip" (with a count in the log), "fail", or
  # "unchecked" (no up-front decoding pass; a broken file fails when read).
  cfg.corrupt_images = "skip"
  cfg.image_key = "image"  # tfds feature names; label_key "" = unlabelled
  cfg.label_key = "label"
  # Sub-domains: keep only records of this label (-1 = all), e.g. CelebA's women with
  # label_key "attributes/Male" and keep_label 0; then at most max_records (0 = all).
  cfg.keep_label = -1
  cfg.max_records = 0
  cfg.image_size = 32  # output images are image_size x image_size x channels
  cfg.channels = 1
  # Re-sample classes to these frequencies (e.g. skewed_class_probs()); None = as is.
  # A tuple so it can be overridden: --config.data.target.class_probs='(0.1, 0.9)'.
  cfg.class_probs = placeholder(tuple)
  cfg.augment = "pad"  # one of pipeline.AUGMENTS
  cfg.resize = 0  # "resize_crop": shorter side before cropping; 0 = image_size
  cfg.flip = False  # "resize_crop": random horizontal flips while training
  cfg.sr_pad = 8  # "sr_mnist": pad, rotate, random sr_crop x sr_crop crop, resize
  cfg.sr_crop = 40  # 28 + 2 * 8 = 44 -> crop 40 -> 32: digits at scale 0.8
  cfg.sr_max_angle = math.pi / 12
  # Paint grey images (RGB 0-255 triples; both set or neither), e.g. a styled digit domain.
  cfg.colorize_foreground = placeholder(tuple)
  cfg.colorize_background = placeholder(tuple)
  # Hold the domain's decoded images in host memory when they take at most this many
  # MB and `augment` is one of pipeline.BATCH_AUGMENTS (MNIST: 24 MB, SVHN: 225 MB): training
  # then reads and augments whole batches with numpy, many times faster than record
  # by record (JD-BW reads 2 (d + 1) B records per step). 0 = never.
  cfg.cache_mb = 1024
  # Host parallelism per stream; the data never depends on it. -1 = by platform (see
  # `read_threads` and `num_workers`): one thread and no workers on CPU, more on
  # GPU/TPU hosts.
  cfg.read_threads = -1  # threads reading, decoding and augmenting records
  cfg.num_workers = -1  # grain worker processes; 0 = read in the training process
  return cfg


def describe_domain(cfg: ml_collections.ConfigDict) -> str:
  """A short name of the domain for error messages, e.g. "tfds 'mnist' split 'train'"."""
  where = {"tfds": f" {cfg.name!r}", "folder": f" {cfg.path!r}"}.get(cfg.kind, "")
  return f"{cfg.kind}{where} split {cfg.split!r}"


def _embedded(cfg: ml_collections.ConfigDict) -> sources.ArraySource:
  return sources.embedded_mnist_source(cfg.split)


def _tfds(cfg: ml_collections.ConfigDict) -> sources.TfdsSource:
  if not cfg.name:
    raise DataError("a domain of kind 'tfds' needs a dataset name (field `name`)")
  return sources.TfdsSource(cfg.name, cfg.split, data_dir=cfg.data_dir or None,
                            image_key=cfg.image_key, label_key=cfg.label_key or None)


def _folder(cfg: ml_collections.ConfigDict) -> folders.ImageFolderSource:
  if not cfg.path:
    raise DataError("a domain of kind 'folder' needs a directory (field `path`)")
  # "resize_crop" shrinks the shorter side to this; JPEGs can be decoded near it.
  min_size = (cfg.resize or cfg.image_size) if cfg.augment == "resize_crop" else 0
  return folders.ImageFolderSource(cfg.path, channels=cfg.channels, split=cfg.split,
                                   corrupt_images=cfg.corrupt_images, min_size=min_size)


_SOURCE_BUILDERS = {"embedded_mnist": _embedded, "tfds": _tfds, "folder": _folder}


def build_source(cfg: ml_collections.ConfigDict):
  """The source a domain config describes (see `default_domain_config`)."""
  if cfg.kind not in _SOURCE_BUILDERS:
    raise DataError(f"unknown data kind {cfg.kind!r}; valid kinds: {sorted(_SOURCE_BUILDERS)}")
  source = _SOURCE_BUILDERS[cfg.kind](cfg)
  if cfg.keep_label < 0 and cfg.max_records <= 0:
    return source
  labels = sources.source_labels(source)
  indices = np.arange(len(source))
  if cfg.keep_label >= 0:
    if labels is None:
      raise DataError(f"keep_label={cfg.keep_label} needs labels, but the {cfg.kind} source "
                       f"{cfg.name or cfg.path or cfg.split!r} has none (set label_key)")
    indices = indices[labels == cfg.keep_label]
  if cfg.max_records > 0:
    indices = indices[:cfg.max_records]
  return sources.SubsetSource(source, indices, labels)


def domain_source(cfg: ml_collections.ConfigDict):
  """The domain's records before augmentation: its source plus any colorization."""
  source = build_source(cfg)
  if cfg.colorize_foreground or cfg.colorize_background:
    source = transforms.MappedSource(source, transforms.Colorize(
        tuple(cfg.colorize_foreground), tuple(cfg.colorize_background)))
  return source
