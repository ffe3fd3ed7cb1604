"""TensorBoard metric writer that needs no TensorFlow, plus a tiny event-file reader.

clu's `metric_writers` hard-imports TensorFlow, which this stack does not install,
so `MetricWriter` duck-types clu's MetricWriter interface on top of tensorboardX
and logs scalars through absl like clu's LoggingWriter does. The reader exists
because tensorboard (the reader side) is not installed either, and tests need to
check what a run wrote.
"""

import collections
import io
import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorboardX
from absl import logging
from etils import epath
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

_EVENT_FILE_GLOB = "events.out.tfevents.*"
_TEXT_TAG_SUFFIX = "/text_summary"  # tensorboardX appends this to text tags.


class _GcsEventFile:
  """A gs:// event file written through etils.epath (gcsfs), like every other file of a
  run; rewritten whole at each flush, as objects cannot be appended to.

  It replaces tensorboardX's own gs:// writer, which needs google-cloud-storage and
  uploads the file again whenever it is garbage-collected (at exit, too).
  """

  def __init__(self, path: str):
    self._path = epath.Path(path)
    self._buffer = io.BytesIO()

  def write(self, data: bytes):
    self._buffer.write(data)

  def flush(self):
    self._path.write_bytes(self._buffer.getvalue())

  def close(self):
    self.flush()


class _GcsEventFiles:
  """tensorboardX's writer factory interface for gs:// paths."""

  def open(self, path: str) -> _GcsEventFile:
    return _GcsEventFile(path)

  def directory_check(self, path: str):
    del path  # Object stores have no directories to create.


record_writer.register_writer_factory("gs", _GcsEventFiles())


class MetricWriter:
  """Writes scalars, images and texts as TensorBoard events; scalars also to the log.

  Only one process should write a run's events, so by default every process but
  `jax.process_index() == 0` gets a writer whose methods do nothing; callers can
  then write unconditionally.

  `flush` makes what was written durable by closing the event file (tensorboardX's
  own flush leaves queued events unwritten, and a gs:// event file is uploaded only
  when flushed); the next write opens another file in the same directory.
  """

  def __init__(self, logdir: str | os.PathLike, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._logdir = os.fspath(logdir)
    self._files = 0
    self._file_writer = None

  @property
  def _writer(self) -> tensorboardX.SummaryWriter:
    if self._file_writer is None:
      self._files += 1
      # tensorboardX names files by the second, so writers opened on one directory
      # within a second (other processes, other writers, this one after a flush)
      # would overwrite each other without this suffix.
      self._file_writer = tensorboardX.SummaryWriter(
          logdir=self._logdir, filename_suffix=f".{os.getpid()}.{id(self)}.{self._files}")
    return self._file_writer

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if not self.enabled:
      return
    values = {k: _scalar(k, v) for k, v in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    for tag, value in values.items():
      self._writer.add_scalar(tag, value, global_step=step)

  def write_images(self, step: int, images: Mapping[str, Any]):
    """Writes each (N,H,W,C) or (H,W,C) image; N > 1 images are tiled into one."""
    if not self.enabled:
      return
    for tag, image in images.items():
      self._writer.add_images(tag, _nhwc_uint8(tag, image), global_step=step,
                              dataformats="NHWC")

  def write_texts(self, step: int, texts: Mapping[str, str]):
    if not self.enabled:
      return
    for tag, text in texts.items():
      self._writer.add_text(tag, str(text), global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any] | ml_collections.ConfigDict):
    """Writes hyper-parameters as a markdown table (tag "hparams", step 0)."""
    if not self.enabled:
      return
    flat = _flatten(hparams)
    logging.info("hparams: %s", flat)
    table = "\n".join(["| name | value |", "|---|---|"] +
                      [f"| {k} | {v!r} |" for k, v in sorted(flat.items())])
    self._writer.add_text("hparams", table, global_step=0)

  def flush(self):
    if self._file_writer is not None:
      self._file_writer.close()
      self._file_writer = None

  def close(self):
    self.flush()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info):
    del exc_info
    self.close()


def _scalar(tag: str, value) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"scalar {tag!r} must have exactly one element, got shape {array.shape}")
  return float(array.reshape(()))


def _nhwc_uint8(tag: str, image) -> np.ndarray:
  """Brings an image (batch) to uint8 NHWC; floats are read as [0, 1] and clipped.

  tensorboardX casts floats with `(x * 255).astype(uint8)`, which wraps values just
  outside [0, 1] around to the other end of the range, so conversion happens here.
  """
  image = np.asarray(image)
  if image.ndim == 3:
    image = image[None]
  if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {tag!r} must be HWC or NHWC with 1, 3 or 4 channels, "
                     f"got shape {image.shape}")
  if image.dtype == np.uint8:
    return image
  return np.round(np.clip(image.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _flatten(tree, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}, for dicts and ConfigDicts alike."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      flat.update(_flatten(value, prefix=f"{name}."))
    else:
      flat[name] = value
  return flat


# ---------------------------------------------------------------------------
# Reading event files back (tests only need tags, steps and values).


def _records(path: epath.Path) -> Iterator[bytes]:
  """Yields the payloads of a TFRecord file: u64 length, u32 crc, data, u32 crc.

  A truncated last record (its writer is still running) ends the file quietly;
  a checksum mismatch anywhere else is an error.
  """
  data = path.read_bytes()
  offset = 0
  while offset + 12 <= len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
    if masked_crc32c(header) != header_crc:
      raise ValueError(f"corrupt record header at byte {offset} of {path}")
    end = offset + 12 + length + 4
    if end > len(data):
      return
    payload = data[offset + 12:end - 4]
    if masked_crc32c(payload) != struct.unpack("<I", data[end - 4:end])[0]:
      raise ValueError(f"corrupt record payload at byte {offset} of {path}")
    yield payload
    offset = end


def _events(logdir: str | os.PathLike) -> Iterator[event_pb2.Event]:
  """All events of the event files directly in `logdir` (local or gs://), file by file
  in name order."""
  for path in sorted(epath.Path(logdir).glob(_EVENT_FILE_GLOB)):
    for record in _records(path):
      yield event_pb2.Event.FromString(record)


def read_event_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the scalars written to `logdir`, in write order."""
  scalars = collections.defaultdict(list)
  for event in _events(logdir):
    for value in event.summary.value:
      if value.WhichOneof("value") == "simple_value":
        scalars[value.tag].append((event.step, value.simple_value))
  return dict(scalars)


def read_event_image_tags(logdir: str | os.PathLike) -> set[str]:
  """The tags of the images written to `logdir`."""
  return {value.tag for event in _events(logdir) for value in event.summary.value
          if value.WhichOneof("value") == "image"}


def read_event_texts(logdir: str | os.PathLike) -> dict[str, list[tuple[int, str]]]:
  """{tag: [(step, text), ...]} of the texts (and hparams) written to `logdir`."""
  texts = collections.defaultdict(list)
  for event in _events(logdir):
    for value in event.summary.value:
      if value.tag.endswith(_TEXT_TAG_SUFFIX):
        tag = value.tag[:-len(_TEXT_TAG_SUFFIX)]
        texts[tag].append((event.step, value.tensor.string_val[0].decode("utf-8")))
  return dict(texts)
