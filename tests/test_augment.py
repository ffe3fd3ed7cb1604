"""SimCLR augmentations on device (Section 3.1, Appendix B)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from balagan_jax import augment
from i2i_jax.errors import ConfigError

KEY = jax.random.key(0, impl="rbg")  # rbg: XLA:CPU compiles threefry slowly


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(1, impl="rbg"), (4, 32, 32, 3), minval=-1.0, maxval=1.0)


def test_named_sets_use_known_operations():
  assert augment.AUGMENTATION_SETS["afd"] == (
      "crop", "horizontal_flip", "color_jitter", "grayscale", "blur")
  for names in augment.AUGMENTATION_SETS.values():
    assert set(names) <= set(augment.AUGMENTATIONS)
  assert "shuffle" in augment.AUGMENTATION_SETS["style"]  # style: colour kept, layout destroyed
  assert "color_jitter" in augment.AUGMENTATION_SETS["content"]  # content: colour destroyed


def test_shapes_range_and_determinism(images):
  names = augment.AUGMENTATIONS
  out = augment.augment_batch(KEY, images, names)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, augment.augment_batch(KEY, images, names))
  other = augment.augment_batch(jax.random.key(7, impl="rbg"), images, names)
  assert float(jnp.abs(out - other).max()) > 1e-3


def test_each_image_gets_its_own_randomness(images):
  same = jnp.broadcast_to(images[:1], images.shape)
  out = augment.augment_batch(KEY, same, augment.AUGMENTATION_SETS["afd"])
  assert float(jnp.abs(out[0] - out[1]).max()) > 1e-3


def test_forced_grayscale_makes_channels_equal(images):
  out = augment.augment_batch(KEY, images, ["grayscale"], probabilities={"grayscale": 1.0})
  np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)
  luma = ((images + 1) / 2) @ jnp.array(augment.LUMA) * 2 - 1
  np.testing.assert_allclose(out[..., 0], luma, atol=1e-5)


def test_crop_changes_content_but_keeps_constant_images(images):
  out = augment.augment_batch(KEY, images, ["crop"])
  assert float(jnp.abs(out - images).mean()) > 0.1
  flat = jnp.full(images.shape, 0.25)
  np.testing.assert_allclose(augment.augment_batch(KEY, flat, ["crop"]), flat, atol=1e-5)


def test_crop_is_a_zoom_into_the_image():
  # A horizontal ramp: any crop is again a monotone ramp covering a sub-range.
  ramp = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, 32)[None, None, :, None], (4, 32, 32, 3))
  out = np.asarray(augment.augment_batch(KEY, ramp, ["crop"]))
  assert np.all(np.diff(out[:, 16, :, 0], axis=-1) >= -1e-5)
  assert np.all(out[:, :, 0, 0] >= -1.0 - 1e-6) and np.all(out[:, :, -1, 0] <= 1.0 + 1e-6)
  assert np.any(out[:, 16, -1, 0] - out[:, 16, 0, 0] < 1.5)  # some crop is a real zoom-in


def test_crop_scale_bounds_the_zoom():
  # On a horizontal ramp a crop of width w spans 2 w / 32 of the [-1, 1] range; a
  # crop of area fraction >= 0.8 and ratio <= 4/3 is at least sqrt(0.8 * 3 / 4) wide.
  ramp = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, 32)[None, None, :, None], (64, 32, 32, 3))
  span = lambda out: np.asarray(out[:, 16, -1, 0] - out[:, 16, 0, 0])
  wide = span(augment.augment_batch(KEY, ramp, ["crop"], crop_scale=(0.8, 1.0)))
  default = span(augment.augment_batch(KEY, ramp, ["crop"]))
  assert wide.min() > 2 * np.sqrt(0.8 * 3 / 4) * 31 / 32 - 0.1
  assert default.min() < wide.min()  # SimCLR's 0.08 lower bound zooms further
  with pytest.raises(ConfigError, match="crop_scale"):
    augment.augment_batch(KEY, ramp, ["crop"], crop_scale=(0.0, 1.0))


def test_forced_flip_mirrors(images):
  out = augment.augment_batch(KEY, images, ["horizontal_flip"],
                              probabilities={"horizontal_flip": 1.0})
  np.testing.assert_array_equal(out, images[:, :, ::-1])


def test_forced_shuffle_permutes_whole_tiles(images):
  out = augment.augment_batch(KEY, images, ["shuffle"], probabilities={"shuffle": 1.0})

  def tiles(x):  # (B, 64, 4, 4, 3) for 8 x 8 tiles of 4 x 4 pixels
    return np.asarray(x).reshape(4, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, 64, -1)

  a, b = tiles(images), tiles(out)
  for i in range(4):
    np.testing.assert_allclose(np.sort(a[i], axis=0), np.sort(b[i], axis=0), atol=1e-6)
  assert float(jnp.abs(out - images).max()) > 0


def test_color_jitter_with_zero_strength_is_identity(images):
  out = augment.augment_batch(KEY, images, ["color_jitter"], jitter_strength=0.0,
                              probabilities={"color_jitter": 1.0})
  np.testing.assert_allclose(out, images, atol=1e-5)
  jittered = augment.augment_batch(KEY, images, ["color_jitter"],
                                   probabilities={"color_jitter": 1.0})
  assert float(jnp.abs(jittered - images).mean()) > 0.01


def test_hsv_round_trip():
  rgb = jax.random.uniform(jax.random.key(2, impl="rbg"), (16, 16, 3))
  np.testing.assert_allclose(jax.jit(lambda a: augment.hsv_to_rgb(augment.rgb_to_hsv(a)))(rgb), rgb,
                             atol=1e-5)
  primaries = jnp.eye(3)[None]  # red, green, blue pixels; a third of a turn maps r -> g -> b -> r
  np.testing.assert_allclose(jax.jit(augment.adjust_hue)(primaries, 1.0 / 3.0),
                             jnp.eye(3)[:, [2, 0, 1]][None], atol=1e-5)


def test_forced_blur_smooths_and_keeps_constants(images):
  out = augment.augment_batch(KEY, images, ["blur"], probabilities={"blur": 1.0})
  assert float(out.std()) < 0.8 * float(images.std())
  flat = jnp.full(images.shape, -0.5)
  blurred_flat = augment.augment_batch(KEY, flat, ["blur"], probabilities={"blur": 1.0})
  np.testing.assert_allclose(blurred_flat, flat, atol=1e-5)
  assert augment.blur_kernel_size(128) == 11  # the authors' int(0.1 * 128 - 1)
  assert augment.blur_kernel_size(32) == 3


def test_rejects_unknown_names(images):
  with pytest.raises(ValueError, match="unknown augmentations"):
    augment.augment_batch(KEY, images, ["crop", "gray_scale"])
  with pytest.raises(ValueError, match="no probability"):
    augment.augment_batch(KEY, images, ["crop"], probabilities={"crop": 0.5})
