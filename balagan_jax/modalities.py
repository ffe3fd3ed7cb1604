"""Stage 1 of BalaGAN: the latent modalities of the source domain (Section 3.1).

The contrastive encoder (`encoder`) is trained on all images of both domains; the
source images are then embedded and clustered with spherical k-means into k
modalities A_1..A_k, and the target domain B becomes class k (imbalanced setting,
`k_target` 1) or is clustered into `k_target` classes of its own (balanced setting,
Appendix A.1). The stage-2 trainer reads the result as a `Modalities`: one label per
record of each domain, in the order of `domains.build_source(config.data.{source,target})`.

Everything lives under the run's workdir:
  encoder/                    the encoder's checkpoints and events (`encoder`)
  modalities/assignment.npz   the labels; its presence marks the stage as done
  modalities/summary.json     k, method and the size of every modality; for clusters of
                              labelled source images also their NMI/ARI/purity against
                              the labels, next to k-means on raw pixels ("quality")
  modalities/clusters.png     one row of `grid_samples` images per modality
  modalities/tensorboard/     the same grid (tag "modalities") and summary
(the last three from `inspection`).

The ablations of Section 4.4 / Appendix A.2 replace the clustering: ground-truth
labels of the source ("labels"), or any assignment read from an .npz file.
"""

import dataclasses
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from balagan_jax import clustering, encoder, inspection
from i2i_jax import files
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import metrics
from i2i_jax.training import hosts

ASSIGNMENT_FILE = "assignment.npz"
_KMEANS_SALT = 2  # folded into config.seed


# ---------------------------------------------------------------------------
# The result, and the data it labels.


@dataclasses.dataclass
class Modalities:
  """Modality labels of every training record: source in [0, k_source), target after.

  `source_labels[i]` is the modality of record i of the source domain's source
  (`domains.build_source(config.data.source)`), `target_labels[j]` that of target
  record j, in [k_source, k_source + k_target). The discriminator has one
  output per modality (`num_modalities`).
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
    for name, labels, lo, hi in (
        ("source", self.source_labels, 0, self.k_source),
        ("target", self.target_labels, self.k_source, self.num_modalities)):
      if len(labels) and (labels.min() < lo or labels.max() >= hi):
        raise ConfigError(f"{name} labels must lie in [{lo}, {hi}), got "
                         f"[{labels.min()}, {labels.max()}]")

  @property
  def num_modalities(self) -> int:
    return self.k_source + self.k_target

  def sizes(self) -> np.ndarray:
    """Number of records of each of the `num_modalities` modalities."""
    return np.bincount(np.concatenate([self.source_labels, self.target_labels]),
                       minlength=self.num_modalities)

  def summary(self, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """k, method and sizes, plus the clusters' `quality` (`clustering_quality`) if given."""
    sizes = self.sizes().tolist()
    summary = {"method": self.method, "k_source": self.k_source, "k_target": self.k_target,
               "num_classes": self.num_modalities, "num_source": int(len(self.source_labels)),
               "num_target": int(len(self.target_labels)),
               "source_sizes": sizes[:self.k_source], "target_sizes": sizes[self.k_source:]}
    return summary if quality is None else {**summary, "quality": quality}

  def save(self, path: str | os.PathLike) -> None:
    """Writes the labels to `path` (.npz), whole or not at all (`files.write_atomic`)."""
    encoded = io.BytesIO()
    np.savez(encoded, source_labels=self.source_labels, target_labels=self.target_labels,
             k_source=self.k_source, k_target=self.k_target, method=self.method)
    files.write_atomic(path, encoded.getvalue())

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Modalities":
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as data:
      return cls(source_labels=data["source_labels"], target_labels=data["target_labels"],
                 k_source=int(data["k_source"]), k_target=int(data["k_target"]),
                 method=str(data["method"]) if "method" in data else "")

  def save_summary(self, path: str | os.PathLike,
                   quality: dict[str, Any] | None = None) -> None:
    files.write_atomic(path, json.dumps(self.summary(quality), indent=2) + "\n")


def assignment_path(workdir: str | os.PathLike) -> epath.Path:
  """Where a run keeps its modalities; the file's presence marks stage 1 as done."""
  return epath.Path(workdir) / "modalities" / ASSIGNMENT_FILE


def training_domain(config, num_modalities: int | None) -> ml_collections.ConfigDict:
  """The source domain's preprocessing, re-sampling `num_modalities` modalities uniformly
  (None: the records as they are, each image equally likely).

  Both domains' modality-labelled records go through it; what defines a domain (its
  data, colorization) lives in its source (`domains.domain_source`), so sizes and
  augmentation are the source domain's. The paper tasks preprocess both domains alike
  anyway.
  """
  domain = ml_collections.ConfigDict(config.data.source.to_dict())
  domain.class_probs = (tuple([1.0 / num_modalities] * num_modalities) if num_modalities
                        else None)
  return domain


def num_training_modalities(config, mods: Modalities) -> int:
  """The translator's modalities: all, or the source's alone if not transductive."""
  return mods.num_modalities if config.transductive else mods.k_source


def _domain_sources(config):
  return (domains.domain_source(config.data.source),
          domains.domain_source(config.data.target))


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


def _from_clusters(config, encoder_variables, domain_sources) -> Modalities:
  embedder = encoder.Embedder(encoder_variables, config)
  num_source, num_target = len(domain_sources[0]), len(domain_sources[1])
  k_source = int(config.modalities.k_source) or clustering.choose_k(num_source, num_target)
  logging.info("Clustering %d source images into %d modalities.", num_source, k_source)
  embeddings = pipeline.map_records(embedder, config.data.source, domain_sources[0],
                                    embedder.chunk, config.seed)
  source_labels = _cluster(config, embeddings, k_source, 0)
  k_target = int(config.modalities.k_target)
  if k_target > 1:
    logging.info("Balanced setting: clustering %d target images into %d modalities.",
                 num_target, k_target)
    embeddings = pipeline.map_records(embedder, config.data.target, domain_sources[1],
                                      embedder.chunk, config.seed)
    target_labels = _cluster(config, embeddings, k_target, 1)
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
  pixels = pipeline.map_records(lambda images: images.reshape(len(images), -1),
                                config.data.source, domain_sources[0],
                                int(config.encoder.batch_size), config.seed)
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
  if not epath.Path(path).exists():
    raise ConfigError(f"config.modalities.assignment {path!r} is neither 'clusters', 'labels' "
                     "nor an existing .npz file")
  with np.load(io.BytesIO(epath.Path(path).read_bytes())) as data:
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
                    os.fspath(files.absolute(path)))


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
  (`clustering_quality`): logged and in summary.json. In a multi-host job process 0
  finds and writes them, and every process returns what it wrote.
  """
  path = assignment_path(workdir)
  domain_sources = _domain_sources(config)
  found = path.exists()
  hosts.barrier("modalities looked up")  # every process has looked before any writes
  if not found:
    _find_and_save(config, workdir, path, domain_sources)
  hosts.barrier("modalities saved")  # process 0 has written them; all read its file
  mods = Modalities.load(path)
  if (len(mods.source_labels), len(mods.target_labels)) != tuple(map(len, domain_sources)):
    raise ConfigError(
        f"{path} labels {len(mods.source_labels)} source and {len(mods.target_labels)} "
        f"target images, but the configured domains have {len(domain_sources[0])} and "
        f"{len(domain_sources[1])}; delete it (or use another workdir) to find modalities anew")
  if found:
    logging.info("Loaded %d + %d modalities (%s) from %s.", mods.k_source, mods.k_target,
                 mods.method, path)
  return mods


def _find_and_save(config, workdir: str, path: epath.Path, domain_sources) -> None:
  """Finds the modalities by `config.modalities.assignment` and saves them to `path`,
  with the inspection files.

  Every process trains the encoder (data parallel); process 0 alone clusters, scores,
  inspects and writes, so that every host trains on one assignment: k-means run on
  each host could differ in the last bit of a similarity, and with it a label.
  """
  method = config.modalities.assignment
  encoder_variables = encoder.train_encoder(config, workdir) if method == "clusters" else None
  if not hosts.is_primary():
    return
  if method == "clusters":
    mods = _from_clusters(config, encoder_variables, domain_sources)
  elif method == "labels":
    mods = _from_labels(config, domain_sources)
  else:
    mods = _from_file(method, domain_sources)
  logging.info("Modalities (%s): sizes %s.", mods.method, mods.sizes().tolist())
  quality = None
  if method == "clusters":
    quality = clustering_quality(config, mods, domain_sources)
    if quality:
      logging.info("Modalities %s.", _describe_quality(quality))
  inspection.write_inspection(config, workdir, mods, domain_sources, quality)
  mods.save(path)
