"""Turning model outputs into image grids and PNG files.

Models work on float images in [-1, 1] (tanh outputs); everything here converts to
uint8 first, so grids and files look the same whether they come from model
outputs or from raw uint8 data.
"""

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from i2i_jax import files


def to_uint8(x) -> np.ndarray:
  """Float images in [-1, 1] -> uint8 in [0, 255] (clipped); uint8 passes through."""
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"expected float images in [-1, 1] or uint8, got dtype {x.dtype}")
  return np.round((np.clip(x.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def make_grid(rows: Sequence, pad: int = 2, pad_value: int = 255) -> np.ndarray:
  """Lays out image batches as the rows of one (H', W', C) uint8 image.

  Each element of `rows` is an (N, H, W, C) batch in [-1, 1] or uint8, e.g. the
  source, translated and translated-back images of the papers' figures, so
  column j shows what happened to one source image. Rows may differ in N (short
  rows are filled with `pad_value`) and mix grey with colour rows (grey is then
  repeated to RGB). `pad` pixels of `pad_value` surround every cell.
  """
  rows = [to_uint8(r) for r in rows]
  if not rows:
    raise ValueError("make_grid needs at least one row")
  for i, r in enumerate(rows):
    if r.ndim != 4 or r.shape[-1] not in (1, 3):
      raise ValueError(f"row {i} must be (N, H, W, C) with C in (1, 3), got {r.shape}")
  cell_shapes = {r.shape[1:3] for r in rows}
  if len(cell_shapes) != 1:
    raise ValueError(f"all rows must share the image size, got {sorted(cell_shapes)}")
  (h, w), = cell_shapes
  channels = max(r.shape[-1] for r in rows)
  ncols = max(r.shape[0] for r in rows)
  grid = np.full(((h + pad) * len(rows) + pad, (w + pad) * ncols + pad, channels),
                 pad_value, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = image  # broadcasts grey to RGB
  return grid


def save_png(path: str | os.PathLike, image) -> None:
  """Writes an (H, W, C) image ([-1, 1] float or uint8) as PNG, creating parent dirs
  (`files.write_atomic`: whole or absent)."""
  image = to_uint8(image)
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected an (H, W, C) image with C in (1, 3, 4), got {image.shape}")
  encoded = io.BytesIO()
  # A 2-D uint8 array becomes a mode "L" (grey) image.
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(encoded, format="PNG")
  files.write_atomic(path, encoded.getvalue())
