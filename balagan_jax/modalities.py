"""Stage 1 of BalaGAN: the latent modalities of the source domain (Section 3.1).

A contrastive encoder (ResNet-18 + SimCLR projection head, `models.ContrastiveEncoder`)
is trained with NT-Xent on all images of both domains; the source images are then
embedded and clustered with spherical k-means into k modalities A_1..A_k, and the
target domain B becomes class k (imbalanced setting, `k_target` 1) or is clustered
into `k_target` classes of its own (balanced setting, Appendix A.1). The stage-2
trainer reads the result as a `Modalities`: one label per record of each domain, in
the order of `domains.build_source(config.data.{source,target})`.

Everything lives under the run's workdir:
  encoder/checkpoints/   encoder training state + data positions (resumable)
  encoder/tensorboard/   NT-Xent loss, contrastive accuracy, steps/s
  modalities/assignment.npz   the labels; its presence marks the stage as done
  modalities/summary.json     k, method and the size of every modality; for clusters of
                              labelled source images also their NMI/ARI/purity against
                              the labels, next to k-means on raw pixels ("quality")
  modalities/clusters.png     one row of `grid_samples` images per modality
  modalities/tensorboard/     the same grid (tag "modalities") and summary

The ablations of Section 4.4 / Appendix A.2 replace the clustering: ground-truth
labels of the source ("labels"), or any assignment read from an .npz file.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from balagan_jax import augment as augment_lib
from balagan_jax import clustering
from balagan_jax.losses import nt_xent_loss
from balagan_jax.models import ContrastiveEncoder
from i2i_jax import images as images_lib
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.data.prefetch import DevicePrefetcher
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import metrics
from i2i_jax.training import loop, sharding
from i2i_jax.training.checkpoint import Checkpointer
from i2i_jax.training.state import NetState, compute_dtype
from i2i_jax.training.writers import MetricWriter

ASSIGNMENT_FILE = "assignment.npz"
# What spherical k-means clusters: the encoder's h ("representation") or z ("projection").
EMBEDDING_FEATURES = ("representation", "projection")
SUMMARY_FILE = "summary.json"
GRID_FILE = "clusters.png"
_STREAMS = ("encoder_source", "encoder_target")  # checkpoint item names of the streams
_INIT_SALT, _AUGMENT_SALT, _KMEANS_SALT, _GRID_SALT = 0, 1, 2, 3  # folded into config.seed


# ---------------------------------------------------------------------------
# The result.


@dataclasses.dataclass
class Modalities:
  """Modality labels of every training record: source in [0, k_source), target after.

  `source_labels[i]` is the modality of record i of the source domain's source
  (`domains.build_source(config.data.source)`), `target_labels[j]` that of target
  record j, in [k_source, k_source + k_target). The discriminator has `num_classes`
  outputs.
  """

  source_labels: np.ndarray
  target_labels: np.ndarray
  k_source: int
  k_target: int
  method: str = ""  # "clusters", "labels" or the assignment file it came from

  def __post_init__(self):
    self.source_labels = np.asarray(self.source_labels, np.int32).reshape(-1)
    self.target_labels = np.asarray(self.target_labels, np.int32).reshape(-1)
    self.k_source, self.k_target = int(self.k_source), int(self.k_target)
    if self.k_source < 1 or self.k_target < 1:
      raise ConfigError(f"k_source ({self.k_source}) and k_target ({self.k_target}) must be "
                       "positive")
    for name, labels, lo, hi in (("source", self.source_labels, 0, self.k_source),
                                 ("target", self.target_labels, self.k_source, self.num_classes)):
      if len(labels) and (labels.min() < lo or labels.max() >= hi):
        raise ConfigError(f"{name} labels must lie in [{lo}, {hi}), got "
                         f"[{labels.min()}, {labels.max()}]")

  @property
  def num_classes(self) -> int:
    return self.k_source + self.k_target

  def sizes(self) -> np.ndarray:
    """Number of records of each of the `num_classes` modalities."""
    return np.bincount(np.concatenate([self.source_labels, self.target_labels]),
                       minlength=self.num_classes)

  def summary(self, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """k, method and sizes, plus the clusters' `quality` (`clustering_quality`) if given."""
    sizes = self.sizes().tolist()
    summary = {"method": self.method, "k_source": self.k_source, "k_target": self.k_target,
               "num_classes": self.num_classes, "num_source": int(len(self.source_labels)),
               "num_target": int(len(self.target_labels)),
               "source_sizes": sizes[:self.k_source], "target_sizes": sizes[self.k_source:]}
    return summary if quality is None else {**summary, "quality": quality}

  def save(self, path: str | os.PathLike) -> None:
    """Writes the labels to `path` (.npz) atomically: a crash leaves no partial file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
      np.savez(f, source_labels=self.source_labels, target_labels=self.target_labels,
               k_source=self.k_source, k_target=self.k_target, method=self.method)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Modalities":
    with np.load(os.fspath(path)) as data:
      return cls(source_labels=data["source_labels"], target_labels=data["target_labels"],
                 k_source=int(data["k_source"]), k_target=int(data["k_target"]),
                 method=str(data["method"]) if "method" in data else "")

  def save_summary(self, path: str | os.PathLike,
                   quality: dict[str, Any] | None = None) -> None:
    with open(os.fspath(path), "w") as f:
      json.dump(self.summary(quality), f, indent=2)
      f.write("\n")


# ---------------------------------------------------------------------------
# Encoder training (SimCLR with the authors' settings, Appendix A.1).


class EncoderState(struct.PyTreeNode):
  """The encoder's parameters, BatchNorm statistics, Adam state and augmentation key."""

  net: NetState
  rng: jax.Array


def make_encoder(config: ml_collections.ConfigDict) -> ContrastiveEncoder:
  """The encoder of `config.encoder`; ResNet-18 unless an optional `stage_sizes` is set.

  `config.encoder.stage_sizes` (blocks per stage, e.g. (1, 1) for a tiny test encoder)
  is read if present; the paper's encoder is ResNet-18, (2, 2, 2, 2).
  """
  enc = config.encoder
  return ContrastiveEncoder(stem=enc.stem, projection_dim=enc.projection_dim, width=enc.width,
                            stage_sizes=tuple(enc.get("stage_sizes", None) or (2, 2, 2, 2)),
                            dtype=compute_dtype(config.compute_dtype))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with PyTorch's `weight_decay`: wd * param added to the gradient (L2, not AdamW).

  The authors also wrap it in CosineAnnealingLR with T_max = the number of *images*
  stepped once per epoch after epoch 10, which leaves the rate at ~3e-4 in practice;
  the rate is therefore constant here.
  """
  return _optimizer(float(config.encoder.lr), float(config.encoder.weight_decay))


def _optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def _to_rgb(x: jax.Array) -> jax.Array:
  """Grey batches are repeated to RGB: the augmentations and the stem expect 3 channels."""
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


@functools.lru_cache(maxsize=8)
def _train_step_fn(model: ContrastiveEncoder, tx_args: tuple[float, float], temperature: float,
                   names: tuple[str, ...], jitter_strength: float,
                   crop_scale: tuple[float, float], mesh):
  """The jitted step, cached per hyper-parameters so repeated runs reuse its compilation."""
  tx = _optimizer(*tx_args)

  def step(state: EncoderState, batch):
    rng, key_i, key_j = jax.random.split(state.rng, 3)
    images = _to_rgb(batch["image"])
    augment = functools.partial(augment_lib.augment_batch, names=names,
                                jitter_strength=jitter_strength, crop_scale=crop_scale)
    x_i, x_j = augment(key_i, images), augment(key_j, images)

    def loss_fn(params):
      # Two forward passes, as the authors' `calc_nt_xent_loss`: each view's BatchNorm
      # normalises over that view's (global) batch, and the running averages move twice.
      stats = state.net.batch_stats
      (_, z_i), mutated = model.apply({"params": params, "batch_stats": stats}, x_i, train=True,
                                      mutable=["batch_stats"])
      (_, z_j), mutated = model.apply({"params": params, "batch_stats": mutated["batch_stats"]},
                                      x_j, train=True, mutable=["batch_stats"])
      loss = nt_xent_loss(z_i, z_j, temperature)
      return loss, (mutated["batch_stats"], _contrastive_accuracy(z_i, z_j))

    (loss, (stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.net.params)
    net = state.net.apply_gradients(grads, tx, batch_stats=stats)
    return state.replace(net=net, rng=rng), {"loss": loss, "contrastive_accuracy": accuracy}

  repl = sharding.replicated_sharding(mesh)
  return jax.jit(step, out_shardings=(repl, repl), donate_argnums=(0,))


def _contrastive_accuracy(z_i: jax.Array, z_j: jax.Array) -> jax.Array:
  """How often a view's most similar other view is its positive (SimCLR's top-1)."""
  n = z_i.shape[0]
  z = clustering.l2_normalize(jnp.concatenate([z_i, z_j]).astype(jnp.float32))
  sims = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, z @ z.T)
  return jnp.mean(jnp.argmax(sims, axis=-1) == (jnp.arange(2 * n) + n) % (2 * n))


def _check_same_shape(config) -> None:
  src, tgt = config.data.source, config.data.target
  if src.image_size != tgt.image_size or src.channels not in (1, 3) or tgt.channels not in (1, 3):
    raise ConfigError(
        "the modality encoder trains on both domains in one batch, so they need the same "
        f"image_size and 1 or 3 channels; source ({domains.describe_domain(src)}): "
        f"{src.image_size}px x {src.channels}, target ({domains.describe_domain(tgt)}): "
        f"{tgt.image_size}px x {tgt.channels}")


def _split_batch(batch: int, num_source: int, num_target: int) -> tuple[int, int]:
  """Per-host batch shares of A and B, proportional to the domain sizes.

  The authors sample the union A + B uniformly; a fixed proportional share has the
  same expected composition. Each domain gets at least one image per batch.
  """
  if batch < 2:
    raise ConfigError(f"the per-host encoder batch must hold at least 2 images, got {batch}")
  n_target = min(max(round(batch * num_target / (num_source + num_target)), 1), batch - 1)
  return batch - n_target, n_target


def _encoder_streams(config, num_source: int, num_target: int) -> dict[str, Any]:
  """One grain stream per domain (each with its own preprocessing), sized by share."""
  batch = config.encoder.batch_size
  if batch % jax.device_count():
    raise ConfigError(f"config.encoder.batch_size={batch} must be divisible by the number of "
                     f"devices ({jax.device_count()})")
  shares = _split_batch(batch // jax.process_count(), num_source, num_target)
  domains = (config.data.source, config.data.target)
  return {name: iter(pipeline.make_domain_dataset(
              _without_resampling(domain), batch_size=share, seed=config.seed + 100 + i))
          for i, (name, domain, share) in enumerate(zip(_STREAMS, domains, shares))}


def _encoder_batches(streams, mesh) -> DevicePrefetcher:
  """Host batches of both domains, concatenated (grey ones made RGB), sharded and put
  on the devices a step ahead; checkpoints record its `positions`."""

  def put(batch):
    parts = [batch[name]["image"] for name in _STREAMS]
    if any(p.shape[-1] == 1 for p in parts) and any(p.shape[-1] == 3 for p in parts):
      parts = [np.repeat(p, 3, axis=-1) if p.shape[-1] == 1 else p for p in parts]
    return sharding.shard_batch({"image": np.concatenate(parts)}, mesh)

  return DevicePrefetcher(streams, put)


def make_encoder_step(config: ml_collections.ConfigDict, mesh):
  """The jitted contrastive step `(EncoderState, {"image": ...}) -> (state, metrics)`."""
  enc = config.encoder
  return _train_step_fn(make_encoder(config), (float(enc.lr), float(enc.weight_decay)),
                        float(enc.temperature), tuple(enc.augmentations),
                        float(enc.jitter_strength), tuple(enc.crop_scale), mesh)


def init_encoder_state(config, image_shape: tuple[int, int, int]) -> EncoderState:
  key = jax.random.fold_in(jax.random.key(config.seed), _INIT_SALT)
  enc = config.encoder
  return _init_fn(make_encoder(config), (float(enc.lr), float(enc.weight_decay)),
                  tuple(image_shape))(key)


@functools.lru_cache(maxsize=8)
def _init_fn(model: ContrastiveEncoder, tx_args: tuple[float, float],
             image_shape: tuple[int, int, int]):
  @jax.jit
  def init(key):
    init_key, rng = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, *image_shape[:2], 3)), train=False)
    return EncoderState(net=NetState.create(variables, _optimizer(*tx_args)), rng=rng)

  return init


def train_encoder(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the contrastive encoder on all images of A and B; returns its variables.

  NT-Xent between two on-device augmentations (`config.encoder.augmentations`) of
  every image, data-parallel (state replicated, batch sharded over the "data" mesh).
  Checkpoints go to `workdir/encoder/checkpoints`; a re-run with the same workdir
  resumes there, and a finished run (step == num_steps) is only restored.

  Returns:
    {"params", "batch_stats"} of `make_encoder(config)`, as host numpy arrays.
  """
  _check_same_shape(config)
  num_source = len(domains.build_source(config.data.source))
  num_target = len(domains.build_source(config.data.target))
  enc = config.encoder
  image_shape = (config.data.source.image_size, config.data.source.image_size, 3)
  mesh = sharding.make_data_mesh()
  streams = _encoder_streams(config, num_source, num_target)
  encoder_dir = os.path.join(workdir, "encoder")
  checkpointer = Checkpointer(os.path.join(encoder_dir, "checkpoints"),
                              max_to_keep=config.get("max_to_keep", 3),
                              save_interval_steps=enc.checkpoint_every)
  state = init_encoder_state(config, image_shape)
  start_step = 0
  restored = checkpointer.restore(state, streams)
  if restored is not None:
    state, start_step = restored
    logging.info("Modality encoder: resumed from step %d of %d.", start_step, enc.num_steps)
  if start_step >= enc.num_steps:
    checkpointer.close()
    return jax.device_get(state.net.variables)

  logging.info("Modality encoder: training on %d source + %d target images, steps %d -> %d.",
               num_source, num_target, start_step, enc.num_steps)
  state = sharding.replicate(state, mesh)
  step_fn = make_encoder_step(config, mesh)
  writer = MetricWriter(os.path.join(encoder_dir, "tensorboard"))
  if start_step == 0:
    writer.write_hparams({"encoder": enc.to_dict(), "seed": config.seed})

  def on_metrics(step, metrics):
    writer.write_scalars(step, {k: float(v) for k, v in metrics.items()})

  try:
    with _encoder_batches(streams, mesh) as batches:
      state = loop.run(state=state, step_fn=step_fn, batches=batches,
                       start_step=start_step, num_steps=enc.num_steps,
                       checkpointer=checkpointer, data_iterators=batches.positions,
                       on_metrics=on_metrics, log_every=max(int(enc.log_every), 1),
                       writer=writer)
  finally:
    writer.close()
    checkpointer.close()
  return jax.device_get(state.net.variables)


# ---------------------------------------------------------------------------
# Embedding.


class _Embedder:
  """Jitted eval-mode encoder over this host's devices, variables placed once.

  Every host embeds every image itself (local mesh), so all hosts cluster the same
  embeddings without any cross-host traffic.
  """

  def __init__(self, encoder_variables, config):
    self.mesh = sharding.make_data_mesh(jax.local_devices())
    n_dev = self.mesh.devices.size
    self.chunk = -(-max(int(config.encoder.batch_size), 1) // n_dev) * n_dev
    self.variables = jax.device_put(jax.device_get(encoder_variables),
                                    sharding.replicated_sharding(self.mesh))
    features = config.modalities.features
    if features not in EMBEDDING_FEATURES:
      raise ConfigError(f"unknown config.modalities.features {features!r}; expected one of "
                        f"{EMBEDDING_FEATURES}")
    self.apply = _embed_fn(make_encoder(config), features)
    self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(sharding.DATA_AXIS))

  def __call__(self, images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ConfigError(f"expected (N, H, W, 1 or 3) images in [-1, 1], got {images.shape}")
    out = []
    for start in range(0, len(images), self.chunk):
      part = images[start:start + self.chunk]
      n = len(part)
      if n < self.chunk:  # pad to one compiled shape
        part = np.concatenate([part, np.zeros((self.chunk - n, *part.shape[1:]), part.dtype)])
      h = self.apply(self.variables, jax.device_put(part, self._batch_sharding))
      out.append(np.asarray(jax.device_get(h))[:n])
    if not out:
      return np.zeros((0, 0), np.float32)
    return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _embed_fn(model: ContrastiveEncoder, features: str):
  @jax.jit
  def apply(variables, x):
    h, z = model.apply(variables, _to_rgb(x), train=False)
    return clustering.l2_normalize((h if features == "representation" else z).astype(jnp.float32))

  return apply


def embed(encoder_variables, config: ml_collections.ConfigDict, images) -> np.ndarray:
  """L2-normalised embeddings (N, d) of images (N, H, W, C) in [-1, 1].

  By `config.modalities.features`: "representation" is h, the globally pooled
  ResNet-18 feature, which BalaGAN clusters (the authors' `extract_modalities.py`
  keeps the first output of the encoder); "projection" is z, on whose cosine
  similarities NT-Xent trains. The encoder runs in eval mode (BatchNorm running
  averages), batched by `config.encoder.batch_size`.
  """
  return _Embedder(encoder_variables, config)(images)


# ---------------------------------------------------------------------------
# Reading a domain in record order with evaluation preprocessing.


def _without_resampling(domain: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The domain's preprocessing without `class_probs`: records as they are."""
  domain = ml_collections.ConfigDict(domain.to_dict())
  domain.class_probs = None
  return domain


def _eval_batches(domain: ml_collections.ConfigDict, source, batch_size: int, seed: int,
                  indices: Sequence[int] | None = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(record indices, images) of every record of `source` (or those at `indices`).

  Reuses the domain pipeline in evaluation mode (centred crops, no flips) over a
  union that labels each record by its own index; the pipeline's shuffling then
  does not matter, and the batch remainder it drops is read in a second pass.
  """
  domain = _without_resampling(domain)
  indices = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
  remaining = indices
  while len(remaining):
    part = sources.RelabelledUnion([(sources.SubsetSource(source, remaining), remaining)])
    size = min(batch_size, len(remaining))
    seen = []
    for batch in pipeline.make_domain_dataset(domain, batch_size=size, seed=seed,
                                              train=False, shard_index=0, shard_count=1,
                                              source=part):
      seen.append(batch["label"])
      yield batch["label"].astype(np.int64), batch["image"]
    seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    remaining = np.setdiff1d(remaining, seen)


def _load_images(domain, source, indices: np.ndarray, seed: int) -> np.ndarray:
  """Images of the records at `indices` (unique), in that order."""
  position = {int(i): p for p, i in enumerate(indices)}
  out = None
  for idx, batch in _eval_batches(domain, source, max(len(indices), 1), seed, indices):
    if out is None:
      out = np.zeros((len(indices), *batch.shape[1:]), batch.dtype)
    out[[position[int(i)] for i in idx]] = batch
  return out


def embed_domain(embed, config, domain, source, batch_size: int) -> np.ndarray:
  """Rows `embed(images)` (B, d) of every record of `source`, in record order: the
  encoder's embeddings (an `_Embedder`) or the raw pixels (`_flat_pixels`)."""
  out = None
  for idx, batch in _eval_batches(domain, source, batch_size, config.seed):
    h = embed(batch)
    if out is None:
      out = np.zeros((len(source), h.shape[-1]), np.float32)
    out[idx] = h
  return out


def _flat_pixels(images: np.ndarray) -> np.ndarray:
  return images.reshape(len(images), -1)


# ---------------------------------------------------------------------------
# Finding the modalities.


def _cluster(config, embeddings: np.ndarray, k: int, salt: int) -> np.ndarray:
  if not 1 <= k <= len(embeddings):
    raise ConfigError(f"cannot split {len(embeddings)} images into {k} modalities")
  key = jax.random.fold_in(jax.random.key(config.seed), _KMEANS_SALT * 1000 + salt)
  _, assignments = clustering.spherical_kmeans(
      key, jnp.asarray(embeddings), k, num_iters=int(config.modalities.kmeans_iters),
      num_restarts=int(config.modalities.kmeans_restarts))
  return np.asarray(jax.device_get(assignments), np.int32)


def _renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
  """Labels mapped to 0..n-1 in sorted order (classes without records are dropped)."""
  values, labels = np.unique(np.asarray(labels), return_inverse=True)
  return labels.astype(np.int32), len(values)


def _from_clusters(config, workdir, domain_sources) -> Modalities:
  variables = train_encoder(config, workdir)
  embedder = _Embedder(variables, config)
  num_source, num_target = len(domain_sources[0]), len(domain_sources[1])
  k_source = int(config.modalities.k_source) or clustering.choose_k(num_source, num_target)
  logging.info("Clustering %d source images into %d modalities.", num_source, k_source)
  source_labels = _cluster(config, embed_domain(embedder, config, config.data.source,
                                                domain_sources[0], embedder.chunk), k_source, 0)
  k_target = int(config.modalities.k_target)
  if k_target > 1:
    logging.info("Balanced setting: clustering %d target images into %d modalities.",
                 num_target, k_target)
    target_labels = _cluster(config, embed_domain(embedder, config, config.data.target,
                                                  domain_sources[1], embedder.chunk), k_target, 1)
  else:
    target_labels = np.zeros(num_target, np.int32)
  return Modalities(source_labels, target_labels + k_source, k_source, k_target, "clusters")


def clustering_quality(config, mods: Modalities, domain_sources) -> dict[str, Any] | None:
  """NMI, ARI and purity of the source modalities against the source's labels, and of
  the same k-means on raw pixels; None unless the labels name two classes or more.

  The baseline (same k, iterations, restarts and key, on the flattened images the
  encoder reads) shows what the contrastive representation adds. Both are scored on
  the labelled images (label >= 0); all images are clustered.
  """
  labels = sources.source_labels(domain_sources[0])
  if labels is None:
    return None
  labelled = np.flatnonzero(labels >= 0)
  truth = labels[labelled]
  num_classes = len(np.unique(truth))
  if num_classes < 2:  # e.g. CelebA's women, all of label 0: nothing to score
    return None
  pixels = embed_domain(_flat_pixels, config, config.data.source, domain_sources[0],
                        int(config.encoder.batch_size))
  raw_labels = _cluster(config, pixels, mods.k_source, 0)
  return {"labels": {"num_images": int(len(labelled)), "num_classes": num_classes},
          "learned": metrics.clustering_scores(mods.source_labels[labelled], truth),
          "raw_pixels": metrics.clustering_scores(raw_labels[labelled], truth)}


def _describe_quality(quality: dict[str, Any]) -> str:
  """The `clustering_quality` block as one line for the log."""
  learned, raw = (f"NMI {q['nmi']:.3f} ARI {q['ari']:.3f} purity {q['purity']:.3f}"
                  for q in (quality["learned"], quality["raw_pixels"]))
  return (f"vs the source's labels ({quality['labels']['num_images']} images, "
          f"{quality['labels']['num_classes']} classes): {learned}; k-means on raw pixels: {raw}")


def _ground_truth(domain, source, role: str) -> np.ndarray:
  labels = sources.source_labels(source)
  if labels is None or (labels < 0).any():
    raise ConfigError(f'config.modalities.assignment="labels" needs labelled images, but the '
                     f"{role} domain ({domains.describe_domain(domain)}) has none "
                     f"(label_key={domain.label_key!r})")
  return labels


def _from_labels(config, domain_sources) -> Modalities:
  source_labels, k_source = _renumber(_ground_truth(config.data.source, domain_sources[0],
                                                    "source"))
  if int(config.modalities.k_target) > 1:
    target_labels, k_target = _renumber(_ground_truth(config.data.target, domain_sources[1],
                                                      "target"))
  else:
    target_labels, k_target = np.zeros(len(domain_sources[1]), np.int32), 1
  return Modalities(source_labels, target_labels + k_source, k_source, k_target, "labels")


def _from_file(path: str, domain_sources) -> Modalities:
  """Labels from an .npz with "source" (and optionally "target") arrays, renumbered."""
  if not os.path.exists(path):
    raise ConfigError(f"config.modalities.assignment {path!r} is neither 'clusters', 'labels' "
                     "nor an existing .npz file")
  with np.load(path) as data:
    if "source" not in data:
      raise ConfigError(f"assignment file {path} has no 'source' array (it has "
                       f"{sorted(data.keys())})")
    arrays = {name: np.asarray(data[name]).reshape(-1) for name in ("source", "target")
              if name in data}
  for (name, labels), source in zip(arrays.items(), domain_sources):
    if len(labels) != len(source):
      raise ConfigError(f"assignment file {path}: its {name!r} array has {len(labels)} labels "
                       f"but the {name} domain has {len(source)} images")
    if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
      raise ConfigError(f"assignment file {path}: {name!r} labels must be non-negative integers")
  source_labels, k_source = _renumber(arrays["source"])
  if "target" in arrays:
    target_labels, k_target = _renumber(arrays["target"])
  else:
    target_labels, k_target = np.zeros(len(domain_sources[1]), np.int32), 1
  return Modalities(source_labels, target_labels + k_source, k_source, k_target,
                    os.path.abspath(path))


def _grid_rows(config, mods: Modalities, domain_sources) -> list[np.ndarray]:
  """Up to `grid_samples` random images of each modality, one row per modality.

  A modality without images (possible only for assignment files) gets an empty row,
  so row c always shows modality c.
  """
  rng = np.random.default_rng([config.seed, _GRID_SALT])
  n = max(int(config.modalities.grid_samples), 1)
  chosen = [rng.permutation(np.flatnonzero(
                (mods.source_labels if c < mods.k_source else mods.target_labels) == c))[:n]
            for c in range(mods.num_classes)]
  rows = []
  for domain, source, classes in ((config.data.source, domain_sources[0], range(mods.k_source)),
                                  (config.data.target, domain_sources[1],
                                   range(mods.k_source, mods.num_classes))):
    wanted = np.unique(np.concatenate([chosen[c] for c in classes]))
    loaded = _load_images(domain, source, wanted, config.seed)  # every domain has images
    rows.extend(loaded[np.searchsorted(wanted, chosen[c])] for c in classes)
  return rows


def write_inspection(config, workdir: str, mods: Modalities, domain_sources=None,
                     quality: dict[str, Any] | None = None) -> None:
  """clusters.png (row c = samples of modality c) + summary.json (with `quality`, see
  `clustering_quality`, where given) + the grid and summary in TensorBoard."""
  if jax.process_index() != 0:
    return
  domain_sources = domain_sources or _domain_sources(config)
  out_dir = os.path.join(workdir, "modalities")
  os.makedirs(out_dir, exist_ok=True)
  mods.save_summary(os.path.join(out_dir, SUMMARY_FILE), quality)
  rows = _grid_rows(config, mods, domain_sources)
  if len({r.shape[1:3] for r in rows}) == 1:
    grids = {"modalities": images_lib.make_grid(rows)}
  else:  # domains of different sizes (possible without the encoder): one grid each
    logging.warning("Source and target images differ in size; writing one grid per domain.")
    grids = {"modalities": images_lib.make_grid(rows[:mods.k_source]),
             "modalities_target": images_lib.make_grid(rows[mods.k_source:])}
  for tag, grid in grids.items():
    name = GRID_FILE if tag == "modalities" else GRID_FILE.replace(".png", "_target.png")
    images_lib.save_png(os.path.join(out_dir, name), grid)
  # Its own event directory: tensorboardX names event files by the second, so a writer
  # opened on the same directory within that second (stage 2's) would replace this file.
  with MetricWriter(os.path.join(out_dir, "tensorboard")) as writer:
    writer.write_images(0, grids)
    writer.write_texts(0, {"modalities/summary": json.dumps(mods.summary(quality))})


def _domain_sources(config):
  return (domains.domain_source(config.data.source),
          domains.domain_source(config.data.target))


def find_modalities(config: ml_collections.ConfigDict, workdir: str) -> Modalities:
  """The modalities of the run in `workdir`: loaded if already found, else found now.

  By `config.modalities.assignment`:
    "clusters": train (or restore) the contrastive encoder, embed every source image
      (evaluation preprocessing), spherical k-means with k = `k_source` or, if 0, the
      paper's smallest k with |B| >= |A| / k; the target is one class (`k_target` 1)
      or clustered into `k_target` (balanced setting).
    "labels": the source's ground-truth labels (renumbered 0..k-1); with `k_target` > 1
      the target's own labels too.
    a path: an .npz with "source" (and optionally "target") label arrays, one per record.
  The labels are saved to `workdir/modalities/assignment.npz` (written last: its
  presence means done), with summary.json and the clusters.png inspection grid. Clusters
  of a labelled source are scored against its labels, next to k-means on raw pixels
  (`clustering_quality`): logged and in summary.json.
  """
  path = os.path.join(workdir, "modalities", ASSIGNMENT_FILE)
  domain_sources = _domain_sources(config)
  if os.path.exists(path):
    mods = Modalities.load(path)
    if (len(mods.source_labels), len(mods.target_labels)) != tuple(map(len, domain_sources)):
      raise ConfigError(
          f"{path} labels {len(mods.source_labels)} source and {len(mods.target_labels)} "
          f"target images, but the configured domains have {len(domain_sources[0])} and "
          f"{len(domain_sources[1])}; delete it (or use another workdir) to find modalities anew")
    logging.info("Loaded %d + %d modalities (%s) from %s.", mods.k_source, mods.k_target,
                 mods.method, path)
    return mods
  method = config.modalities.assignment
  if method == "clusters":
    mods = _from_clusters(config, workdir, domain_sources)
  elif method == "labels":
    mods = _from_labels(config, domain_sources)
  else:
    mods = _from_file(method, domain_sources)
  logging.info("Modalities (%s): sizes %s.", mods.method, mods.sizes().tolist())
  quality = None
  if method == "clusters" and jax.process_index() == 0:
    quality = clustering_quality(config, mods, domain_sources)
    if quality:
      logging.info("Modalities %s.", _describe_quality(quality))
  write_inspection(config, workdir, mods, domain_sources, quality)
  if jax.process_index() == 0:
    mods.save(path)
  return mods
