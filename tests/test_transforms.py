"""Class re-sampling and the grain transforms (SR-MNIST geometry, pad, crops, channels)."""

import math
import pickle

import grain
import numpy as np
import pytest
from PIL import Image

from i2i_jax.data import sources, transforms


def _binomial_ok(counts, probs, n, sigmas=4.0):
  """Every count within `sigmas` binomial standard deviations of n * p."""
  probs = np.asarray(probs)
  return np.all(np.abs(counts - n * probs) <= sigmas * np.sqrt(n * probs * (1 - probs)) + 1)


# ----------------------------------------------------------------------------- re-sampling

def test_skewed_class_probs():
  probs = transforms.skewed_class_probs(num_classes=10, skew_class=0, skew_prob=0.5)
  assert len(probs) == 10 and math.isclose(sum(probs), 1.0)
  assert probs[0] == 0.5 and all(math.isclose(p, 0.5 / 9) for p in probs[1:])
  assert transforms.skewed_class_probs(2, skew_class=1, skew_prob=0.9) == pytest.approx([0.1, 0.9])
  with pytest.raises(ValueError):
    transforms.skewed_class_probs(10, skew_class=10)


def test_sr_mnist_class_frequencies():
  base = sources.embedded_mnist_source("train")
  probs = transforms.skewed_class_probs()
  n = 5000
  source = transforms.ClassResampledSource(base, base.all_labels(), probs, length=n, seed=3)
  labels = source.all_labels()
  counts = np.bincount(labels, minlength=10)
  assert _binomial_ok(counts, probs, n), counts
  # Records agree with the labels, and come from the right class of the base.
  for i in range(0, n, 500):
    assert source[i]["label"] == labels[i]
  # Deterministic per seed; another seed gives another set.
  again = transforms.ClassResampledSource(base, base.all_labels(), probs, length=n, seed=3)
  np.testing.assert_array_equal(again.all_labels(), labels)
  other = transforms.ClassResampledSource(base, base.all_labels(), probs, length=n, seed=4)
  assert (other.all_labels() != labels).mean() > 0.3


def test_ninety_percent_shoes_from_an_imbalanced_base():
  labels = np.array([0] * 200 + [1] * 30)  # 200 bags, 30 shoes.
  images = np.arange(230, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  base = sources.ArraySource(images, labels)
  source = transforms.ClassResampledSource(base, labels, [0.1, 0.9], length=5000, seed=0)
  assert len(source) == 5000 and source.num_classes == 2
  counts = np.bincount(source.all_labels(), minlength=2)
  assert _binomial_ok(counts, [0.1, 0.9], 5000), counts
  # Within a class the draw is uniform: all 30 shoes show up, each about 150 times.
  shoes = [int(source[i]["image"][0, 0, 0]) for i in range(600)]
  shoes = np.array([s for s in shoes if s >= 200])
  assert set(shoes) == set(range(200, 230))


def test_class_resampling_errors():
  labels = np.array([0, 0, 1])
  base = sources.ArraySource(np.zeros((3, 2, 2), np.uint8), labels)
  with pytest.raises(ValueError, match="sum to 1"):
    transforms.ClassResampledSource(base, labels, [0.5, 0.4])
  with pytest.raises(ValueError, match="class 2 has probability 0.2 but no samples"):
    transforms.ClassResampledSource(base, labels, [0.4, 0.4, 0.2])
  # A class without samples is fine if it is never drawn.
  assert len(transforms.ClassResampledSource(base, labels, [0.5, 0.5, 0.0])) == 3


# ----------------------------------------------------------------------------- SR-MNIST geometry

def _ink_stats(images):
  """Centre of mass (y, x) and RMS radius of the ink of each (H, W, 1) image."""
  images = images[..., 0].astype(np.float64)
  ys, xs = np.indices(images.shape[1:])
  mass = images.sum(axis=(1, 2))
  cy = (images * ys).sum(axis=(1, 2)) / mass
  cx = (images * xs).sum(axis=(1, 2)) / mass
  radius = np.sqrt((images * ((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2))
                   .sum(axis=(1, 2)) / mass)
  return cy, cx, radius


def test_skew_resize_makes_digits_smaller_and_off_centre():
  digits, _ = sources.load_embedded_mnist()
  digits = digits[:200]
  skew = transforms.SkewResize(pad=8, crop=40, out_size=32)
  pad = transforms.Pad(32)
  skewed = np.stack([skew.random_map({"image": d, "label": np.int32(0)},
                                     np.random.default_rng(i))["image"]
                     for i, d in enumerate(digits)])
  padded = np.stack([pad.map({"image": d, "label": np.int32(0)})["image"] for d in digits])
  assert skewed.shape == (200, 32, 32, 1) and skewed.dtype == np.uint8
  cy_s, cx_s, r_s = _ink_stats(skewed)
  cy_p, cx_p, r_p = _ink_stats(padded)
  assert 0.7 < np.median(r_s / r_p) < 0.9  # Scale 32 / 40 = 0.8.
  shift = np.hypot(cy_s - 15.5 - (cy_p - 15.5) * 0.8, cx_s - 15.5 - (cx_p - 15.5) * 0.8)
  assert np.median(shift) > 0.5 and shift.max() < 4  # Random crop offsets up to 2 * 0.8 px.


def test_skew_resize_is_deterministic_per_rng_and_keeps_labels():
  digit = sources.load_embedded_mnist()[0][7]
  record = {"image": digit, "label": np.int32(4)}
  skew = transforms.SkewResize(pad=8, crop=40, out_size=32)
  a = skew.random_map(record, np.random.default_rng([1, 2]))
  b = skew.random_map(record, np.random.default_rng([1, 2]))
  c = skew.random_map(record, np.random.default_rng([1, 3]))
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  assert a["label"] == 4
  rgb = skew.random_map({"image": np.repeat(digit, 3, -1), "label": 0}, np.random.default_rng(0))
  assert rgb["image"].shape == (32, 32, 3)
  with pytest.raises(ValueError, match="crop 50 exceeds"):
    transforms.SkewResize(pad=8, crop=50, out_size=32).random_map(record, np.random.default_rng(0))


def test_skew_resize_batch_map_resamples_as_pil_affine():
  digits = sources.load_embedded_mnist()[0][:64]
  skew = transforms.SkewResize(pad=8, crop=40, out_size=32)
  uniforms = transforms.record_uniforms(0, np.arange(64), 3)
  batch = skew.batch_map(digits, uniforms)
  # The same geometry through PIL: pad, rotate about the centre, crop, resize (bilinear).
  for digit, (u_angle, u_top, u_left), out in zip(digits[:16], uniforms, batch):
    angle = math.degrees((2 * u_angle - 1) * skew.max_angle)
    top, left = int(u_top * 5), int(u_left * 5)  # 44 - 40 + 1 crop offsets
    padded = Image.fromarray(np.pad(digit[..., 0], 8))
    rotated = padded.rotate(angle, resample=Image.BILINEAR)
    cropped = rotated.crop((left, top, left + 40, top + 40))
    reference = np.asarray(cropped.resize((32, 32), Image.BILINEAR), np.float32)
    # Two interpolations blur more than one: 1.3-2.7 grey levels apart on average
    # here, where another draw of the geometry is 10-30 apart.
    assert np.abs(out[..., 0] - reference).mean() < 5
    assert np.corrcoef(out[..., 0].ravel(), reference.ravel())[0, 1] > 0.97
  # One record through random_map is one row of the batch form.
  rng = np.random.default_rng(5)
  single = skew.random_map({"image": digits[3], "label": 0}, rng)["image"]
  np.testing.assert_array_equal(single, skew.batch_map(
      digits[3:4], np.random.default_rng(5).random((1, 3)))[0])


def test_affine_bilinear_matches_pil_and_is_zero_outside():
  digits = sources.load_embedded_mnist()[0][:32]
  rng = np.random.default_rng(0)
  angles = rng.uniform(-0.3, 0.3, 32)
  matrices = np.stack([1.2 * np.cos(angles), 1.2 * np.sin(angles), rng.uniform(-4, 4, 32),
                       -1.2 * np.sin(angles), 1.2 * np.cos(angles), rng.uniform(-4, 4, 32)], -1)
  ours = transforms._affine_bilinear(digits, matrices, 32)
  pil = np.stack([np.asarray(Image.fromarray(d[..., 0]).transform(
      (32, 32), Image.AFFINE, tuple(m), Image.BILINEAR)) for d, m in zip(digits, matrices)])
  # PIL returns 0 for samples in the half pixel past the border instead of blending.
  differ = np.abs(ours[..., 0].astype(int) - pil) > 1
  assert differ.mean() < 1e-3
  shifted = transforms._affine_bilinear(digits[:1], np.array([[1, 0, 100, 0, 1, 0]]), 32)
  assert not shifted.any()


def test_record_uniforms_are_counter_based():
  u = transforms.record_uniforms(7, np.arange(20_000), 3)
  assert u.shape == (20_000, 3) and u.dtype == np.float64
  assert 0 <= u.min() and u.max() < 1
  counts = np.histogram(u, bins=10, range=(0, 1))[0]
  assert _binomial_ok(counts, [0.1] * 10, u.size)
  assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
  # The numbers of a position do not depend on which other positions are drawn with it.
  np.testing.assert_array_equal(
      transforms.record_uniforms(7, np.array([19_999, 5]), 3), u[[19_999, 5]])
  assert not np.array_equal(transforms.record_uniforms(8, np.arange(5), 3), u[:5])


# ----------------------------------------------------------------------------- simple transforms

def test_pad_centres_and_rejects_large_images():
  image = np.full((28, 28, 1), 9, np.uint8)
  out = transforms.Pad(32).map({"image": image, "label": 1})
  assert out["image"].shape == (32, 32, 1) and out["label"] == 1
  np.testing.assert_array_equal(out["image"][2:30, 2:30], image)
  assert out["image"].sum() == image.sum()
  with pytest.raises(ValueError, match="40x28 is larger than 32x32"):
    transforms.Pad(32).map({"image": np.zeros((40, 28, 1), np.uint8), "label": 1})


def test_resize_crop_random_centre_and_flip():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)  # Portrait, odd aspect.
  record = {"image": image, "label": np.int32(2)}
  centre = transforms.ResizeCrop(resize=36, crop=32, random=False)
  a = centre.random_map(record, np.random.default_rng(1))["image"]
  b = centre.random_map(record, np.random.default_rng(2))["image"]
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  expected = np.asarray(Image.fromarray(image).resize((36, 54), Image.BILINEAR))[11:43, 2:34]
  np.testing.assert_array_equal(a, expected)
  crops = [transforms.ResizeCrop(36, 32).random_map(record, np.random.default_rng(i))["image"]
           for i in range(8)]
  assert len({c.tobytes() for c in crops}) > 4
  flip = transforms.ResizeCrop(32, 32, random=False, flip=True)
  flips = [flip.random_map({"image": image[:40], "label": 0}, np.random.default_rng(i))["image"]
           for i in range(16)]
  plain = np.asarray(Image.fromarray(image[:40]).resize((32, 32), Image.BILINEAR))
  mirrored = sum(np.array_equal(f, plain[:, ::-1]) for f in flips)
  assert 0 < mirrored < 16 and mirrored + sum(np.array_equal(f, plain) for f in flips) == 16
  grey = transforms.ResizeCrop(32, 32).random_map({"image": image[..., :1], "label": 0},
                                                  np.random.default_rng(0))
  assert grey["image"].shape == (32, 32, 1)
  with pytest.raises(ValueError, match="resize 20 must be >= crop 32"):
    transforms.ResizeCrop(20, 32)


def test_to_channels():
  grey = np.arange(12, dtype=np.uint8).reshape(2, 6, 1)
  rgb = transforms.ToChannels(3).map({"image": grey, "label": 0})["image"]
  assert rgb.shape == (2, 6, 3) and (rgb == grey).all()
  colour = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
  luma = transforms.ToChannels(1).map({"image": colour, "label": 0})["image"]
  expected = np.asarray(Image.fromarray(colour).convert("L"))[..., None]
  assert luma.shape == (5, 7, 1) and np.abs(luma.astype(int) - expected).max() <= 1
  rgba = np.concatenate([colour, np.zeros((5, 7, 1), np.uint8)], -1)
  np.testing.assert_array_equal(transforms.ToChannels(3).map({"image": rgba})["image"], colour)
  with pytest.raises(ValueError, match="cannot turn 2 channels into 3"):
    transforms.ToChannels(3).map({"image": np.zeros((2, 2, 2), np.uint8)})


def test_to_float_and_expect_shape():
  image = np.array([0, 255, 128], np.uint8).reshape(1, 3, 1)
  out = transforms.ToFloat().map({"image": image, "label": np.int32(5)})
  assert out["image"].dtype == np.float32 and out["label"] == 5
  np.testing.assert_allclose(out["image"].ravel(), [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)
  check = transforms.ExpectShape((1, 3, 1), "domain X")
  assert check.map(out) is out
  with pytest.raises(ValueError, match=r"domain X: got an image of shape \(1, 3, 1\), "
                                       r"expected \(32, 32, 1\)"):
    transforms.ExpectShape((32, 32, 1), "domain X").map(out)


def test_transforms_and_sources_pickle():
  base = sources.embedded_mnist_source("test")
  objects = [transforms.SkewResize(8, 40, 32), transforms.Pad(32), transforms.ResizeCrop(36, 32),
             transforms.ToChannels(3), transforms.ToFloat(), transforms.ExpectShape((2,), "x"),
             transforms.ClassResampledSource(base, base.all_labels(), [0.1] * 10, seed=1)]
  element = base[3]
  for obj in objects:
    copy = pickle.loads(pickle.dumps(obj))
    assert type(copy) is type(obj)
    if isinstance(obj, transforms.ClassResampledSource):  # the same draws, record by record
      assert len(copy) == len(obj)
      for index in (0, 7, len(obj) - 1):
        np.testing.assert_array_equal(copy[index]["image"], obj[index]["image"])
    elif isinstance(obj, transforms.ExpectShape):  # the same check
      with pytest.raises(ValueError, match=r"x: got an image of shape"):
        copy.map(element)
    elif isinstance(obj, grain.transforms.RandomMap):  # the same output for the same seed
      np.testing.assert_array_equal(
          copy.random_map(dict(element), np.random.default_rng(5))["image"],
          obj.random_map(dict(element), np.random.default_rng(5))["image"])
    else:
      np.testing.assert_array_equal(copy.map(dict(element))["image"],
                                    obj.map(dict(element))["image"])
  restored = pickle.loads(pickle.dumps(objects[-1]))
  np.testing.assert_array_equal(restored[3]["image"], objects[-1][3]["image"])


def test_colorize_paints_black_and_white():
  image = np.array([[[0], [255]]], np.uint8)
  out = transforms.Colorize((255, 190, 40), (20, 30, 90)).map({"image": image, "label": 1})
  np.testing.assert_array_equal(out["image"][0, 0], [20, 30, 90])
  np.testing.assert_array_equal(out["image"][0, 1], [255, 190, 40])
  assert out["label"] == 1
