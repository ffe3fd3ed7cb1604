"""Per-domain grain pipelines: source -> (class re-sampling) -> augment -> float batches.

`make_domain_dataset` turns a domain config (`domains.default_domain_config`) into an
iterator of training batches whose position can be checkpointed with orbax
(`grain.checkpoint.CheckpointSave`); `fixed_batch` gives deterministic samples for
sample grids and evaluation, `records_in_order` every record in record order.
"""

import collections
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from i2i_jax.data import domains, sources, transforms
from i2i_jax.errors import ConfigError

AUGMENTS = ("pad", "sr_mnist", "resize_crop", "none")
# Augments that transform a whole batch at once (`batch_map`), so that a domain held
# in memory is read and augmented a batch at a time.
BATCH_AUGMENTS = ("pad", "sr_mnist", "none")
_PREFETCH_BATCHES = 4  # Enough to hide the data time behind a training step.


def _augment(cfg: ml_collections.ConfigDict, train: bool):
  """The geometric transform of `cfg.augment`, or None for "none"."""
  size = cfg.image_size
  if cfg.augment == "pad":
    return transforms.Pad(size)
  if cfg.augment == "sr_mnist":
    # Evaluation keeps the random geometry: it defines the SR-MNIST domain.
    return transforms.SkewResize(pad=cfg.sr_pad, crop=cfg.sr_crop, out_size=size,
                                 max_angle=cfg.sr_max_angle)
  if cfg.augment == "resize_crop":
    return transforms.ResizeCrop(resize=cfg.resize or size, crop=size, random=train,
                                 flip=cfg.flip and train)
  if cfg.augment == "none":
    return None
  raise ConfigError(f"{domains.describe_domain(cfg)}: unknown augment {cfg.augment!r}; "
                   f"valid: {AUGMENTS}")


def _source(cfg: ml_collections.ConfigDict, seed: int, source=None):
  """The domain's source (or the given one), re-sampled to `cfg.class_probs` if set."""
  source = domains.domain_source(cfg) if source is None else source
  if not len(source):
    raise ConfigError(f"{domains.describe_domain(cfg)} has no records")
  if not cfg.class_probs:
    return source
  labels = sources.source_labels(source)
  if labels is None:
    raise ConfigError(f"{domains.describe_domain(cfg)}: class_probs needs labelled data, but the "
                     "source has no labels")
  return transforms.ClassResampledSource(source, labels, cfg.class_probs, seed=seed)


def _records(cfg: ml_collections.ConfigDict, *, seed: int, train: bool,
             repeat: bool, source=None) -> grain.MapDataset:
  """Shuffled (and repeated) uint8 records of exactly the configured shape.

  Callers batch them and then apply `transforms.ToFloat` once per batch (cheaper
  than per record).

  The augmentation comes after shuffling and repeating, so every epoch sees
  fresh random geometry, and before host sharding, so the global data stream
  does not depend on the number of hosts. One record is computed right away so
  that a misconfigured domain fails here, with a message naming it.
  """
  ds = grain.MapDataset.source(_source(cfg, seed, source)).shuffle(seed=seed)
  if repeat:
    ds = ds.repeat()
  augment = _augment(cfg, train)
  if isinstance(augment, grain.transforms.RandomMap):
    ds = ds.random_map(augment, seed=seed)
  elif augment is not None:
    ds = ds.map(augment)
  shape = (cfg.image_size, cfg.image_size, cfg.channels)
  ds = (ds.map(transforms.ToChannels(cfg.channels))
        .map(transforms.ExpectShape(shape, f"{domains.describe_domain(cfg)} with augment "
                                           f"{cfg.augment!r}")))
  _ = ds[0]  # Fail now, not in a prefetch thread, if the domain is misconfigured.
  return ds


# The domains last held in memory, newest last: both of a method's domains stay
# loaded while its streams, sample batches and evaluation read them.
_IN_MEMORY: collections.OrderedDict[str, sources.ArraySource | None] = (
    collections.OrderedDict())
_IN_MEMORY_DOMAINS = 2


def _in_memory(cfg: ml_collections.ConfigDict) -> sources.ArraySource | None:
  """The domain's images (converted to `cfg.channels`) held in memory, or None where
  it is read record by record (see `cache_mb`)."""
  if cfg.cache_mb <= 0 or cfg.augment not in BATCH_AUGMENTS:
    return None
  key = cfg.to_json_best_effort()
  if key in _IN_MEMORY:
    _IN_MEMORY.move_to_end(key)
  else:
    source = transforms.MappedSource(domains.domain_source(cfg),
                                     transforms.ToChannels(cfg.channels))
    _IN_MEMORY[key] = sources.load_into_memory(source, int(cfg.cache_mb * 2**20),
                                               domains.describe_domain(cfg))
    while len(_IN_MEMORY) > _IN_MEMORY_DOMAINS:
      _IN_MEMORY.popitem(last=False)
  return _IN_MEMORY[key]


def held_in_memory(cfg: ml_collections.ConfigDict) -> bool:
  """Whether the domain's streams read it from memory, a batch at a time (`cache_mb`)."""
  return _in_memory(cfg) is not None


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order in which epoch `epoch` of a stream visits a source of `size` records."""
  return np.random.default_rng([seed % 2**63, epoch]).permutation(size)


def _global_positions(local, batch_size: int, shard_index: int, shard_count: int):
  """Where element(s) `local` of host `shard_index`'s stream sit in the global stream.

  Global batch b is the hosts' batches b one after another, in host order: host i
  reads block i of it. The mesh puts process i's devices at block i
  (`sharding.make_data_mesh`), so the devices see the global batch that one
  process would read.
  """
  batch, offset = np.divmod(local, batch_size)
  return (batch * shard_count + shard_index) * batch_size + offset


@dataclasses.dataclass(frozen=True)
class _HostBlock(grain.transforms.Map):
  """Element j of host `shard_index`'s record stream -> its record of the global one."""

  records: grain.MapDataset
  batch_size: int
  shard_index: int
  shard_count: int

  def map(self, j):
    return self.records[int(_global_positions(j, self.batch_size, self.shard_index,
                                              self.shard_count))]


@dataclasses.dataclass(frozen=True)
class _ReadBatch(grain.transforms.Map):
  """Batch number -> that batch of this host's share of a domain held in memory.

  The global stream visits the records in a fresh random order every epoch; host
  `shard_index` of `shard_count` takes block `shard_index` of each global batch
  (`_global_positions`), as the record-by-record path does. The batch is gathered
  and augmented whole, its random geometry drawn per stream position
  (`transforms.record_uniforms`), so the data depend neither on batching nor on the
  number of hosts. Per-record grain operations (~30 us for a shuffled index alone)
  would cost more than the work.
  """

  source: Any  # an ArraySource, or a ClassResampledSource over one
  augment: Any  # a BATCH_AUGMENTS transform (with `batch_map`), or None
  seed: int
  batch_size: int
  shard_index: int
  shard_count: int
  expect: transforms.ExpectShape

  def map(self, batch_number):
    positions = _global_positions(batch_number * self.batch_size + np.arange(self.batch_size),
                                  self.batch_size, self.shard_index, self.shard_count)
    epochs, offsets = np.divmod(positions, len(self.source))
    indices = np.empty_like(offsets)
    for epoch in np.unique(epochs):
      at = epochs == epoch
      indices[at] = _epoch_order(self.seed, int(epoch), len(self.source))[offsets[at]]
    batch = self.source.read_batch(indices)
    if self.augment is not None:
      uniforms = transforms.record_uniforms(self.seed, positions,
                                            self.augment.uniforms_per_record)
      batch = {**batch, "image": self.augment.batch_map(batch["image"], uniforms)}
    self.expect.map({"image": batch["image"][0]})  # A batch shares one shape.
    return batch


def _batches_in_memory(cfg: ml_collections.ConfigDict, images: sources.ArraySource, *,
                       seed: int, train: bool, repeat: bool, batch_size: int,
                       shard_index: int, shard_count: int) -> grain.MapDataset:
  """uint8 batches of this host's share of a domain held in memory (see `_ReadBatch`);
  without `repeat`, one pass over the records."""
  source = _source(cfg, seed, images)
  if repeat:
    num_batches = sys.maxsize // (batch_size * shard_count) - 1
  else:
    num_batches = len(source) // (batch_size * shard_count)
  shape = (cfg.image_size, cfg.image_size, cfg.channels)
  ds = grain.MapDataset.range(num_batches).map(_ReadBatch(
      source, _augment(cfg, train), seed, batch_size, shard_index, shard_count,
      transforms.ExpectShape(shape, f"{domains.describe_domain(cfg)} with augment "
                                    f"{cfg.augment!r}")))
  if num_batches:
    _ = ds[0]  # Fail now, not in a prefetch thread, if the domain is misconfigured.
  return ds


def _batches(cfg: ml_collections.ConfigDict, *, seed: int, train: bool, repeat: bool,
             batch_size: int, shard_index: int, shard_count: int,
             source=None) -> grain.MapDataset:
  """uint8 batches of this host's share of the domain (or of `source`): gathered
  from memory where the domain is held there (`cache_mb`), else read record by record."""
  images = _in_memory(cfg) if source is None else None
  if images is not None:
    return _batches_in_memory(cfg, images, seed=seed, train=train, repeat=repeat,
                              batch_size=batch_size, shard_index=shard_index,
                              shard_count=shard_count)
  ds = _records(cfg, seed=seed, train=train, repeat=repeat, source=source)
  local = len(ds) // (batch_size * shard_count) * batch_size
  return (grain.MapDataset.range(local)
          .map(_HostBlock(ds, batch_size, shard_index, shard_count))
          .batch(batch_size, drop_remainder=True))


def make_domain_dataset(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                        steps_per_call: int = 1, train: bool = True,
                        shard_index: int | None = None,
                        shard_count: int | None = None, source=None) -> grain.IterDataset:
  """Batches `{"image": float32 (B, S, S, C) in [-1, 1], "label": int32 (B,)}` of a domain.

  Args:
    cfg: a domain config (`default_domain_config`).
    batch_size: the per-host batch size B.
    seed: drives shuffling, re-sampling and augmentation.
    steps_per_call: if > 1, elements stack that many batches, (steps_per_call, B, ...),
      for a jitted step that consumes several batches (JD-BW: d critic steps + 1).
    train: repeat forever and use training augmentation; else one pass, no flips
      and centred crops.
    shard_index, shard_count: this host's share of the stream; default
      jax.process_index() / jax.process_count(). Host i reads block i of every
      global batch of one global stream (`_global_positions`), so together the
      hosts see what one host with the global batch would, in the same order.
    source: read this random-access source instead of building one from `cfg`
      (e.g. BalaGAN's modality-labelled union of both domains); the rest of `cfg`
      (re-sampling, augmentation, shape) still applies.

  Returns:
    A grain IterDataset; its iterators support get_state/set_state and orbax
    checkpointing via grain.checkpoint.CheckpointSave/CheckpointRestore.
  """
  if batch_size < 1 or steps_per_call < 1:
    raise ConfigError(f"batch_size ({batch_size}) and steps_per_call ({steps_per_call}) "
                     "must be positive")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ConfigError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
  ds = _batches(cfg, seed=seed, train=train, repeat=train, batch_size=batch_size,
                shard_index=shard_index, shard_count=shard_count, source=source)
  if steps_per_call > 1:
    ds = ds.batch(steps_per_call, drop_remainder=True)
  ds = ds.map(transforms.ToFloat())
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads(cfg),
                                            prefetch_buffer_size=_PREFETCH_BATCHES))
  workers = num_workers(cfg, in_memory=source is None and held_in_memory(cfg))
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return it


def read_threads(cfg: ml_collections.ConfigDict, backend: str | None = None) -> int:
  """The domain's reading threads; `read_threads = -1` picks them by platform.

  On CPU the training step needs the cores and is far slower than reading: 1 (more
  made a 2-core test run 20% slower). On GPU/TPU hosts 4: decoding and resizing
  release the GIL, so they overlap.
  """
  if cfg.read_threads == -1:
    return 1 if (backend or jax.default_backend()) == "cpu" else 4
  if cfg.read_threads < 1:
    raise ConfigError(f"{domains.describe_domain(cfg)}: read_threads must be >= 1 or -1 (auto), "
                      f"got {cfg.read_threads}")
  return int(cfg.read_threads)


def num_workers(cfg: ml_collections.ConfigDict, backend: str | None = None,
                cpu_count: int | None = None, in_memory: bool = False) -> int:
  """The domain's grain worker processes; `num_workers = -1` picks them by platform.

  On CPU the training step is far slower than reading, and workers would take cores
  from it: none. Domains held in memory (`in_memory`) are read a batch at a time,
  in numpy calls that release the GIL, so read threads suffice: none. Otherwise, on
  a GPU/TPU host a step can need thousands of records (JD-BW reads 2 (d + 1) B per
  step), more than read threads in one Python process deliver: a quarter of the
  host's cores per stream, at most 8 (both methods read two streams).
  """
  if cfg.num_workers == -1:
    if (backend or jax.default_backend()) == "cpu" or in_memory:
      return 0
    return min(8, max(1, (cpu_count or _usable_cpus()) // 4))
  if cfg.num_workers < 0:
    raise ConfigError(f"{domains.describe_domain(cfg)}: num_workers must be >= 0 or -1 (auto), got "
                      f"{cfg.num_workers}")
  return int(cfg.num_workers)


def _usable_cpus() -> int:
  """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def fixed_batch(cfg: ml_collections.ConfigDict, n: int, seed: int = 0,
                source=None) -> dict[str, np.ndarray]:
  """`n` deterministic samples `{"image": float32 (n, S, S, C), "label": int32 (n,)}`.

  Evaluation-mode augmentation (centred crops, no flips), the same for a given
  seed on every call and host; sources smaller than `n` are cycled.
  """
  if n < 1:
    raise ConfigError(f"n must be positive, got {n}")
  batch = _batches(cfg, seed=seed, train=False, repeat=True, batch_size=n, shard_index=0,
                   shard_count=1, source=source)[0]
  return transforms.ToFloat().map(batch)


def without_resampling(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The domain's preprocessing without `class_probs`: records as they are."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.class_probs = None
  return cfg


def records_in_order(cfg: ml_collections.ConfigDict, source, batch_size: int, seed: int,
                     indices: Sequence[int] | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(record indices, images) of every record of `source` (or those at `indices`).

  Reuses the domain pipeline in evaluation mode (centred crops, no flips) over a
  union that labels each record by its own index; the pipeline's shuffling then
  does not matter, and the batch remainder it drops is read in a second pass.
  """
  cfg = without_resampling(cfg)
  indices = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
  remaining = indices
  while len(remaining):
    part = sources.RelabelledUnion([(sources.SubsetSource(source, remaining), remaining)])
    size = min(batch_size, len(remaining))
    seen = []
    for batch in make_domain_dataset(cfg, batch_size=size, seed=seed, train=False,
                                     shard_index=0, shard_count=1, source=part):
      seen.append(batch["label"])
      yield batch["label"].astype(np.int64), batch["image"]
    seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    remaining = np.setdiff1d(remaining, seen)


def load_records(cfg: ml_collections.ConfigDict, source, indices: np.ndarray,
                 seed: int) -> np.ndarray:
  """Images of the records at `indices` (unique), in that order."""
  position = {int(i): p for p, i in enumerate(indices)}
  out = None
  for idx, batch in records_in_order(cfg, source, max(len(indices), 1), seed, indices):
    if out is None:
      out = np.zeros((len(indices), *batch.shape[1:]), batch.dtype)
    out[[position[int(i)] for i in idx]] = batch
  return out


def map_records(fn: Callable[[np.ndarray], np.ndarray], cfg: ml_collections.ConfigDict,
                source, batch_size: int, seed: int) -> np.ndarray:
  """Rows `fn(images)` (B, d) of every record of `source`, in record order (e.g. an
  encoder's embeddings, or the raw pixels)."""
  out = None
  for idx, batch in records_in_order(cfg, source, batch_size, seed):
    rows = fn(batch)
    if out is None:
      out = np.zeros((len(source), rows.shape[-1]), np.float32)
    out[idx] = rows
  return out
