"""A tiny tfds dataset written as array_record, for tests of `TfdsSource` (no TensorFlow).

The builder lives in an importable module: grain workers are spawned and must
import the class by reference (a class defined in `__main__` or in a test body
would be pickled by value and registered twice).
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NUM_EXAMPLES = 40
SIZE = 28


def digit_image(label: int, index: int) -> np.ndarray:
  """A (SIZE, SIZE) uint8 image whose mean brightness encodes the label."""
  rng = np.random.default_rng(index)
  noise = rng.integers(0, 8, (SIZE, SIZE))
  return (noise + 20 * label).astype(np.uint8)


class TinyDigits(tfds.core.GeneratorBasedBuilder):
  """40 greyscale 28x28 "digits": an MNIST stand-in with a PNG image and a raw tensor."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
            # A second view of the same pixels without a channel axis: (H, W).
            "pixels": tfds.features.Tensor(shape=(SIZE, SIZE), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples(0, 30), "test": self._generate_examples(30, 40)}

  def _generate_examples(self, start: int, stop: int):
    for index in range(start, stop):
      label = index % 10
      pixels = digit_image(label, index)
      png = io.BytesIO()
      # Numpy images would need TensorFlow to encode; PNG bytes do not.
      Image.fromarray(pixels, "L").save(png, format="PNG")
      yield index, {"image": io.BytesIO(png.getvalue()), "pixels": pixels, "label": label}


def prepare(data_dir: str) -> str:
  """Writes the dataset under `data_dir` in array_record format; returns its name."""
  tfds.disable_progress_bar()
  builder = TinyDigits(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder.name
