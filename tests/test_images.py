"""Image grids and PNG files."""

import numpy as np
import pytest
from PIL import Image

from i2i_jax import images


def test_to_uint8_maps_minus_one_to_one_onto_0_255_and_clips():
  x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0], np.float32)
  np.testing.assert_array_equal(images.to_uint8(x), [0, 0, 128, 255, 255])
  assert images.to_uint8(x).dtype == np.uint8


def test_to_uint8_passes_uint8_through_and_rejects_ints():
  x = np.arange(6, dtype=np.uint8)
  assert images.to_uint8(x) is x
  with pytest.raises(ValueError, match="int64"):
    images.to_uint8(np.arange(3))


def test_make_grid_layout_and_padding():
  source = -np.ones((3, 4, 5, 3), np.float32)  # black
  translated = np.ones((3, 4, 5, 3), np.float32)  # white
  grid = images.make_grid([source, translated], pad=2, pad_value=7)
  assert grid.shape == (2 * 4 + 3 * 2, 3 * 5 + 4 * 2, 3) and grid.dtype == np.uint8
  assert (grid[2:6, 2:7] == 0).all() and (grid[8:12, 2:7] == 255).all()
  assert (grid[:2] == 7).all() and (grid[6:8] == 7).all() and (grid[:, 7:9] == 7).all()


def test_make_grid_pads_short_rows():
  grid = images.make_grid([np.zeros((3, 2, 2, 1), np.uint8), np.zeros((1, 2, 2, 1), np.uint8)],
                          pad=1, pad_value=255)
  assert grid.shape == (2 * 2 + 3, 3 * 2 + 4, 1)
  assert (grid[4:6, 1:3] == 0).all()  # The short row's one image ...
  assert (grid[4:6, 4:6] == 255).all() and (grid[4:6, 7:9] == 255).all()  # ... then filler.


def test_make_grid_repeats_grey_rows_when_mixed_with_rgb():
  grey = np.full((2, 3, 3, 1), 50, np.uint8)
  rgb = np.zeros((2, 3, 3, 3), np.uint8)
  grid = images.make_grid([grey, rgb], pad=0)
  assert grid.shape == (6, 6, 3)
  assert (grid[:3] == 50).all() and (grid[3:] == 0).all()


def test_make_grid_rejects_mismatched_sizes():
  with pytest.raises(ValueError, match="image size"):
    images.make_grid([np.zeros((1, 4, 4, 3)), np.zeros((1, 8, 8, 3))])


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_png_round_trip(tmp_path, channels, mode):
  image = np.random.default_rng(0).integers(0, 256, (6, 7, channels), dtype=np.uint8)
  path = tmp_path / "a" / "b" / "grid.png"
  images.save_png(path, image)
  with Image.open(path) as png:
    assert png.mode == mode
    np.testing.assert_array_equal(np.asarray(png).reshape(image.shape), image)


def test_save_png_converts_floats(tmp_path):
  images.save_png(tmp_path / "x.png", -np.ones((2, 2, 3), np.float32))
  with Image.open(tmp_path / "x.png") as png:
    assert (np.asarray(png) == 0).all()
