"""Image folders as sources: one folder per domain, optional class subfolders.

Files are decoded with PIL on access; grayscale, RGBA (composited on white), palette
and odd-sized images are converted to the domain's channels. Every file is decoded
once up front (`corrupt_images`), so a broken one cannot stop a run hours in.
Folders may be local or on gs:// (etils.epath).
"""

import collections
import concurrent.futures
import os
from collections.abc import Iterator

import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from i2i_jax.data.sources import NO_LABEL, interleave_classes, split_indices
from i2i_jax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
    self.root = epath.Path(root)
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


def _is_image(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: epath.Path) -> Iterator[tuple[tuple[str, ...], list[str]]]:
  """(folder as parts relative to `root`, its file names) of every folder under `root`.

  One listing per folder and no request per file: on an object store each request
  is a round trip. epath's walk yields gs:// folders without their scheme, so only
  their part below `root` is used.
  """
  top = None
  for folder, _, files in root.walk():
    folder = os.fspath(folder)
    top = folder if top is None else top
    relative = folder[len(top):].strip("/")
    yield tuple(relative.split("/")) if relative else (), files


def _list_images(root: epath.Path) -> tuple[list[epath.Path], np.ndarray, list[str]]:
  """(sorted paths, int32 labels, class names) of the images under `root`."""
  if not root.is_dir():
    raise DataError(f"image folder {root} does not exist (or is not a directory)")
  loose, found = [], collections.defaultdict(list)
  for parts, files in _walk(root):
    paths = [root.joinpath(*parts, name) for name in files if _is_image(name)]
    if not parts:
      loose = sorted(paths)
    elif not parts[0].startswith("."):
      found[parts[0]].extend(paths)
  classes = {name: sorted(found[name]) for name in sorted(found) if found[name]}
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


def _check_images(root: epath.Path, paths: list[epath.Path], labels: np.ndarray,
                  policy: str) -> tuple[list[epath.Path], np.ndarray, list[str]]:
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


def _decode_problem(path: epath.Path) -> str:
  """Why `path` cannot be decoded, or "" if it can."""
  try:
    with path.open("rb") as f, Image.open(f) as image:
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
    with epath.Path(path).open("rb") as f, Image.open(f) as image:
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
